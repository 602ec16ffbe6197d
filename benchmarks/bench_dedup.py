"""SemDeDup's pure kernels: assignment speed against bare numpy, the pairwise rule per cluster size,
and what the large-cluster split misses.

    python -m benchmarks.bench_dedup [--rows 100000] [--dim 768] [--clusters 1000]
        [--sizes 1000,4000,16000] [--split_pool 12000] [--out FILE]

(a) Assignment. Random unit rows (float64, as the stage holds them after
`normalise_embeddings`) in batches of 4,096 against K unit centroids: `assign_clusters`
(the image filter's float32 kernel, its float64 recheck, and the float64 similarity to the
chosen centroid) against the bare numpy `(x32 @ c32.T).argmax(1)` on the same batches, the
float32 cast included, measured alternately in the same run: records/s of each and the ratio.
(b) Pairwise. `earlier_maxima` on one cluster of n rows at dimension d (points around a
centroid at the cosine spread of a real cluster, a tenth of them near copies): seconds,
and for n up to 8,000 the bare float32 `np.triu(X @ X.T, 1).max(0)` (the n x n matrix the
blocked rule avoids) on the same rows.
(c) Split. A cluster of `--split_pool` rows with planted near-copy groups of sizes 2..6,
deduplicated whole and split into P = 2, 4, 8 parts (`max_cluster_size = ceil(n / P)`): the
duplicates the split keeps (it never adds one) and the fraction of the whole rule's
duplicates it misses, beside 1 - 1/P, the miss rate of a lone pair.

(d) Exact keys. Records/s of `url_keys`, `text_keys` and `exact.candidates` on `--rows`
generated URLs and captions (one core, Python's `re` and `str`), for the exact kinds' share
of a run.

Same-run ratios only; no wall-clock assertion. The machine is shared: times are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pyarrow as pa

from transforms.dedup.exact import candidates
from transforms.dedup.keys import text_keys, url_keys
from transforms.dedup.pairwise import earlier_maxima
from transforms.dedup.semdedup import (
    assign_clusters,
    deduplicate_cluster,
    order_bits,
    prepare_centroids,
)

BATCH = 4096


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def assignment(rows: int, d: int, k: int, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(rows, d)).astype(np.float64))
    cents = prepare_centroids(rng.normal(size=(k, d)))
    c32 = cents.as_float32
    usable = np.ones(rows, dtype=bool)
    ours, bare = [], []
    for _ in range(repeats):  # batch by batch, alternately: both see the same phases of a shared machine
        t_ours = t_bare = 0.0
        for s in range(0, rows, BATCH):
            t = time.perf_counter()
            assign_clusters(x[s : s + BATCH], cents, usable[s : s + BATCH])
            t_ours += time.perf_counter() - t
            t = time.perf_counter()
            (x[s : s + BATCH].astype(np.float32) @ c32.T).argmax(axis=1)
            t_bare += time.perf_counter() - t
        ours.append(t_ours)
        bare.append(t_bare)
    agree = np.mean(assign_clusters(x[:BATCH], cents)[0] == (x[:BATCH].astype(np.float32) @ c32.T).argmax(1))
    return {
        "rows": rows, "dim": d, "clusters": k,
        "ours_s": min(ours), "bare_s": min(bare),
        "ours_rows_per_s": rows / min(ours), "bare_rows_per_s": rows / min(bare),
        "ratio_ours_to_bare": min(bare) / min(ours), "float32_argmax_agrees": float(agree),
    }  # fmt: skip


def cluster_rows(rng, n: int, d: int) -> np.ndarray:
    centre = _unit(rng.normal(size=d))
    x = _unit(centre + 0.9 * rng.normal(size=(n, d)) / math.sqrt(d))  # cosine to centre ~0.75
    copies = rng.choice(n, n // 10, replace=False)
    x[copies] = _unit(x[rng.integers(n, size=len(copies))] + 0.05 * rng.normal(size=(len(copies), d)) / math.sqrt(d))
    return x


def pairwise(n: int, d: int, bare_up_to: int = 8000) -> dict:
    x = cluster_rows(np.random.default_rng(n), n, d)
    t = time.perf_counter()
    score, _ = earlier_maxima(x)
    ours = time.perf_counter() - t
    out = {
        "n": n,
        "dim": d,
        "blocked_s": ours,
        "pairs_per_s": n * (n - 1) / 2 / ours,
        "dup_at_0.01": float(np.mean(score > 0.99)),
    }
    if n <= bare_up_to:
        x32 = x.astype(np.float32)
        t = time.perf_counter()
        np.triu(x32 @ x32.T, 1).max(axis=0)
        out["bare_nxn_s"] = time.perf_counter() - t
        out["ratio_blocked_to_bare"] = out["bare_nxn_s"] / ours
    return out


def split(n: int, d: int, eps: float = 0.01) -> list[dict]:
    rng = np.random.default_rng(7)
    centre = _unit(rng.normal(size=d))
    base = _unit(centre + 0.9 * rng.normal(size=(n, d)) / math.sqrt(d))
    rows, group = [], []
    i = 0
    while len(rows) < n:  # groups of 1 (no copy) to 6 near copies (cosine ~0.998)
        size = int(rng.choice([1, 1, 1, 2, 3, 4, 6]))
        for _ in range(size):
            rows.append(_unit(base[i] + 0.06 * rng.normal(size=d) / math.sqrt(d)))
            group.append(i)
        i += 1
    x = np.array(rows[:n])
    keys = [f"r{j}" for j in range(n)]
    sim = x @ centre
    bits, files, rws = order_bits(keys, 1), np.zeros(n, int), np.arange(n)
    _, whole = deduplicate_cluster(x, sim, bits, files, rws, eps=eps, max_cluster_size=None)
    out = []
    for parts in (2, 4, 8):
        _, cut = deduplicate_cluster(x, sim, bits, files, rws, eps=eps, max_cluster_size=math.ceil(n / parts))
        assert not (cut.duplicate & ~whole.duplicate).any()
        missed = int((whole.duplicate & ~cut.duplicate).sum())
        out.append({
            "n": n, "parts": parts, "whole_duplicates": int(whole.duplicate.sum()),
            "split_duplicates": int(cut.duplicate.sum()), "missed": missed,
            "missed_fraction": missed / max(1, int(whole.duplicate.sum())), "lone_pair_miss_rate": 1 - 1 / parts,
        })  # fmt: skip
    return out


def exact_keys(rows: int) -> dict:
    urls = pa.array([f"https://www.site{i % 997}.com/img/{i}/photo.jpg?utm_source=x" for i in range(rows)])
    texts = pa.array([f"A  photo of a Dog number {i}\t on the grass" for i in range(rows)])
    keys = [f"key-{i}" for i in range(rows)]
    out = {"rows": rows}
    for name, fn in (
        ("url_keys", lambda: url_keys(urls)),
        ("text_keys", lambda: text_keys(texts)),
        ("candidates", lambda: candidates(keys, np.zeros(rows, np.int64), np.arange(rows), 1)),
    ):
        t = time.perf_counter()
        fn()
        out[name + "_per_s"] = rows / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--sizes", default="1000,4000,16000")
    ap.add_argument("--split_pool", type=int, default=12000)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"assignment": assignment(args.rows, args.dim, args.clusters)}
    print(json.dumps(result["assignment"]), flush=True)
    result["pairwise"] = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        result["pairwise"].append(pairwise(n, args.dim))
        print(json.dumps(result["pairwise"][-1]), flush=True)
    result["exact_keys"] = exact_keys(args.rows)
    print(json.dumps(result["exact_keys"]), flush=True)
    result["split"] = split(args.split_pool, args.dim) if args.split_pool else []
    for row in result["split"]:
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
