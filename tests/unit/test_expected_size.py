"""Expected subset size E(t) against a brute-force oracle, and the target-size search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.balancing import (
    entry_probabilities,
    keep_probabilities,
    keep_probability,
)
from transforms.core.expected_size import (
    PROB_SCALE,
    add_fixed,
    choose_threshold,
    expected_sizes_fixed,
    fixed_to_captions,
    refine_grid,
    threshold_grid,
)


def zipf_pool(captions: int, entries: int, seed: int, max_matches: int = 6):
    """Captions as sorted unique entry-id lists, entry popularity following a Zipf law."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, entries + 1) ** 1.1
    weights /= weights.sum()
    sizes = rng.integers(0, max_matches + 1, size=captions)
    draws = rng.choice(entries, size=int(sizes.sum()), p=weights).tolist()
    ends = np.cumsum(sizes).tolist()
    return [sorted(set(draws[end - size : end])) for end, size in zip(ends, sizes.tolist(), strict=True)]


def layout(pool):
    offsets = np.zeros(len(pool) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids in pool])
    flat = np.array([i for ids in pool for i in ids], dtype=np.int32)
    return offsets, flat


def pool_counts(pool, entries: int) -> np.ndarray:
    return np.bincount(np.array([i for ids in pool for i in ids], dtype=np.int64), minlength=entries).astype(np.int64)


def brute_force_fixed(pool, counts, threshold: int) -> int:
    """Sum over captions of rint(P * 2**40), P from the scalar keep_probability."""
    probs = entry_probabilities(counts, threshold)
    return sum(int(np.rint(keep_probability(ids, probs) * PROB_SCALE)) for ids in pool)


def test_scale_is_the_stats_scale():
    from transforms.core.stats import _PROB_SCALE

    assert PROB_SCALE == _PROB_SCALE


def test_equals_brute_force_for_several_thresholds():
    pool = zipf_pool(3000, 400, seed=1)
    counts = pool_counts(pool, 400)
    offsets, flat = layout(pool)
    thresholds = np.array([1, 7, 50, 200, int(counts.max()), int(counts.max()) + 10])
    got = expected_sizes_fixed(offsets, flat, counts, thresholds)
    assert got.dtype == np.int64
    assert got.tolist() == [brute_force_fixed(pool, counts, int(t)) for t in thresholds]
    # From the largest count on, every entry is tail: E = captions with a match.
    matched = sum(1 for ids in pool if ids)
    assert got[-1] == got[-2] == matched * PROB_SCALE


def test_equals_the_samplers_keep_prob_sum_at_the_runs_threshold():
    """E(t) at the run's t is stats.json's expected_kept, to the fixed-point unit."""
    pool = zipf_pool(2000, 300, seed=2)
    counts = pool_counts(pool, 300)
    offsets, flat = layout(pool)
    keep_prob = keep_probabilities(offsets, flat, entry_probabilities(counts, 40))
    expected = int(np.rint(keep_prob * PROB_SCALE).astype(np.int64).sum())
    assert expected_sizes_fixed(offsets, flat, counts, [40]).tolist() == [expected]


def test_batches_sum_to_the_whole_in_any_order_and_sliced_offsets_work():
    pool = zipf_pool(1500, 200, seed=3)
    counts = pool_counts(pool, 200)
    thresholds = threshold_grid(counts, points=16)
    offsets, flat = layout(pool)
    whole = expected_sizes_fixed(offsets, flat, counts, thresholds)
    parts = []
    for start in range(0, len(pool), 256):
        end = min(start + 256, len(pool))
        # A slice of the whole layout: offsets do not start at 0.
        parts.append(expected_sizes_fixed(offsets[start : end + 1], flat, counts, thresholds))
    total = [0] * len(thresholds)
    for part in reversed(parts):
        total = add_fixed(total, part)
    assert total == whole.tolist()
    assert fixed_to_captions(total)[-1] == pytest.approx(sum(1 for ids in pool if ids))


def test_no_match_batch_is_zero():
    offsets = np.zeros(5, dtype=np.int64)
    assert expected_sizes_fixed(offsets, np.array([], dtype=np.int32), np.array([3, 4]), [1, 2]).tolist() == [0, 0]


def test_grid_is_sorted_unique_from_one_to_the_largest_count():
    counts = np.array([0, 1, 5, 90, 12_000, 3_000_000])
    grid = threshold_grid(counts, points=64, extra=[20_000])
    assert grid.dtype == np.int64
    assert grid[0] == 1 and grid[-1] == 3_000_000
    assert np.all(np.diff(grid) > 0)
    assert {12_000, 20_000, 3_000_000} <= set(grid.tolist())
    assert 60 <= len(grid) <= 67
    # log-spaced: neighbouring points at most ~30% apart above the integer range.
    big = grid[grid > 100]
    assert np.all(big[1:] / big[:-1] < 1.35)
    assert threshold_grid(np.array([0, 0]), 64).tolist() == [1]


def test_monotone_in_t():
    pool = zipf_pool(2000, 300, seed=4)
    counts = pool_counts(pool, 300)
    offsets, flat = layout(pool)
    grid = np.arange(1, int(counts.max()) + 2)
    sizes = expected_sizes_fixed(offsets, flat, counts, grid)
    assert np.all(np.diff(sizes) >= 0)
    assert sizes[-1] > sizes[0]


def test_choose_threshold_picks_the_nearest_and_the_smallest_on_ties():
    t = np.array([1, 10, 100, 1000])
    e = [5.0, 40.0, 90.0, 90.0]
    assert choose_threshold(t, e, 30) == 10
    assert choose_threshold(t, e, 66) == 100  # 24 from 90, 26 from 40
    assert choose_threshold(t, e, 1000) == 100  # plateau: the smallest t reaching it
    assert choose_threshold(t, e, 0) == 1
    # Fixed-point totals beyond int64 compare exactly.
    big = [2**70, 2**70 + 3, 2**70 + 9, 2**71]
    assert choose_threshold(t, big, 2**70 + 7) == 100


def test_refine_grid_brackets_the_target():
    t = np.array([1, 10, 100, 1000])
    e = [5.0, 40.0, 90.0, 95.0]
    fine = refine_grid(t, e, 60.0, points=64)
    assert fine[0] == 10 and fine[-1] == 100 and len(fine) == 64 and np.all(np.diff(fine) > 0)
    assert refine_grid(t, e, 25.0, points=64).tolist() == list(range(1, 11))
    assert refine_grid(t, e, 1.0, points=64).tolist() == [1]
    assert refine_grid(t, e, 500.0, points=64).tolist() == [1000]
    assert refine_grid(t, e, 40.0, points=64).tolist() == [10]


def test_two_passes_land_within_a_fraction_of_a_percent():
    """The lead's plan: a coarse pass of 64 log-spaced t, then 64 inside the bracket."""
    pool = zipf_pool(20_000, 2000, seed=5, max_matches=4)
    counts = pool_counts(pool, 2000)
    offsets, flat = layout(pool)
    coarse = threshold_grid(counts, 64)
    coarse_e = fixed_to_captions(expected_sizes_fixed(offsets, flat, counts, coarse))
    # E runs from ~1,800 (t = 1) to 16,017. Where t is small, one integer step of t
    # moves E by more than 1% (E(5) = 5,687, E(6) = 6,166): there the fine grid holds
    # every integer of the bracket and the best integer is all one can ask for.
    for target in (6000.0, 10500.0, 12000.0, 15500.0):
        fine = refine_grid(coarse, coarse_e, target, 64)
        fine_e = fixed_to_captions(expected_sizes_fixed(offsets, flat, counts, fine))
        chosen = choose_threshold(fine, fine_e, target)
        below, achieved, above = fixed_to_captions(
            expected_sizes_fixed(offsets, flat, counts, [chosen - 1, chosen, chosen + 1])
        )
        if target == 6000.0:
            # E is monotone: beating both integer neighbours is beating every integer.
            assert abs(achieved - target) <= min(abs(below - target), abs(above - target)), (target, chosen)
        else:
            assert abs(achieved - target) / target < 0.005, (target, chosen, achieved)


pools = st.lists(st.lists(st.integers(0, 11), max_size=5).map(lambda ids: sorted(set(ids))), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(pool=pools, target_share=st.floats(0.0, 1.2), coarse_points=st.integers(2, 12))
def test_coarse_then_fine_finds_the_best_integer_threshold(pool, target_share, coarse_points):
    """With a fine grid covering its bracket, no integer t comes closer to the target."""
    counts = pool_counts(pool, 12)
    offsets, flat = layout(pool)
    every_t = np.arange(1, int(counts.max()) + 3)
    every_e = expected_sizes_fixed(offsets, flat, counts, every_t)
    # E(t) equals the brute force, and never decreases.
    for t in (1, int(counts.max())):
        assert every_e[t - 1] == brute_force_fixed(pool, counts, t)
    assert np.all(np.diff(every_e) >= 0)
    target = int(target_share * len(pool) * PROB_SCALE)  # fixed point, exact comparisons
    coarse = threshold_grid(counts, coarse_points)
    fine = refine_grid(coarse, expected_sizes_fixed(offsets, flat, counts, coarse), target, points=64)
    chosen = choose_threshold(fine, expected_sizes_fixed(offsets, flat, counts, fine), target)
    best = min(abs(int(e) - target) for e in every_e)
    assert abs(int(every_e[chosen - 1]) - target) == best


@settings(max_examples=150, deadline=None)
@given(
    pool=st.lists(st.lists(st.integers(0, 30), max_size=5).map(lambda ids: sorted(set(ids))), max_size=40),
    extra=st.lists(st.integers(0, 40), min_size=31, max_size=31),
    thresholds=st.lists(st.integers(1, 60), min_size=1, max_size=8),
)
def test_any_batch_equals_brute_force(pool, extra, thresholds):
    """Counts from a larger pool (as in the pipeline), ties, empty captions, thresholds in any order."""
    counts = pool_counts(pool, 31) + np.array(extra, dtype=np.int64)
    offsets, flat = layout(pool)
    got = expected_sizes_fixed(offsets, flat, counts, np.array(thresholds, dtype=np.int64))
    assert got.tolist() == [brute_force_fixed(pool, counts, t) for t in thresholds]
