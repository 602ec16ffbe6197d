"""Which samples of its input shards a curation kept, as a lookup for training on those shards.

No Beam import, no webdataset import: `KeptKeys.read(OUTPUT_DIR)` reads
`webdataset/shards.json` and its kept-keys files; `wds.select(kept)` then passes exactly
the kept samples of the original shards:

    kept = KeptKeys.read("curated/")
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.select(kept), ...)

A sample is found by its shard's URL (`__url__`) and its `__key__`. The URL may differ from
the path the curation read (another mount, a copy): a shard is matched by its path below
the folder all input shards share (`transforms.formats.layout.key_root`), never by base name
alone, since two input folders may hold shards of the same name. Key files hold one key a
line, as written (keys may hold spaces).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from transforms.formats.layout import key_root


class KeptKeys:
    """shard path (as the curation read it) -> the `__key__`s it kept; callable on a webdataset sample."""

    def __init__(self, kept: Mapping[str, frozenset]):
        self._kept = dict(kept)
        root = key_root(list(self._kept))
        # Longest first: a URL ending in "a/x/0.tar" is that shard, not "x/0.tar".
        self._by_tail = sorted(((path[len(root) :], path) for path in self._kept), key=lambda item: -len(item[0]))
        self._resolved: dict[str, str] = {}

    @classmethod
    def read(cls, output_dir: str) -> "KeptKeys":
        """From a finished curation's local output directory (its webdataset/ hand-off)."""
        folder = Path(output_dir) / "webdataset"
        index = json.loads((folder / "shards.json").read_text(encoding="utf-8"))
        return cls({shard["shard"]: _read_keys(folder / shard["keys_file"]) for shard in index["shards"]})

    def shard(self, url: str) -> str:
        """The input shard (as the curation read it) that `url` names; KeyError if none."""
        if url in self._kept:
            return url
        if url not in self._resolved:
            for tail, path in self._by_tail:
                if url == tail or url.endswith("/" + tail):
                    self._resolved[url] = path
                    break
            else:
                raise KeyError(
                    f"{url} is not one of the curation's {len(self._kept)} input shards (webdataset/shards.json)"
                )
        return self._resolved[url]

    def keys(self, url: str) -> frozenset:
        """The kept `__key__`s of the shard `url` names."""
        return self._kept[self.shard(url)]

    def keeps(self, url: str, key: str) -> bool:
        return key in self.keys(url)

    def __call__(self, sample: Mapping) -> bool:
        """For `wds.select`: whether the curation kept this sample of its input shard."""
        return self.keeps(sample["__url__"], sample["__key__"])


def _read_keys(path: Path) -> frozenset:
    """One key a line, every character kept but the line end (the writer's surrogateescape undone)."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return frozenset(text.split("\n")[:-1])
