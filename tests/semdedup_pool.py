"""A generated SemDeDup pool with planted near-duplicates, as record batches, for the semantic kind's tests.

Rows around a few cluster directions, then planted: exact copies (equal scores, so ties),
near copies at cosines on both sides of 1 - eps (some within 1e-9 of it), and chains of
copies (a copy of a copy). Embeddings are float32, as the reader attaches them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

EPS = 0.01
COLUMN = "__embedding.img"


def _unit(v):
    return v / np.linalg.norm(v)


def planted_pool(seed: int, n_base: int = 300, d: int = 16, k: int = 6):
    """(x float32 n x d, keys, files, rows, centroids k x d float64) with planted near-duplicates."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(k, d)) * 2.0
    rows = list(directions[rng.integers(0, k, n_base)] + rng.normal(size=(n_base, d)))
    for i in rng.choice(n_base, 25, replace=False):  # exact copies, some twice
        rows += [rows[i]] * int(rng.integers(1, 3))
    for i in rng.choice(n_base, 40, replace=False):  # near copies at several distances
        rows.append(
            rows[i] + rng.choice([1e-3, 1e-2, 0.05, 0.15, 0.3]) * np.linalg.norm(rows[i]) * _unit(rng.normal(size=d))
        )
    for i in rng.choice(n_base, 10, replace=False):  # a chain: copy of a near copy
        near = rows[i] + 0.05 * np.linalg.norm(rows[i]) * _unit(rng.normal(size=d))
        rows += [near, near + 0.05 * np.linalg.norm(near) * _unit(rng.normal(size=d))]
    for delta in (-3e-6, -1e-7, 1e-7, 3e-6):  # cosine 1 - EPS + delta to an existing row
        base = _unit(rows[int(rng.integers(n_base))])
        z = _unit(rng.normal(size=d))
        z = _unit(z - (z @ base) * base)
        c = 1 - EPS + delta
        rows.append(c * base + np.sqrt(1 - c * c) * z)
    x = np.array(rows)[rng.permutation(len(rows))].astype(np.float32)
    n = len(x)
    keys = [f"s{seed}-{i:05d}" for i in range(n)]
    files = np.arange(n) // 97
    positions = np.arange(n) % 97
    return x, keys, files, positions, directions


def batches_of(x, keys, files, rows, batch_rows: int, order=None) -> list[pa.RecordBatch]:
    """Record batches of `batch_rows` records (in `order`, default input order), as the reader makes them."""
    order = np.arange(len(x)) if order is None else np.asarray(order)
    out = []
    for start in range(0, len(order), batch_rows):
        take = order[start : start + batch_rows]
        out.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array([keys[i] for i in take]),
                    pa.array([f"caption {keys[i]}" for i in take]),
                    pa.array(np.asarray(files)[take].astype(np.int32)),
                    pa.array(np.asarray(rows)[take].astype(np.int64)),
                    pa.FixedSizeListArray.from_arrays(pa.array(x[take].reshape(-1)), x.shape[1]),
                ],
                names=["key", "text", "__source_file", "__source_row", COLUMN],
            )
        )
    return out
