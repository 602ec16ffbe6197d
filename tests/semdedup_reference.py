"""SemDeDup written from the spec (docs/dedup.md, section 2) in plain numpy, for the tests.

No import from `transforms` or the pipeline: the order draw written out with hashlib and
Python ints, clusters by float64 argmax, each cluster (or part) sorted and compared with
every earlier member through the literal upper-triangular similarity matrix, O(n^2) per
part. Where the spec leaves a choice, the package's documented one (ours): ties after the
order draw go to the earlier input position; parts are the order bits mod ceil(n / cap);
similarities are float64 dot products summed pairwise (numpy's `sum` over products).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from dedup_reference import _splitmix64  # the spec's SplitMix64, written apart from the package


def order_bits(seed: int, key: str) -> int:
    """The 64 bits of draw(seed, key + "\\x00order"): BLAKE2b-64 LE, XOR SplitMix64(seed), SplitMix64."""
    data = (key + "\x00order").encode("utf-8", "surrogatepass")
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return _splitmix64(h ^ _splitmix64(seed % 2**64))


def _unit_rows(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x * x).sum(axis=1))[:, None]


def semdedup(x, keys, positions, centroids, *, seed, eps, keep="hard", max_cluster_size=None):
    """Per record: dict(cluster, part, score (None for the first of its part), duplicate, of (index or None)).

    positions: (file, row) per record, for the last tie rule.
    """
    x = _unit_rows(x)
    c = _unit_rows(centroids)
    n = len(x)
    sims = np.array([[float((x[i] * c[j]).sum()) for j in range(len(c))] for i in range(n)])
    cluster = [int(np.flatnonzero(row == row.max())[0]) for row in sims]
    out = [None] * n
    for k in sorted(set(cluster)):
        members = [i for i in range(n) if cluster[i] == k]
        parts = 1 if not max_cluster_size else max(1, math.ceil(len(members) / max_cluster_size))
        part_of = {i: order_bits(seed, keys[i]) % parts for i in members}
        for p in range(parts):
            in_part = [i for i in members if part_of[i] == p]
            sign = -1.0 if keep == "hard" else 1.0
            in_part.sort(key=lambda i: (sign * (1.0 - sims[i, k]), order_bits(seed, keys[i]), positions[i]))
            xs = x[in_part]
            s = (xs[:, None, :] * xs[None, :, :]).sum(axis=2)  # S[i, j] = x_i . x_j, pairwise sums
            s[np.tril_indices(len(in_part))] = -np.inf  # triu(S, 1): only earlier members
            for j, i in enumerate(in_part):
                if j == 0:
                    out[i] = {"cluster": k, "part": p, "score": None, "duplicate": False, "of": None}
                    continue
                column = s[:j, j]
                best = int(np.flatnonzero(column == column.max())[0])
                score = float(column.max())
                dup = score > 1.0 - eps
                of = in_part[best] if dup else None
                out[i] = {"cluster": k, "part": p, "score": score, "duplicate": dup, "of": of}
    return out


def spherical_kmeans(x, keys, positions, *, k, seed, iterations):
    """Centroids from the K smallest order draws (then position); assign by float64 argmax, replace
    each centroid by its members' normalised float64 sum (empty: kept), stop when nothing moves."""
    x = _unit_rows(x)
    start = sorted(range(len(x)), key=lambda i: (order_bits(seed, keys[i]), positions[i]))[:k]
    c = x[start].copy()
    previous = None
    for _ in range(iterations):
        cn = _unit_rows(c)
        sims = (x[:, None, :] * cn[None, :, :]).sum(axis=2)
        assign = np.array([int(np.flatnonzero(row == row.max())[0]) for row in sims])
        if previous is not None and (assign == previous).all():
            break
        for j in range(k):
            members = x[assign == j]
            total = members.sum(axis=0)
            norm = math.sqrt(float((total * total).sum()))
            if len(members) and norm > 0:
                c[j] = total / norm
        previous = assign
    return c
