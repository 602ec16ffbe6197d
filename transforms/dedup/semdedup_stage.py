"""SemDeDup's pieces between Beam steps: member blocks, one part's judgement, the eps curve, figures.

Pure numpy and pyarrow, no Beam import (docs/dedup.md, "How a distributed stage calls
these"). transforms.beam.semdedup wires them into steps; transforms.dedup.local is the same
SemDeDup in one process, and the stage must equal it record for record.

A member block is an Arrow record batch of some members of one cluster (MEMBER_COLUMNS):
their sample key, input position, the id of the batch they came from (to mark them there),
order bits, float64 similarity to the centroid, and the embedding as read (float32): the
judgement normalises it again, row by row, exactly as `normalise_embeddings` did at
assignment (a row's norm does not depend on the other rows), so a block carries half the
bytes of the float64 rows.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pyarrow as pa

from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW
from transforms.dedup.pairwise import BLOCK_ROWS
from transforms.dedup.semdedup import (
    HARD,
    cluster_parts,
    deduplicate_members,
    normalise_embeddings,
    order_bits,
    parts_count,
)
from transforms.filters.clusters import Centroids, nearest_centroids
from transforms.formats.embeddings import as_fixed_size_list, embedding_matrix

KIND = "semantic"
ROW_BITS = 40  # record id = file << 40 | row (as the selection's record_ids)
BATCH, BITS, SIM, X = "batch", "bits", "sim", "x"
# transforms.beam.dedup_kinds.DUPLICATES_SCHEMA, restated without its Beam import (a test checks they are equal).
DUPLICATES_SCHEMA = pa.schema(
    [("key", pa.string()), ("kind", pa.string()), ("duplicate_of", pa.string()), ("similarity", pa.float64())]
)
SCORES_SCHEMA = pa.schema([(KEY, pa.string()), ("cluster", pa.int64()), ("score", pa.float64())])
# The eps curve's grid (docs/dedup.md, "Choosing eps from one run"): log-spaced, plus the run's eps.
EPS_GRID = tuple(float(e) for e in np.geomspace(1e-4, 0.2, 25))


def record_ids(files: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Unique id of each record from its input position: file << 40 | row (uint64)."""
    return (np.asarray(files).astype(np.uint64) << np.uint64(ROW_BITS)) | np.asarray(rows).astype(np.uint64)


def batch_id(batch: pa.RecordBatch) -> int:
    """A batch's join key: its first record's id (records are in exactly one batch)."""
    return int(record_ids(batch.column(SOURCE_FILE).to_numpy()[:1], batch.column(SOURCE_ROW).to_numpy()[:1])[0])


class Assigned(NamedTuple):
    """A batch's records, assigned: per cluster present, its member block; and the rows left out."""

    blocks: list  # [(cluster, member block)]
    unusable: int  # rows with a NaN, infinite or zero embedding: not judged, kept


def normalised_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`semdedup.normalise_embeddings`' very answer, in fewer passes when every row is usable
    (the common case: the reader rejects the others): the same float64 cast, norms and division."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    if len(x64) and np.isfinite(norms).all() and (norms > 0).all():
        return x64 / norms[:, None], np.ones(len(x64), dtype=bool)
    return normalise_embeddings(x)


def assigned_clusters(xn: np.ndarray, centroids: Centroids, usable: np.ndarray, rows: int = 512):
    """`semdedup.assign_clusters`' very answer (cluster, float64 similarity) without its copies:
    no copy of x when every row is usable, and the similarity in row chunks that stay in cache
    (each row's sum over d is numpy's pairwise sum of the same products, whatever the chunk)."""
    cluster = nearest_centroids(xn, centroids)
    cluster[~usable] = -1
    sim = np.full(len(xn), np.nan)
    values = centroids.values
    for start in range(0, len(xn), rows):
        part = slice(start, start + rows)
        use = usable[part]
        if use.all():
            sim[part] = (xn[part] * values[cluster[part]]).sum(axis=1)
        elif use.any():
            sim[part][use] = (xn[part][use] * values[cluster[part][use]]).sum(axis=1)
    return cluster, sim


def assign_batch(batch: pa.RecordBatch, column: str, centroids: Centroids, seed: int) -> Assigned:
    """Cluster each record of a batch (`assign_clusters`, the image filter's kernel) and cut the
    batch into one member block per cluster present."""
    if batch.num_rows == 0:
        return Assigned([], 0)
    x = embedding_matrix(batch, column)
    xn, usable = normalised_rows(x)
    cluster, sim = assigned_clusters(xn, centroids, usable)
    keys = batch.column(KEY)
    table = pa.RecordBatch.from_arrays(
        [
            keys,
            batch.column(SOURCE_FILE).cast(pa.int64()),
            batch.column(SOURCE_ROW).cast(pa.int64()),
            pa.array(np.full(batch.num_rows, batch_id(batch), np.uint64)),
            pa.array(order_bits(keys.to_pylist(), seed)),
            pa.array(sim),
            as_fixed_size_list(x),
        ],
        names=[KEY, SOURCE_FILE, SOURCE_ROW, BATCH, BITS, SIM, X],
    )
    order = np.argsort(cluster, kind="stable")
    sorted_clusters = cluster[order]
    starts = np.flatnonzero(np.r_[True, sorted_clusters[1:] != sorted_clusters[:-1]])
    stops = np.r_[starts[1:], len(order)]
    blocks = [
        (int(sorted_clusters[a]), table.take(pa.array(order[a:b])))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True)
        if sorted_clusters[a] >= 0
    ]
    return Assigned(blocks, int(np.count_nonzero(~usable)))


def split_block(block: pa.RecordBatch, cluster_size: int, max_cluster_size: Optional[int]) -> list:
    """(part, the block's members in that part) for each part present (`cluster_parts`)."""
    if parts_count(cluster_size, max_cluster_size) == 1:
        return [(0, block)]
    part = cluster_parts(block.column(BITS).to_numpy(), cluster_size, max_cluster_size)
    return [(int(p), block.take(pa.array(np.flatnonzero(part == p)))) for p in np.unique(part).tolist()]


def eps_grid(eps: float) -> np.ndarray:
    """The eps values of the curve: EPS_GRID and the run's eps, ascending."""
    return np.unique(np.r_[EPS_GRID, float(eps)])


class Judged(NamedTuple):
    """One cluster part's outcome."""

    scores: pa.RecordBatch  # SCORES_SCHEMA, every member (score null for the part's first)
    duplicates: pa.RecordBatch  # DUPLICATES_SCHEMA, one row per duplicate
    marks: list  # [(batch id, record ids of its duplicates)]
    removed: np.ndarray  # per eps of eps_grid(eps): members with score > 1 - e (int64)


def judge_part(
    members: pa.RecordBatch, cluster: int, *, eps: float, keep: str = HARD, block_rows: int = BLOCK_ROWS
) -> Judged:
    """SemDeDup on the members of one (cluster, part), in any arrival order (`deduplicate_members`)."""
    x = members.column(X)
    raw = x.values.to_numpy(zero_copy_only=False).reshape(len(x), x.type.list_size)
    xn, _ = normalised_rows(raw)
    files = members.column(SOURCE_FILE).to_numpy()
    rows = members.column(SOURCE_ROW).to_numpy()
    res = deduplicate_members(
        xn, members.column(SIM).to_numpy(), members.column(BITS).to_numpy(), files, rows,
        eps=eps, keep=keep, block_rows=block_rows,
    )  # fmt: skip
    keys = members.column(KEY)
    n = members.num_rows
    first = ~np.isfinite(res.score)  # -inf: no earlier member
    scores = pa.RecordBatch.from_arrays(
        [keys, pa.array(np.full(n, cluster, np.int64)), pa.array(np.where(first, 0.0, res.score), mask=first)],
        schema=SCORES_SCHEMA,
    )
    dup = np.flatnonzero(res.duplicate)
    take = pa.array(dup)
    duplicates = pa.RecordBatch.from_arrays(
        [
            keys.take(take),
            pa.array([KIND] * len(dup), pa.string()),
            keys.take(pa.array(res.nearest[dup])),
            pa.array(res.score[dup]),
        ],
        schema=DUPLICATES_SCHEMA,
    )
    batches = members.column(BATCH).to_numpy()[dup]
    ids = record_ids(files[dup], rows[dup])
    marks = [(int(b), ids[batches == b]) for b in np.unique(batches).tolist()]
    thresholds = 1.0 - eps_grid(eps)
    removed = (res.score[:, None] > thresholds[None, :]).sum(axis=0).astype(np.int64)
    return Judged(scores, duplicates, marks, removed)


def drop_marked(batch: pa.RecordBatch, marked: np.ndarray) -> pa.RecordBatch:
    """The batch without the records whose ids are `marked`; every marked id must be in it."""
    ids = record_ids(batch.column(SOURCE_FILE).to_numpy(), batch.column(SOURCE_ROW).to_numpy())
    hit = np.isin(ids, marked)
    if int(hit.sum()) != len(np.unique(marked)):
        raise ValueError(f"semantic dedup: {len(np.unique(marked))} duplicates marked, {int(hit.sum())} in their batch")
    return batch if not hit.any() else batch.filter(pa.array(~hit))


class Tally(NamedTuple):
    """Summed over the parts judged: members, duplicates at each grid eps, unusable rows left out."""

    judged: int
    removed: np.ndarray
    unusable: int

    def merge(self, other: "Tally") -> "Tally":
        return Tally(self.judged + other.judged, self.removed + other.removed, self.unusable + other.unusable)


def size_summary(sizes: np.ndarray) -> dict:
    """min, median, p99 (numpy's linear interpolation) and max of the K clusters' sizes, empty ones included."""
    s = np.asarray(sizes, dtype=np.int64)
    return {
        "min": int(s.min()),
        "median": float(np.median(s)),
        "p99": float(np.percentile(s, 99)),
        "max": int(s.max()),
    }


def semdedup_figures(
    sizes: dict, k: int, tally: Tally, *, eps: float, keep: str, max_cluster_size: Optional[int], fit: Optional[dict]
) -> dict:
    """The kind's figures: deduplicated, judged, and stats.json's `semdedup` object.

    Checks that every member counted in a cluster was judged once (a lost or doubled element
    fails the run here rather than leaving records unjudged).
    """
    per_cluster = np.zeros(k, dtype=np.int64)
    for c, n in sizes.items():
        per_cluster[int(c)] = int(n)
    if int(per_cluster.sum()) != tally.judged:
        raise ValueError(f"semantic dedup: {int(per_cluster.sum())} records clustered, {tally.judged} judged")
    grid = eps_grid(eps)
    deduplicated = int(tally.removed[int(np.flatnonzero(grid == float(eps))[0])]) if tally.judged else 0
    fractions = tally.removed / tally.judged if tally.judged else np.zeros(len(grid))
    parts = [parts_count(int(n), max_cluster_size) for n in per_cluster.tolist()]
    document = {
        "clusters": k,
        "eps": float(eps),
        "keep": keep,
        "max_cluster_size": max_cluster_size,
        "largest_cluster": int(per_cluster.max()),
        "empty_clusters": int(np.count_nonzero(per_cluster == 0)),
        "cluster_sizes": size_summary(per_cluster),
        "parts_split": int(sum(p > 1 for p in parts)),
        "parts": int(sum(p for p, n in zip(parts, per_cluster.tolist(), strict=True) if n)),
        "not_judged": tally.unusable,
        "centroids": "given" if fit is None else "fitted",
        "eps_curve": [[float(e), float(f)] for e, f in zip(grid.tolist(), fractions.tolist(), strict=True)],
    }
    if fit is not None:
        document.update(fit)
    return {"deduplicated": deduplicated, "judged": tally.judged, "semdedup": document}


class Starts(NamedTuple):
    """The k-means start candidates held so far: the K smallest (order bits, file, row) and their rows."""

    bits: np.ndarray  # uint64
    files: np.ndarray  # int64
    rows: np.ndarray  # int64
    x: np.ndarray  # float64 normalised rows

    def smallest(self, k: int) -> "Starts":
        order = np.lexsort((self.rows, self.files, self.bits))[:k]
        return Starts(self.bits[order], self.files[order], self.rows[order], self.x[order])

    @staticmethod
    def merge(parts: list, k: int) -> "Starts":
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        return Starts(*(np.concatenate([getattr(p, f) for p in parts]) for f in Starts._fields)).smallest(k)


def batch_starts(batch: pa.RecordBatch, column: str, seed: int, k: int) -> Optional[Starts]:
    """A batch's K smallest claims to be a start centroid (`kmeans.initial_indices` over the pool
    is the K smallest over all batches: the same records, any batching or merge order)."""
    if batch.num_rows == 0:
        return None
    xn, usable = normalised_rows(embedding_matrix(batch, column))
    idx = np.flatnonzero(usable)
    bits = order_bits(batch.column(KEY).to_pylist(), seed)[idx]
    files = batch.column(SOURCE_FILE).to_numpy().astype(np.int64)[idx]
    rows = batch.column(SOURCE_ROW).to_numpy().astype(np.int64)[idx]
    return Starts(bits, files, rows, xn[idx]).smallest(k)


def start_centroids(starts: Optional[Starts], k: int) -> np.ndarray:
    """K x d start (`kmeans.initial_centroids`' rows) or a clear error when the pool has fewer rows."""
    found = 0 if starts is None else len(starts.bits)
    if found < k:
        raise ValueError(f"semantic dedup: {k} clusters need at least {k} usable embeddings, not {found}")
    return starts.x
