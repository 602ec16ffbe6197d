"""DataComp-style pools for the selection's scale figures, written shard by shard.

    python -m benchmarks.make_selection_pool --rows 1000000 --classes 100 --out /tmp/pool1m

The shape of tests/covariance_pool.py (planted class directions, 15% misaligned captions,
`uid`/`url`/`text` parquet with float16 `l14_img`/`l14_txt` in a same-named npz, a
`classes.npy` of noisy class directions), but generated one shard at a time so that a pool
of millions of rows never sits in memory: row r of shard s depends on the seed and s only.
25,000 rows a shard by default (the issue's 200k pool had 8 shards).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_selection_pool(
    directory: Path,
    rows: int,
    classes: int,
    dim: int = 768,
    rows_per_shard: int = 25_000,
    misaligned: float = 0.15,
    seed: int = 0,
) -> Path:
    """Write the pool under `directory`; returns the class embeddings' path."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, dim))
    np.save(directory / "classes.npy", (directions + 0.05 * rng.normal(size=directions.shape)).astype(np.float32))
    for shard in range(math.ceil(rows / rows_per_shard)):
        n = min(rows_per_shard, rows - shard * rows_per_shard)
        shard_rng = np.random.default_rng([seed, shard])
        members = shard_rng.integers(0, classes, size=n)
        x = directions[members] + 0.6 * shard_rng.normal(size=(n, dim))
        y = x + 0.5 * shard_rng.normal(size=(n, dim))
        wrong = shard_rng.random(n) < misaligned
        scale = np.linalg.norm(y[wrong], axis=1, keepdims=True) / np.sqrt(dim)
        y[wrong] = shard_rng.normal(size=(int(wrong.sum()), dim)) * scale
        keys = [f"{int(v):032x}" for v in shard_rng.integers(0, 2**62, size=n)]
        path = directory / f"{shard:08d}.parquet"
        table = pa.table(
            {
                "uid": keys,
                "url": [f"https://img.example/{k}.jpg" for k in keys],
                "text": [f"a photo number {shard * rows_per_shard + i}" for i in range(n)],
            }
        )
        pq.write_table(table, path, row_group_size=4096)
        np.savez(path.with_suffix(".npz"), l14_img=x.astype(np.float16), l14_txt=y.astype(np.float16))
    return directory / "classes.npy"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rows_per_shard", type=int, default=25_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_selection_pool(args.out, args.rows, args.classes, args.dim, args.rows_per_shard, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
