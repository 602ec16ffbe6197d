"""Record batches gathered before a cut by shard, and the cut itself. No Beam import.

A batch cut into S shards makes S pieces, and each piece costs its copy, buffering and
spilling whatever its rows. S follows the pool (output shards, per-image buckets), so
cutting each 4,096-row batch made (pool / 4,096) x S pieces: ~2M at 40M captions
(BENCHMARKS.md, section 7). The DoFns that cut therefore gather rows first
(`BatchGatherer`, `gather_rows`), which changes no result where a row's shard is its own.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

__all__ = ["BatchGatherer", "gather_rows", "ordered_batch", "shard_runs", "take_runs"]

MIN_GATHER_ROWS, MAX_GATHER_ROWS, GATHER_ROWS_PER_SHARD = 1 << 16, 1 << 18, 512


def gather_rows(shards: int) -> int:
    """Rows to gather before cutting into `shards`: 512 a shard, within [64k, 256k] (~100 MB)."""
    return min(MAX_GATHER_ROWS, max(MIN_GATHER_ROWS, GATHER_ROWS_PER_SHARD * shards))


class BatchGatherer:
    """Record batches of one schema gathered into one of at least `rows` rows.

    `add` returns the gathered batch once `rows` are reached, or the earlier ones when a
    batch of another schema arrives (they are never concatenated); `drain` the rest.
    """

    def __init__(self, rows: int):
        self._limit = rows
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        ready = self.drain() if self._batches and not self._batches[0].schema.equals(batch.schema) else []
        self._batches.append(batch)
        self._rows += batch.num_rows
        return ready + self.drain() if self._rows >= self._limit else ready

    def drain(self) -> list[pa.RecordBatch]:
        batches, self._batches, self._rows = self._batches, [], 0
        if not batches:
            return []
        return [batches[0] if len(batches) == 1 else pa.concat_batches(batches)]


def shard_runs(shards: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """(order, present, bounds): `order` sorts the rows by shard (stable), and the rows
    order[bounds[i]:bounds[i + 1]] are those of shard present[i], present ascending."""
    order = np.argsort(shards, kind="stable")
    if len(order) == 0:
        return order, [], [0]
    ordered = shards[order]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    return order, ordered[bounds[:-1]].tolist(), bounds.tolist()


def ordered_batch(table, order: np.ndarray) -> pa.RecordBatch:
    """The rows of a table or batch in `order`, as one batch."""
    taken = table.take(pa.array(order))
    return taken if isinstance(taken, pa.RecordBatch) else _one_batch(taken)


def take_runs(table, order: np.ndarray, present: list[int], bounds: list[int]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard, a copy of its rows as one batch) per run of `shard_runs`. A copy, not a slice:
    a pickled slice carries its parent's whole buffers."""
    for shard, a, b in zip(present, bounds[:-1], bounds[1:], strict=True):
        yield shard, ordered_batch(table, order[a:b])


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]
