"""A COCO-style pool from real captions: several captions per image URL (1 to 7, mostly 5).

Captions are ../shared/data's 10k real LAION alt-texts (tests skip with the reason when it
is absent); consecutive captions are grouped into images, each image a URL of its own
(spelled differently across its records where the url key makes them one: `www.`, a
tracking query, a trailing slash). The metadata: the pool's most frequent words, so many
captions match and the head entries are sampled.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from helpers import shared_file

SPELLINGS = ("http://img.example/{i}.jpg", "https://www.img.example/{i}.jpg", "http://img.example/{i}.jpg?utm_x=1",
             "https://img.example/{i}.jpg/")  # fmt: skip


def coco_records(limit: int = 10_000, seed: int = 5) -> list[dict]:
    """Records (key, text, url) grouping the real captions into images of 1..7 captions."""
    texts = pq.read_table(shared_file("data", "laion400m_sample_10k.parquet")).column("TEXT").to_pylist()[:limit]
    texts = [t for t in texts if t and t.strip()]
    rng = np.random.default_rng(seed)
    records, image, i = [], 0, 0
    while i < len(texts):
        size = int(rng.choice([1, 2, 3, 5, 5, 5, 5, 6, 7]))
        for j, text in enumerate(texts[i : i + size]):
            url = SPELLINGS[int(rng.integers(len(SPELLINGS)))].format(i=image)
            records.append({"key": f"img{image:05d}-{j}", "text": text, "url": url})
        i += size
        image += 1
    # One record without a url: an image of its own.
    records[3]["url"] = None
    return records


def coco_metadata(records: list[dict], entries: int = 300) -> list[str]:
    words = Counter(w for r in records for w in set(r["text"].lower().split()) if w.isalpha() and len(w) > 2)
    return [w for w, _ in words.most_common(entries)]


def write_coco_pool(root: Path, records: list[dict], files: int = 3) -> tuple[Path, Path]:
    """The records as `files` parquet shards (contiguous rows), and the metadata JSON."""
    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(records), files + 1).astype(int)
    for f in range(files):
        part = records[bounds[f] : bounds[f + 1]]
        table = pa.table({name: [r[name] for r in part] for name in ("key", "text", "url")})
        pq.write_table(table, root / f"part{f:03d}.parquet")
    metadata = root.parent / f"{root.name}-metadata.json"
    metadata.write_text(json.dumps(coco_metadata(records)))
    return root, metadata


def write_coco_webdataset(root: Path, records: list[dict], files: int = 2) -> Path:
    """The records as webdataset shards: `.jpg` (a few bytes), `.txt` (the caption) and `.json`
    (`url`, and `rewrites`: two made-up extra texts, a list field)."""
    import io
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(records), files + 1).astype(int)
    for f in range(files):
        with tarfile.open(root / f"{f:06d}.tar", "w") as tar:
            for r in records[bounds[f] : bounds[f + 1]]:
                meta = {"url": r["url"], "rewrites": [f"a photo: {r['text'][:40]}", f"rewritten {r['key']}"]}
                for ext, data in (("jpg", b"\xff\xd8\xff" + r["key"].encode()), ("txt", r["text"].encode()),
                                  ("json", json.dumps(meta).encode())):  # fmt: skip
                    info = tarfile.TarInfo(f"{r['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root
