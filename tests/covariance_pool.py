"""Small DataComp-style pools with planted pseudo-classes, for the selection stage's tests.

Parquet shards (`uid`, `url`, `text`) with an `.npz` beside each (`l14_img`, `l14_txt`),
like DataComp's, and the class text embeddings (`classes.npy`). Each record belongs to
one of `classes` planted directions; its caption embedding is the image embedding plus
noise, and a share of captions is random (misaligned pairs), so the
cross-covariance has structure worth preserving. Deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class CovariancePool:
    directory: Path
    parquet_paths: list
    class_embeddings_path: Path
    keys: list  # every uid, in file order
    x: np.ndarray  # image embeddings as stored (float32), in file order
    y: np.ndarray  # caption embeddings as stored
    class_embeddings: np.ndarray


def write_covariance_pool(
    directory: Path,
    *,
    rows: int = 2400,
    shards: int = 3,
    dim: int = 24,
    classes: int = 5,
    misaligned: float = 0.15,
    seed: int = 0,
    order: np.ndarray | None = None,
    dtype: str = "float32",
) -> CovariancePool:
    """Write the pool; `order` permutes the rows (the same records, in another order and split)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, dim))
    members = rng.integers(0, classes, size=rows)
    x = directions[members] + 0.6 * rng.normal(size=(rows, dim))
    y = x + 0.5 * rng.normal(size=(rows, dim))
    wrong = rng.random(rows) < misaligned
    y[wrong] = rng.normal(size=(int(wrong.sum()), dim)) * np.linalg.norm(y[wrong], axis=1, keepdims=True) / np.sqrt(dim)
    keys = [f"{k:0>32}"[-32:] for k in (f"{int(v):x}" for v in rng.integers(0, 2**62, size=rows))]
    x, y = x.astype(dtype), y.astype(dtype)
    if order is not None:
        keys, x, y = [keys[i] for i in order], x[order], y[order]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, rows_of_shard in enumerate(np.array_split(np.arange(len(keys)), shards)):
        path = directory / f"{shard:08d}.parquet"
        table = pa.table(
            {
                "uid": [keys[i] for i in rows_of_shard],
                "url": [f"https://img.example/{keys[i]}.jpg" for i in rows_of_shard],
                "text": [f"a photo number {i}" for i in rows_of_shard],
            }
        )
        pq.write_table(table, path, row_group_size=300)
        np.savez(path.with_suffix(".npz"), l14_img=x[rows_of_shard], l14_txt=y[rows_of_shard])
        paths.append(path)
    class_embeddings = (directions + 0.05 * rng.normal(size=directions.shape)).astype(np.float32)
    class_path = directory / "classes.npy"
    np.save(class_path, class_embeddings)
    return CovariancePool(directory, paths, class_path, keys, x, y, class_embeddings)
