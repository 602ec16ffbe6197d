"""The whole SemDeDup of an in-memory pool, composed from the pure parts (docs/dedup.md).

Pure numpy, no Beam import. This is what the Beam stage does across workers (assignment per
batch, cluster sizes counted, members grouped per (cluster, part), `deduplicate_members` per
group), in one process: the stage's tests compare against it, and it shows the order of calls.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from transforms.dedup.kmeans import DEFAULT_ITERATIONS, fit_centroids
from transforms.dedup.pairwise import BLOCK_ROWS
from transforms.dedup.semdedup import (
    DEFAULT_EPS,
    DEFAULT_MAX_CLUSTER_SIZE,
    HARD,
    assign_clusters,
    cluster_parts,
    deduplicate_members,
    normalise_embeddings,
    order_bits,
    prepare_centroids,
)


class SemDedup(NamedTuple):
    """Per record (input order) and for the run."""

    usable: np.ndarray  # bool: finite, non-zero embedding (the others are rejected, cluster -1)
    cluster: np.ndarray  # int64, -1 for unusable rows
    part: np.ndarray  # int64 part of the cluster (0 unless split), -1 for unusable rows
    score: np.ndarray  # largest similarity to an earlier member of its part; -inf first / unusable
    duplicate_of: np.ndarray  # record index of that earlier member when a duplicate, else -1
    duplicate: np.ndarray  # bool
    centroids: np.ndarray  # K x d used (as given, or fitted)
    clusters_split: int  # clusters over max_cluster_size


def semdedup_in_memory(
    x: np.ndarray,
    sample_keys: Sequence[str],
    source_files,
    source_rows,
    *,
    seed: int,
    centroids: np.ndarray | None = None,
    clusters: int | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    eps: float = DEFAULT_EPS,
    keep: str = HARD,
    max_cluster_size: int | None = DEFAULT_MAX_CLUSTER_SIZE,
    block_rows: int = BLOCK_ROWS,
) -> SemDedup:
    """SemDeDup on a pool: given `centroids`, or `clusters` = K to fit (exactly one of them)."""
    if (centroids is None) == (clusters is None):
        raise ValueError("give exactly one of centroids and clusters")
    files, rows = np.asarray(source_files), np.asarray(source_rows)
    xn, usable = normalise_embeddings(x)
    if centroids is None:
        centroids = fit_centroids(x, sample_keys, files, rows, k=clusters, seed=seed, iterations=iterations).centroids
    cluster, sim = assign_clusters(xn, prepare_centroids(centroids), usable)
    bits = order_bits(sample_keys, seed)
    n = len(xn)
    part = np.full(n, -1, dtype=np.int64)
    score = np.full(n, -np.inf)
    dup_of = np.full(n, -1, dtype=np.int64)
    dup = np.zeros(n, dtype=bool)
    sizes = np.bincount(cluster[usable], minlength=len(centroids))
    for k in np.flatnonzero(sizes):
        members = np.flatnonzero(cluster == k)
        part[members] = cluster_parts(bits[members], len(members), max_cluster_size)
        for p in np.unique(part[members]):
            m = members[part[members] == p]
            res = deduplicate_members(
                xn[m], sim[m], bits[m], files[m], rows[m], eps=eps, keep=keep, block_rows=block_rows
            )
            score[m], dup[m] = res.score, res.duplicate
            dup_of[m[res.duplicate]] = m[res.nearest[res.duplicate]]
    split = int(np.count_nonzero(sizes > max_cluster_size)) if max_cluster_size else 0
    return SemDedup(usable, cluster, part, score, dup_of, dup, np.asarray(centroids), split)
