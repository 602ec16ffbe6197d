"""Spherical k-means for SemDeDup's centroids, with exact, order-independent sums (docs/dedup.md).

Pure numpy, no Beam import. Deterministic (ours): the initial centroids are the K usable
records with the smallest draw(seed, key + "\\x00order") (equal draws: earlier position);
each iteration assigns every record by SemDeDup's rule (`semdedup.assign_clusters`) and
replaces each centroid by the L2-normalised sum of its members; a cluster without members,
or whose members sum to zero, keeps its centroid. At most `iterations` updates; it stops
early once an update changes no record's cluster.

Exact sums: each component of a normalised row (|v| <= 1) is put on a fixed-point grid,
q = rint(v * 2**52) (an integer with |q| <= 2**52: the rounding is at most 2**-53, float64's
own resolution near 1), split as q = hi * 2**26 + lo with 0 <= lo < 2**26, and hi and lo are
summed as int64. Integer addition is associative and commutative and cannot overflow before
2**36 rows in one sum, so the sums (`ClusterSums`) are the same for any order, batching,
partitioning or merge tree: a Beam loop (CombineGlobally of `batch_sums` with `merge_sums`)
gets the very bits of the in-memory fit. Only then are they turned into floats, once.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from transforms.dedup.semdedup import assign_clusters, normalise_embeddings, order_bits, prepare_centroids
from transforms.filters.clusters import Centroids

SCALE_BITS = 52
_HALF_BITS = 26
DEFAULT_ITERATIONS = 20


class ClusterSums(NamedTuple):
    """Exact per-cluster sums of normalised rows: counts (K,), hi and lo (K x d), int64."""

    counts: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    changed: int  # records whose cluster differs from the previous assignment (-1: not known)


def empty_sums(k: int, d: int) -> ClusterSums:
    """The sums of no rows (the combiner's accumulator)."""
    return ClusterSums(np.zeros(k, np.int64), np.zeros((k, d), np.int64), np.zeros((k, d), np.int64), 0)


def fixed_point(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) int64 with rint(x * 2**52) == hi * 2**26 + lo and 0 <= lo < 2**26; |x| <= 1."""
    q = np.rint(np.asarray(x, dtype=np.float64) * 2.0**SCALE_BITS).astype(np.int64)
    return q >> _HALF_BITS, q & ((1 << _HALF_BITS) - 1)


def batch_sums(x: np.ndarray, clusters: np.ndarray, k: int, previous: np.ndarray | None = None) -> ClusterSums:
    """Exact sums of a batch's normalised rows per cluster (rows with cluster -1 are left out).

    previous: the same rows' clusters under the centroids before (for the stopping rule).
    """
    x = np.asarray(x, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    use = clusters >= 0
    hi_rows, lo_rows = fixed_point(x[use])
    c = clusters[use]
    counts = np.bincount(c, minlength=k).astype(np.int64)
    hi = np.zeros((k, x.shape[1]), np.int64)
    lo = np.zeros((k, x.shape[1]), np.int64)
    if len(c):  # rows grouped by cluster, each group summed as int64 (exact)
        order = np.argsort(c, kind="stable")
        present = np.flatnonzero(counts)
        starts = np.r_[0, np.cumsum(counts[present])[:-1]]
        hi[present] = np.add.reduceat(hi_rows[order], starts, axis=0)
        lo[present] = np.add.reduceat(lo_rows[order], starts, axis=0)
    changed = -1 if previous is None else int(np.count_nonzero(np.asarray(previous)[use] != c))
    return ClusterSums(counts, hi, lo, changed)


def merge_sums(parts: Sequence[ClusterSums]) -> ClusterSums:
    """The sums of several batches (any order, any grouping: integer additions)."""
    parts = list(parts)
    changed = -1 if any(p.changed < 0 for p in parts) else sum(p.changed for p in parts)
    return ClusterSums(
        sum((p.counts for p in parts[1:]), parts[0].counts.copy()),
        sum((p.hi for p in parts[1:]), parts[0].hi.copy()),
        sum((p.lo for p in parts[1:]), parts[0].lo.copy()),
        changed,
    )


def sums_as_float(sums: ClusterSums) -> np.ndarray:
    """The exact sums as float64 K x d (each rounded once from its canonical hi/lo form)."""
    hi = sums.hi + (sums.lo >> _HALF_BITS)
    lo = sums.lo & ((1 << _HALF_BITS) - 1)
    return (hi.astype(np.float64) * 2.0**_HALF_BITS + lo.astype(np.float64)) * 2.0**-SCALE_BITS


def next_centroids(sums: ClusterSums, centroids: np.ndarray) -> np.ndarray:
    """Each centroid replaced by the normalised sum of its members; kept when it has none."""
    total = sums_as_float(sums)
    normalised, usable = normalise_embeddings(total)
    out = np.array(centroids, dtype=np.float64, copy=True)
    take = usable & (sums.counts > 0)
    out[take] = normalised[take]
    return out


def initial_indices(sample_keys: Sequence[str], usable: np.ndarray, source_files, source_rows, seed: int, k: int):
    """Indices of the K usable records with the smallest order draw (then earlier position)."""
    bits = order_bits(sample_keys, seed)
    idx = np.flatnonzero(usable)
    if len(idx) < k:
        raise ValueError(f"{k} clusters need at least {k} usable embeddings, not {len(idx)}")
    files, rows = np.asarray(source_files)[idx], np.asarray(source_rows)[idx]
    order = np.lexsort((rows, files, bits[idx]))
    return idx[order[:k]]


def start_candidates(
    sample_keys: Sequence[str], x: np.ndarray, usable: np.ndarray, source_files, source_rows, seed: int
):
    """A batch's claims to be an initial centroid: (order bits, file, row, normalised row) per
    usable record. Across the pool, the K smallest tuples (Beam's Top.Smallest, or
    `initial_centroids`) are the start: the same records as `initial_indices`."""
    bits = order_bits(sample_keys, seed)
    files, rows = np.asarray(source_files), np.asarray(source_rows)
    return [
        (int(bits[i]), int(files[i]), int(rows[i]), np.asarray(x[i], dtype=np.float64)) for i in np.flatnonzero(usable)
    ]


def initial_centroids(candidates, k: int) -> np.ndarray:
    """K x d start from `start_candidates` of the whole pool (any order, any subsets merged)."""
    best = sorted(candidates, key=lambda c: c[:3])[:k]
    if len(best) < k:
        raise ValueError(f"{k} clusters need at least {k} usable embeddings, not {len(best)}")
    return np.array([c[3] for c in best])


def _prepared(centroids) -> Centroids:
    return centroids if isinstance(centroids, Centroids) else prepare_centroids(centroids)


def step_sums(x: np.ndarray, usable: np.ndarray, centroids, previous=None) -> ClusterSums:
    """One batch's part of an iteration, as a Beam loop computes it: assign the normalised rows
    to `centroids` (prepared or K x d), sum them per cluster; with `previous` (the centroids
    before), count the rows whose cluster changed. Merge the batches with `merge_sums`."""
    cents = _prepared(centroids)
    cl, _ = assign_clusters(x, cents, usable)
    before = None if previous is None else assign_clusters(x, _prepared(previous), usable)[0]
    return batch_sums(x, cl, cents.values.shape[0], before)


class Fit(NamedTuple):
    """The fitted centroids (K x d, unit rows), updates made, and whether it stopped on no change."""

    centroids: np.ndarray
    iterations: int
    converged: bool


def fit_centroids(
    x: np.ndarray, sample_keys: Sequence[str], source_files, source_rows, *, k: int, seed: int,
    iterations: int = DEFAULT_ITERATIONS, batch_rows: int = 65536,
) -> Fit:  # fmt: skip
    """The whole fit in one process, batch by batch as a Beam loop would sum it."""
    xn, usable = normalise_embeddings(x)
    centroids = xn[initial_indices(sample_keys, usable, source_files, source_rows, seed, k)]
    previous = None
    for it in range(iterations):
        prepared = prepare_centroids(centroids)
        parts = []
        current = np.empty(len(xn), dtype=np.int64)
        for s in range(0, len(xn), batch_rows):
            rows = slice(s, s + batch_rows)
            cl, _ = assign_clusters(xn[rows], prepared)
            cl[~usable[rows]] = -1
            current[rows] = cl
            parts.append(batch_sums(xn[rows], cl, k, None if previous is None else previous[rows]))
        sums = merge_sums(parts)
        if previous is not None and sums.changed == 0:
            return Fit(centroids, it, True)
        centroids = next_centroids(sums, centroids)
        previous = current
    return Fit(centroids, iterations, False)
