"""transforms/core/batches.py: gathering batches before a cut, and the cut into runs by shard,
against plain-Python oracles."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.batches import MAX_GATHER_ROWS, MIN_GATHER_ROWS, BatchGatherer, gather_rows, shard_runs, take_runs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=40))
def test_shard_runs_group_every_row_under_its_shard_in_arrival_order(shards):
    shards = np.array(shards, dtype=np.int64)
    order, present, bounds = shard_runs(shards)
    assert present == sorted(set(shards.tolist()))
    assert bounds[0] == 0 and bounds[-1] == len(shards) and len(bounds) == len(present) + 1
    for shard, a, b in zip(present, bounds[:-1], bounds[1:], strict=True):
        assert order[a:b].tolist() == [i for i, s in enumerate(shards.tolist()) if s == shard]  # stable


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_take_runs_copies_each_shards_rows(shards):
    batch = pa.RecordBatch.from_pydict({"row": list(range(len(shards))), "shard": shards})
    pieces = dict(take_runs(batch, *shard_runs(np.array(shards))))
    for shard, piece in pieces.items():
        assert piece.column("row").to_pylist() == [i for i, s in enumerate(shards) if s == shard]
    assert sum(piece.num_rows for piece in pieces.values()) == len(shards)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=25), st.integers(1, 20))
def test_the_gatherer_hands_on_every_row_in_order_in_batches_of_one_schema(sizes_and_kinds, limit):
    """Batches of two schemas interleaved: what comes out is what went in, in order, never
    two schemas in one batch, and every batch handed on before the drain holds `limit` rows
    or was cut short by a schema change."""
    gatherer, out, counter = BatchGatherer(limit), [], 0
    inputs = []
    for size, wide in sizes_and_kinds:
        columns = {"v": list(range(counter, counter + size))}
        if wide:
            columns["w"] = [0.5] * size
        counter += size
        inputs.append(pa.RecordBatch.from_pydict(columns))
    for i, batch in enumerate(inputs):
        ready = gatherer.add(batch)
        for handed in ready:
            assert handed.num_rows >= limit or not handed.schema.equals(batch.schema)
        out += ready
        held = sum(b.num_rows for b in inputs[: i + 1]) - sum(b.num_rows for b in out)
        assert held < limit  # never holds a full batch's worth
    out += gatherer.drain()
    assert [v for b in out for v in b.column("v").to_pylist()] == list(range(counter))
    assert gatherer.drain() == []


def test_gather_rows_grow_with_the_shards_within_bounds():
    assert gather_rows(1) == MIN_GATHER_ROWS
    assert gather_rows(212) == 212 * 512
    assert gather_rows(100_000) == MAX_GATHER_ROWS
