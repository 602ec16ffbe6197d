"""clip_score fraction filter: the radix select against DataComp's sort (docs/datacomp.md, "The rules")."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.filters.clip_score import (
    DIGITS,
    SelectState,
    keep_flags,
    next_state,
    order_keys,
    radix_threshold,
    start_select,
    threshold_by_sort,
    threshold_of,
    value_of_key,
)

DTYPES = (np.float16, np.float32, np.float64)
SPECIAL = (0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -1.0, 5e-324, 1e-45, 6e-8, 2.0**-126)
FRACTIONS = (0.0, 1.0, 0.3, 0.5, 0.9, 0.999, 1 - 1e-9, 1 - 2.0**-53, 0.1)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@st.composite
def pools(draw):
    """A score column (float16/32/64, with NaN, ±0, ±inf, subnormals and heavy ties) split into chunks."""
    dtype = draw(st.sampled_from(DTYPES))
    width = np.dtype(dtype).itemsize * 8
    anything = st.floats(width=width) | st.sampled_from(SPECIAL)
    if draw(st.booleans()):  # heavy ties: draw from a handful of distinct values
        anything = st.sampled_from(draw(st.lists(anything, min_size=1, max_size=4)))
    with np.errstate(over="ignore", under="ignore"):
        values = np.array(draw(st.lists(anything, max_size=80)), dtype=dtype)
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=5)))
    chunks = np.split(values, cuts)
    fraction = draw(st.sampled_from(FRACTIONS) | st.floats(0.0, 1.0))
    return values, chunks, fraction


@settings(max_examples=400, deadline=None)
@given(pools())
def test_radix_select_equals_the_sort(pool):
    values, chunks, fraction = pool
    expected = threshold_by_sort(values, fraction)
    got = radix_threshold(chunks, fraction)
    assert same(got, expected), (got, expected)
    assert np.array_equal(keep_flags(values, got), keep_flags(values, expected))
    kept = keep_flags(values, got)
    assert not kept[np.isnan(values)].any()
    n = int(len(values) * fraction)
    if not math.isnan(got):  # n+1 rows plus ties
        assert kept.sum() >= n + 1 and kept.sum() == (values >= got).sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_large_random_pool_in_many_chunks(dtype):
    rng = np.random.default_rng(7)
    values = rng.normal(size=100_000).astype(dtype)
    values[rng.integers(0, len(values), 500)] = np.nan
    values[:2000] = values[2000:4000]  # ties
    chunks = np.split(values, np.sort(rng.integers(0, len(values), 40)))
    for fraction in (0.3, 0.9, 0.01, 0.99, 0.995):  # 0.995 lands on a NaN
        assert same(radix_threshold(chunks, fraction), threshold_by_sort(values, fraction))
    assert not math.isnan(radix_threshold(chunks, 0.99))


def test_the_issue_fixture_ten_rows_fraction_0_3():
    distinct = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.35], dtype=np.float32)
    threshold = radix_threshold([distinct[:4], distinct[4:]], 0.3)  # n = int(10 * 0.3) = 3
    assert threshold == np.float32(0.6)
    assert keep_flags(distinct, threshold).sum() == 4
    tied = np.array([0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    assert keep_flags(tied, radix_threshold([tied], 0.3)).sum() == 6


def test_nan_is_never_kept_and_a_rank_on_nan_keeps_nothing():
    scores = np.array([np.nan, 0.5, np.nan, 0.2, np.nan], dtype=np.float32)
    assert radix_threshold([scores], 0.2) == np.float32(0.2)  # n = 1: the second largest
    assert keep_flags(scores, 0.2).tolist() == [False, True, False, True, False]
    assert math.isnan(radix_threshold([scores], 0.4))  # n = 2 lands on a NaN
    assert not keep_flags(scores, math.nan).any()


def test_edge_sizes_and_fractions():
    assert math.isnan(radix_threshold([], 0.5))  # N = 0
    assert math.isnan(radix_threshold([np.array([], dtype=np.float32)], 0.0))
    one = np.array([0.25], dtype=np.float32)
    assert radix_threshold([one], 0.0) == 0.25 and radix_threshold([one], 0.99) == 0.25
    assert math.isnan(radix_threshold([one], 1.0))  # n >= N: no threshold, nothing kept (ours)
    assert math.isnan(threshold_by_sort(one, 1.0))
    many = np.arange(10, dtype=np.float32)
    assert radix_threshold([many], 0.0) == 9.0 and radix_threshold([many], 0.95) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        start_select(10, 0, 1.5, np.float32)


def test_zero_signs_share_a_key_and_compare_equal():
    keys, nans = order_keys(np.array([-0.0, 0.0, np.nan], dtype=np.float32))
    assert keys[0] == keys[1] and nans == 1
    scores = np.array([-0.0, 0.0, -1.0], dtype=np.float32)
    assert radix_threshold([scores], 0.0) == 0.0
    assert keep_flags(scores, radix_threshold([scores], 0.0)).tolist() == [True, True, False]


def test_keys_order_every_float16_and_random_float32_bit_patterns():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    real = every[~np.isnan(every)]
    keys, _ = order_keys(real)
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(real[order].astype(np.float64)) >= 0)
    assert all(value_of_key(int(k), np.float16) == float(v) for k, v in zip(keys[::97], real[::97], strict=True))
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    real = bits[~np.isnan(bits)]
    keys, _ = order_keys(real)
    assert np.array_equal(np.sign(np.diff(keys.astype(np.int64))), np.sign(np.diff(real.astype(np.float64))))


def test_passes_follow_the_dtype_and_the_state_pickles():
    for dtype, passes in ((np.float16, 1), (np.float32, 2), (np.float64, 4)):
        state = start_select(5, 0, 0.5, dtype)
        assert state.passes == passes and not state.finished
        assert pickle.loads(pickle.dumps(state)) == state


def test_a_lost_batch_or_a_wrong_key_width_fails_loudly():
    values = np.linspace(0, 1, 100, dtype=np.float32)
    state = start_select(100, 0, 0.5, np.float32)
    keys, _ = order_keys(values[:60])
    with pytest.raises(ValueError, match="expected 100"):
        next_state(state, state.histogram(keys))
    with pytest.raises(ValueError, match="32-bit"):
        state.histogram(order_keys(values.astype(np.float64))[0])
    with pytest.raises(ValueError, match="more passes"):
        threshold_of(state)
    done = SelectState(dtype="float32", rank=-1, expected=0)
    with pytest.raises(ValueError, match="finished"):
        next_state(done, np.zeros(DIGITS, dtype=np.int64))


def test_the_beam_driving_loop_by_hand():
    """What the Beam wrapper does: count, then one summed histogram per pass, then the flags."""
    rng = np.random.default_rng(11)
    batches = [rng.random(n).astype(np.float32) for n in (1000, 1, 0, 333)]
    batches[1][0] = np.nan
    total, nans = sum(b.size for b in batches), sum(int(np.isnan(b).sum()) for b in batches)
    state = start_select(total, nans, 0.3, np.float32)
    while not state.finished:
        state = next_state(state, sum(state.histogram(order_keys(b)[0]) for b in batches))
    assert state.pass_index == 2
    threshold = threshold_of(state)
    assert threshold == threshold_by_sort(np.concatenate(batches), 0.3)
    assert sum(int(keep_flags(b, threshold).sum()) for b in batches) == int(total * 0.3) + 1
