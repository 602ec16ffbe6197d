"""SemDeDup per record and per cluster: normalise, assign, order, split, and the pairwise rule.

Pure numpy, no Beam import (docs/dedup.md, "Semantic duplicates"). The pieces a stage
calls, in order:

1. `normalise_embeddings` (per batch): float64 rows of unit L2 norm, and which rows are
   usable (finite and non-zero; the others are rejected by the stage with a reason).
2. `assign_clusters` (per batch, centroids from `prepare_centroids` once per worker):
   `argmax_k x . c_k`, ties to the lowest k, through the image filter's kernel
   (`filters.clusters.nearest_centroids`: float32 BLAS, float64 recheck of unclear rows),
   and each row's float64 similarity to its centroid.
3. `cluster_parts` (per cluster, once its size is known): the part of each member of a
   cluster over `max_cluster_size` (ours), from the order bits.
4. `deduplicate_members` (per cluster part, members grouped): the in-cluster order
   (`member_order`), then `pairwise.earlier_maxima` on the ordered rows.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from transforms.dedup.keys import ORDER, purpose_bits
from transforms.dedup.pairwise import BLOCK_ROWS, duplicates, earlier_maxima
from transforms.filters.clusters import Centroids, nearest_centroids
from transforms.filters.clusters import prepare_centroids as _prepare
from transforms.selection.budgets import num_parts, split_parts

HARD, EASY = "hard", "easy"
DEFAULT_EPS = 0.01
DEFAULT_MAX_CLUSTER_SIZE = 50_000


def normalise_embeddings(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 rows divided by their L2 norm, usable mask). Unusable rows (NaN, inf, zero) are zeros."""
    x64 = np.array(x, dtype=np.float64, ndmin=2)
    finite = np.isfinite(x64).all(axis=1)
    x64[~finite] = 0.0
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    usable = finite & (norms > 0) & np.isfinite(norms)
    out = np.zeros_like(x64)
    out[usable] = x64[usable] / norms[usable, None]
    return out, usable


def prepare_centroids(centroids: np.ndarray) -> Centroids:
    """Given or fitted centroids, rows L2-normalised in float64, prepared for `assign_clusters`."""
    values = np.asarray(centroids)
    if values.ndim != 2 or values.dtype.kind != "f" or 0 in values.shape:
        raise ValueError(f"centroids must be a non-empty 2-D float array, not {values.dtype} {values.shape}")
    normalised, usable = normalise_embeddings(values)
    if not usable.all():
        raise ValueError(f"centroid {int(np.argmin(usable))} is zero or not finite")
    return _prepare(normalised)


def centroid_similarity(x: np.ndarray, centroid_rows: np.ndarray) -> np.ndarray:
    """x_i . c_(k_i) in float64 (products, then numpy's pairwise sum: the same for equal rows)."""
    return (np.asarray(x, dtype=np.float64) * np.asarray(centroid_rows, dtype=np.float64)).sum(axis=1)


def assign_clusters(x: np.ndarray, centroids: Centroids, usable: np.ndarray | None = None):
    """(cluster of each normalised row, its float64 similarity to that centroid).

    The cluster is `argmax_k x . c_k` with ties to the lowest k, exactly as the image
    filter decides it; rows of zeros (unusable) get cluster -1 and similarity NaN.
    usable: `normalise_embeddings`' mask when the caller has it (saves a pass over x).
    """
    x = np.asarray(x, dtype=np.float64)
    cluster = nearest_centroids(x, centroids)
    usable = x.any(axis=1) if usable is None else np.asarray(usable, dtype=bool)
    cluster[~usable] = -1
    sim = np.full(len(x), np.nan)
    sim[usable] = centroid_similarity(x[usable], centroids.values[cluster[usable]])
    return cluster, sim


def order_bits(sample_keys: Sequence[str], seed: int) -> np.ndarray:
    """The bits of draw(seed, key + "\\x00order") (uint64): in-cluster ties, parts, k-means init."""
    return purpose_bits(sample_keys, seed, ORDER)


def cluster_parts(bits: np.ndarray, cluster_size: int, max_cluster_size: int | None) -> np.ndarray:
    """Part of each member of a cluster of `cluster_size` members: bits % ceil(size / max), as
    selection splits a large class (ours; 0 for every member of a cluster within the cap)."""
    return split_parts(bits, cluster_size, max_cluster_size)


def parts_count(cluster_size: int, max_cluster_size: int | None) -> int:
    """Number of parts of a cluster: ceil(size / max_cluster_size), at least 1."""
    return num_parts(cluster_size, max_cluster_size)


def member_order(similarity, bits, source_files, source_rows, keep: str = HARD) -> np.ndarray:
    """Permutation of a cluster's members into SemDeDup's order.

    keep "hard": by `1 - x . c` descending (farthest from the centroid first); "easy":
    ascending. Ties by draw(seed, key + "\\x00order") ascending (its bits order the same),
    then (ours) by input position (file, row), for equal sample keys.
    """
    distance = 1.0 - np.asarray(similarity, dtype=np.float64)
    if keep == HARD:
        primary = -distance
    elif keep == EASY:
        primary = distance
    else:
        raise ValueError(f"keep must be {HARD!r} or {EASY!r}, not {keep!r}")
    return np.lexsort((np.asarray(source_rows), np.asarray(source_files), np.asarray(bits, dtype=np.uint64), primary))


class Deduplicated(NamedTuple):
    """Per member, in the members' given order (not cluster order)."""

    rank: np.ndarray  # position in its part's cluster order, int64
    score: np.ndarray  # largest float64 similarity to an earlier member; -inf for the first
    nearest: np.ndarray  # member index of that earlier member; -1 for the first
    duplicate: np.ndarray  # bool: score > 1 - eps


def deduplicate_members(
    x: np.ndarray,
    similarity: np.ndarray,
    bits: np.ndarray,
    source_files,
    source_rows,
    *,
    eps: float = DEFAULT_EPS,
    keep: str = HARD,
    block_rows: int = BLOCK_ROWS,
) -> Deduplicated:
    """SemDeDup on the members of one cluster part, in any arrival order.

    x: their normalised rows; similarity: `assign_clusters`' similarity; bits: `order_bits`;
    positions (file, row). The result is the same for any permutation of the members.
    """
    order = member_order(similarity, bits, source_files, source_rows, keep)
    score_sorted, nearest_sorted = earlier_maxima(np.asarray(x, dtype=np.float64)[order], block_rows=block_rows)
    n = len(order)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    score = np.empty(n)
    score[order] = score_sorted
    nearest = np.full(n, -1, dtype=np.int64)
    has = nearest_sorted >= 0
    nearest[order[has]] = order[nearest_sorted[has]]
    return Deduplicated(rank, score, nearest, duplicates(score, eps))


def deduplicate_cluster(
    x, similarity, bits, source_files, source_rows, *, eps=DEFAULT_EPS, keep=HARD,
    max_cluster_size: int | None = DEFAULT_MAX_CLUSTER_SIZE, block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, Deduplicated]:  # fmt: skip
    """A whole cluster: split into parts (`cluster_parts`), each part deduplicated alone.

    Returns (part of each member, Deduplicated over all members, `nearest` as member index).
    """
    bits = np.asarray(bits, dtype=np.uint64)
    files, rows = np.asarray(source_files), np.asarray(source_rows)
    n = len(bits)
    part = cluster_parts(bits, n, max_cluster_size)
    rank, score = np.empty(n, dtype=np.int64), np.empty(n)
    nearest, dup = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    for p in np.unique(part):
        m = np.flatnonzero(part == p)
        res = deduplicate_members(
            np.asarray(x)[m], np.asarray(similarity)[m], bits[m], files[m], rows[m],
            eps=eps, keep=keep, block_rows=block_rows,
        )  # fmt: skip
        rank[m], score[m], dup[m] = res.rank, res.score, res.duplicate
        nearest[m] = np.where(res.nearest >= 0, m[np.maximum(res.nearest, 0)], -1)
    return part, Deduplicated(rank, score, nearest, dup)
