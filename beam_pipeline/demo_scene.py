"""The demo's second scene: a small DataComp-style pool run through the whole chain.

    write_scene(directory) -> Scene

writes a pool as DataComp ships one (parquet shards of uid, url, text and scores, each with
an .npz of CLIP L/14 image and text embeddings beside it), a metadata list and the class
embeddings a covariance selection needs, all seeded. `scene_flags` are the curation's flags
for it: a --where on the aesthetic score, DataComp's CLIP-score filter, MetaCLIP balancing
and the covariance selection, so that every kind of stage has records to take.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class Scene(NamedTuple):
    pool: Path  # the parquet shards (and their .npz)
    metadata: Path
    class_embeddings: Path
    records: int


def write_scene(
    directory: Path, words: list[str], records: int = 6000, shards: int = 3, dim: int = 32, seed: int = 11
) -> Scene:
    """Write the scene under `directory` (pool/, metadata.json, classes.npy); its captions name `words`,
    the first most often (a Zipf law), and the metadata lists them."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, len(words) + 1, dtype=np.float64) ** -1.3  # a Zipf head: MetaCLIP has work
    picks = rng.choice(len(words), size=(records, 2), p=weights / weights.sum())
    texts = [f"a photo of {words[a]} with {words[b]}" for a, b in picks]
    classes = 6
    directions = rng.normal(size=(classes, dim))
    image = directions[rng.integers(0, classes, size=records)] + 0.6 * rng.normal(size=(records, dim))
    caption = image + 0.5 * rng.normal(size=(records, dim))
    cosine = np.sum(image * caption, axis=1) / np.linalg.norm(image, axis=1) / np.linalg.norm(caption, axis=1)
    uids = [f"{int(value):032x}" for value in rng.integers(0, 2**62, size=records)]
    directory.mkdir(parents=True, exist_ok=True)
    pool = directory / "pool"
    pool.mkdir(exist_ok=True)
    for shard, rows in enumerate(np.array_split(np.arange(records), shards)):
        table = pa.table(
            {
                "uid": [uids[i] for i in rows],
                "url": [f"https://img.example/{uids[i]}.jpg" for i in rows],
                "text": [texts[i] for i in rows],
                "clip_l14_similarity_score": (0.32 * cosine[rows]).astype(np.float32),  # a score like DataComp's
                "aesthetic": np.round(rng.uniform(2.0, 9.0, size=len(rows)), 2),
            }
        )
        path = pool / f"{shard:08d}.parquet"
        pq.write_table(table, path)
        np.savez(
            path.with_suffix(".npz"), l14_img=image[rows].astype(np.float32), l14_txt=caption[rows].astype(np.float32)
        )
    metadata = directory / "metadata.json"
    metadata.write_text(json.dumps(words))
    class_embeddings = directory / "classes.npy"
    np.save(class_embeddings, (directions + 0.05 * rng.normal(size=directions.shape)).astype(np.float32))
    return Scene(pool, metadata, class_embeddings, records)


def scene_flags(scene: Scene, output_dir: Path) -> list[str]:
    """The curation of the scene: where, filter, balance, select."""
    return [
        "--input", str(scene.pool / "*.parquet"), "--input_preset", "datacomp",
        "--where", "aesthetic > 3.5",
        "--filter", "clip_score", "--clip_score_fraction", "0.7",
        "--metadata", str(scene.metadata), "--threshold", "150",
        "--select", "covariance", "--select_fraction", "0.5", "--class_embeddings", str(scene.class_embeddings),
        "--output_dir", str(output_dir), "--overwrite",
    ]  # fmt: skip
