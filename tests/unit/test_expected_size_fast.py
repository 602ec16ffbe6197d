"""expected_sizes_fixed, the many-thresholds-at-once version, against the per-threshold one it replaced.

The oracle below is the previous implementation, kept verbatim: one t at a
time, through the sampler's own `entry_probabilities` and `keep_probabilities`.
Every comparison is exact (the same int64 vector), on random batches, under
random tuning constants (so that the pieces, chunks, merged units, column
steps and reduceat tails are all exercised on small inputs), and on realistic
batches: a generated Zipf pool and, where ../shared is present, real LAION
captions matched against the WordNet metadata list.
"""

from __future__ import annotations

import gzip
import json
from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import shared_file
from transforms.core import expected_size
from transforms.core.balancing import entry_probabilities, keep_probabilities
from transforms.core.expected_size import PROB_SCALE, expected_sizes_fixed, threshold_grid


def reference_expected_sizes_fixed(
    offsets: np.ndarray, flat_ids: np.ndarray, counts: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """The previous expected_sizes_fixed, verbatim: one t at a time over the hard prefix."""
    offsets = np.asarray(offsets, dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.int64)
    num_rows = len(offsets) - 1
    if num_rows > expected_size._MAX_BATCH_ROWS:
        raise ValueError("too many rows")
    flat_ids = np.asarray(flat_ids, dtype=np.int64)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    totals = np.zeros(len(thresholds), dtype=np.int64)
    if len(flat_ids) == 0:
        return totals  # no caption matched: P = 0 for every t
    used, local_ids = np.unique(flat_ids, return_inverse=True)
    used_counts = np.asarray(counts, dtype=np.int64)[used]
    # Matched captions only (no match: P = 0), as (start, length) segments of local_ids.
    lengths = np.diff(offsets)
    starts = offsets[:-1][lengths > 0]
    lengths = lengths[lengths > 0]
    rarest = np.minimum.reduceat(used_counts[local_ids], starts)
    order = np.argsort(-rarest, kind="stable")
    rarest, starts, lengths = rarest[order], starts[order], lengths[order]
    # The segments laid out again in that order, each one's ids unchanged (same product order).
    prefix_offsets = np.concatenate(([0], np.cumsum(lengths)))
    gather = np.repeat(starts - prefix_offsets[:-1], lengths) + np.arange(prefix_offsets[-1])
    ordered_ids = local_ids[gather]
    descending = -rarest
    for index, threshold in enumerate(thresholds.tolist()):
        hard = int(np.searchsorted(descending, -threshold, side="left"))  # captions with rarest > t
        total = (len(rarest) - hard) * PROB_SCALE
        if hard:
            probs = keep_probabilities(
                prefix_offsets[: hard + 1],
                ordered_ids[: prefix_offsets[hard]],
                entry_probabilities(used_counts, threshold),
            )
            total += int(np.rint(probs * PROB_SCALE).astype(np.int64).sum())
        totals[index] = total
    return totals


DEFAULT_TUNING = {
    "_PIECE_IDS": expected_size._PIECE_IDS,
    "_MATRIX_CELLS": expected_size._MATRIX_CELLS,
    "_FLOAT_SUM_ROWS": expected_size._FLOAT_SUM_ROWS,
    "_STEP_COST": expected_size._STEP_COST,
    "_MERGE_WASTE": expected_size._MERGE_WASTE,
}

# Tiny pieces and matrices, no merging or everything merged, all column steps or all reduceat.
TUNINGS = st.fixed_dictionaries(
    {
        "_PIECE_IDS": st.sampled_from([DEFAULT_TUNING["_PIECE_IDS"], 1, 3, 17]),
        "_MATRIX_CELLS": st.sampled_from([DEFAULT_TUNING["_MATRIX_CELLS"], 1, 5, 64]),
        "_FLOAT_SUM_ROWS": st.sampled_from([DEFAULT_TUNING["_FLOAT_SUM_ROWS"], 1, 2, 7]),
        "_STEP_COST": st.sampled_from([DEFAULT_TUNING["_STEP_COST"], 0, 1, 4, 12, 40, 10**9]),
        "_MERGE_WASTE": st.sampled_from([DEFAULT_TUNING["_MERGE_WASTE"], 0, 5, 10**18]),
    }
)


def fast(offsets, flat_ids, counts, thresholds, tuning=None):
    with mock.patch.multiple(expected_size, **(tuning or DEFAULT_TUNING)):
        return expected_sizes_fixed(offsets, flat_ids, counts, thresholds)


def assert_same(offsets, flat_ids, counts, thresholds, tuning=None):
    want = reference_expected_sizes_fixed(offsets, flat_ids, counts, thresholds)
    got = fast(offsets, flat_ids, counts, thresholds, tuning)
    assert got.dtype == np.int64
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


@st.composite
def batches(draw):
    """(offsets, flat ids, counts, thresholds): a possibly sliced Arrow-layout batch and a threshold list."""
    num_entries = draw(st.integers(1, 80))
    counts = draw(
        st.lists(
            st.one_of(
                st.integers(0, 12),
                st.integers(1, 10**9),
                st.sampled_from([1, 2, 3, 40, 41, 10**9]),
            ),
            min_size=num_entries,
            max_size=num_entries,
        )
    )
    ids = st.integers(0, num_entries - 1)
    caption = st.one_of(
        st.just([]),
        ids.map(lambda i: [i]),
        st.lists(ids, unique=True, max_size=num_entries).map(sorted),
        # Long captions too, for the column steps followed by reduceat tails.
        st.integers(1, num_entries).flatmap(
            lambda size: st.permutations(range(num_entries)).map(lambda ids: sorted(ids[:size]))
        ),
    )
    rows = draw(st.lists(caption, max_size=30))
    # Ids before and after the batch: offsets that start above 0, as for a sliced Arrow array.
    before = draw(st.lists(ids, max_size=5))
    after = draw(st.lists(ids, max_size=3))
    flat = before + [i for row in rows for i in row] + after
    offsets = len(before) + np.concatenate(([0], np.cumsum([len(row) for row in rows], dtype=np.int64)))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    largest = max(counts)
    near = [value + delta for value in counts for delta in (-1, 0, 1) if value + delta >= 0]
    thresholds = draw(
        st.lists(
            st.one_of(
                st.sampled_from([1, largest, largest + 1] + near),
                st.integers(0, 10**9 + 1),
                st.integers(1, 60),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return offsets, np.array(flat, dtype=dtype), np.array(counts, dtype=np.int64), np.array(thresholds, dtype=np.int64)


@settings(max_examples=400, deadline=None)
@given(batches(), TUNINGS)
@example(
    (np.array([0, 0, 0]), np.array([], dtype=np.int32), np.array([5]), np.array([1])),
    DEFAULT_TUNING,
)
@example(
    # Unsorted thresholds with repeats, a count equal to a threshold, offsets above 0.
    (
        np.array([2, 4, 4, 7]),
        np.array([0, 0, 0, 1, 1, 2, 3, 3]),
        np.array([7, 40, 41, 10**9]),
        np.array([41, 1, 7, 41, 40]),
    ),
    DEFAULT_TUNING,
)
def test_equals_the_previous_implementation(batch, tuning):
    offsets, flat, counts, thresholds = batch
    assert_same(offsets, flat, counts, thresholds, tuning)


@settings(max_examples=300, deadline=None)
@given(
    batches(),
    st.sampled_from([0, 1, 2, 4, 8, 12, 20, 40, 256, 10**9]),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_keep_probabilities_are_bit_identical_to_the_samplers(batch, step_cost, merged, random):
    """Before rounding: every P of a unit, as float64, is the sampler's keep_prob to the last bit.

    (The fixed-point sums alone would hide most one-ulp differences.)
    """
    offsets, flat, counts, thresholds = batch
    flat = flat[offsets[0] : offsets[-1]].astype(np.int64)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    rows = [row for row in range(len(lengths)) if lengths[row]]
    if not rows:
        return
    random.shuffle(rows)
    rows.sort(key=lambda row: -lengths[row])  # lengths descending, any order among equals
    starts, lengths = offsets[:-1][rows], lengths[rows]
    layout = np.concatenate(([0], np.cumsum(lengths)))
    ordered = np.concatenate([flat[start : start + length] for start, length in zip(starts, lengths, strict=True)])
    ts = np.sort(thresholds)
    rarest = np.minimum.reduceat(counts[ordered], layout[:-1])
    if not merged:
        ts = ts[ts < rarest.min()]  # every pair hard: no reset needed
        if not len(ts):
            return
    width = np.searchsorted(ts, rarest, side="left")
    with mock.patch.object(expected_size, "_STEP_COST", step_cost), np.errstate(all="ignore"):
        got = expected_size._unit_keep_probabilities(
            starts, lengths, width if merged else None, counts[flat].astype(np.float64), ts.astype(np.float64), 0
        )
    for row, threshold in enumerate(ts.tolist()):
        want = keep_probabilities(layout, ordered, entry_probabilities(counts, threshold))
        np.testing.assert_array_equal(got[row], want)


@pytest.mark.parametrize("step_cost", [20, 256])
def test_column_steps_then_reduceat_tails(step_cost):
    """200 short captions and 3 of 50 ids: some column steps, then the long ones' tails."""
    rng = np.random.default_rng(7)
    rows = [np.sort(rng.choice(60, size=1 + i % 8, replace=False)) for i in range(200)]
    rows += [np.sort(rng.choice(60, size=50, replace=False)) for _ in range(3)]
    offsets = np.concatenate(([0], np.cumsum([len(row) for row in rows])))
    flat = np.concatenate(rows)
    counts = 1000 + rng.integers(0, 10**6, size=60)
    ts = np.array([1, 5, 9, 999])
    tuning = dict(DEFAULT_TUNING, _STEP_COST=step_cost)
    assert_same(offsets, flat, counts, ts, tuning)
    order = sorted(range(len(rows)), key=lambda row: -len(rows[row]))
    lengths = np.array([len(rows[row]) for row in order])
    with mock.patch.object(expected_size, "_STEP_COST", step_cost):
        got = expected_size._unit_keep_probabilities(
            offsets[:-1][order], lengths, None, counts[flat].astype(np.float64), ts.astype(np.float64), 0
        )
    layout = np.concatenate(([0], np.cumsum(lengths)))
    ordered = np.concatenate([rows[row] for row in order])
    for row, threshold in enumerate(ts.tolist()):
        np.testing.assert_array_equal(
            got[row], keep_probabilities(layout, ordered, entry_probabilities(counts, threshold))
        )


@pytest.mark.parametrize("thresholds", [[1], [5], [10**9], [0], [3, 3]])
def test_single_and_repeated_thresholds(thresholds):
    offsets = np.array([0, 2, 3, 3, 6])
    flat = np.array([0, 2, 1, 0, 1, 2], dtype=np.int32)
    counts = np.array([5, 3, 10**9])
    assert_same(offsets, flat, counts, np.array(thresholds))


def test_no_thresholds_and_no_match():
    offsets = np.array([3, 3, 3])
    flat = np.array([0, 1, 2], dtype=np.int32)
    assert fast(offsets, flat, np.array([4, 4, 4]), np.array([], dtype=np.int64)).tolist() == []
    assert fast(offsets, flat, np.array([4, 4, 4]), np.array([1, 9])).tolist() == [0, 0]


def test_numpy_settings_are_left_as_they_were():
    before = np.geterr()
    fast(np.array([0, 2]), np.array([0, 1]), np.array([0, 5]), np.array([1, 2, 9]))
    assert np.geterr() == before


def zipf_batch(captions: int, entries: int, seed: int, scale: int = 10):
    """A pool like the pipeline's: Zipf entry popularity, a heavy tail of long captions; counts scaled up."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, entries + 1) ** 1.05
    weights /= weights.sum()
    sizes = np.minimum(rng.geometric(0.17, size=captions) - 1, 120)
    sizes[rng.random(captions) < 0.05] = 0
    draws = rng.choice(entries, size=int(sizes.sum()), p=weights)
    rows, at = [], 0
    for size in sizes.tolist():
        rows.append(np.unique(draws[at : at + size]))
        at += size
    offsets = np.concatenate(([0], np.cumsum([len(row) for row in rows]))).astype(np.int64)
    flat = np.concatenate(rows).astype(np.int32)
    counts = np.bincount(flat, minlength=entries).astype(np.int64) * scale
    return offsets, flat, counts


def test_realistic_batches_of_4096():
    offsets, flat, counts = zipf_batch(3 * 4096 + 100, 20_000, seed=5)
    grid = threshold_grid(counts, extra=[20_000, 1_000])
    assert len(grid) > 50
    small = dict(DEFAULT_TUNING, _MATRIX_CELLS=4096, _PIECE_IDS=5000, _FLOAT_SUM_ROWS=300)
    for start in range(0, len(offsets) - 1, 4096):
        batch = offsets[start : start + 4097]  # sliced: starts above 0
        got = assert_same(batch, flat, counts, grid)
        assert got[0] < got[-1] == np.count_nonzero(np.diff(batch)) * PROB_SCALE
        assert_same(batch, flat, counts, grid, small)
        assert_same(batch, flat, counts, grid[::-1].copy())


def test_a_batch_larger_than_a_piece():
    """Over 2**18 ids: several pieces and matrices at the default tuning."""
    offsets, flat, counts = zipf_batch(80_000, 50_000, seed=6, scale=13)
    assert len(flat) > expected_size._PIECE_IDS
    assert_same(offsets, flat, counts, threshold_grid(counts, points=24, extra=[20_000]))


def test_real_captions_matched_against_wordnet():
    import pyarrow.parquet as pq

    from transforms.core.matching import EntryMatcher

    pool = shared_file("data", "laion400m_sample_10k.parquet")
    entries = json.loads(gzip.decompress(shared_file("bench", "metadata_wordnet30.json.gz").read_bytes()))
    texts = pq.read_table(pool, columns=["TEXT"]).column("TEXT").to_pylist()
    offsets, flat = EntryMatcher(entries).match_batch(text or "" for text in texts)
    offsets = np.asarray(offsets, dtype=np.int64)
    flat = np.asarray(flat, dtype=np.int32)
    counts = np.bincount(flat, minlength=len(entries)).astype(np.int64) * 100  # like a 1M pool
    grid = threshold_grid(counts, extra=[20_000])
    for start in range(0, len(offsets) - 1, 4096):
        batch = offsets[start : start + 4097]
        assert_same(batch - batch[0], flat[batch[0] : batch[-1]], counts, grid)
        assert_same(batch, flat, counts, grid)


def test_too_many_rows_is_refused():
    offsets = np.zeros(expected_size._MAX_BATCH_ROWS + 2, dtype=np.int64)
    with pytest.raises(ValueError, match="overflow"):
        expected_sizes_fixed(offsets, np.array([], dtype=np.int32), np.array([1]), np.array([1]))
