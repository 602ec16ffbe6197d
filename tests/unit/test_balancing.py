"""Balancing: probabilities, the seeded draw, and its statistics."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.balancing import (
    entry_probabilities,
    keep_decisions,
    keep_probabilities,
    keep_probability,
)
from transforms.core.hashing import key_hashes, shard_indices, uniform_draws


def test_entry_probabilities():
    probs = entry_probabilities(np.array([0, 1, 10, 11, 40]), 10)
    assert probs.tolist() == [1.0, 1.0, 1.0, 10 / 11, 0.25]


def test_keep_probability_formula():
    probs = np.array([1.0, 0.5, 0.25, 0.1])
    assert keep_probability([], probs) == 0.0
    assert keep_probability([0, 2], probs) == 1.0  # a tail entry keeps the caption
    assert keep_probability([1, 2], probs) == pytest.approx(1 - 0.5 * 0.75)
    assert keep_probability([1, 2, 3], probs) == pytest.approx(1 - 0.5 * 0.75 * 0.9)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 19), max_size=6, unique=True).map(sorted), max_size=30),
    counts=st.lists(st.integers(0, 10_000), min_size=20, max_size=20),
    threshold=st.integers(1, 5_000),
)
def test_batch_keep_probabilities_equal_the_scalar_form_bit_for_bit(rows, counts, threshold):
    probs = entry_probabilities(np.array(counts), threshold)
    offsets = np.cumsum([0] + [len(r) for r in rows])
    flat = np.array([i for r in rows for i in r], dtype=np.int32)
    batch = keep_probabilities(offsets, flat, probs)
    assert batch.tolist() == [keep_probability(r, probs) for r in rows]


def test_key_hash_is_blake2b_and_pinned():
    # The hash decides every subset: changing it silently changes every output.
    assert int(key_hashes(["a"])[0]) == int.from_bytes(hashlib.blake2b(b"a", digest_size=8).digest(), "little")
    assert [hex(int(h)) for h in key_hashes(["a", "00000001", "東京"])] == [
        "0x2f42665b399ef840",
        "0xc6922b4d547c81b2",
        "0xf02b68d1ca5511ee",
    ]
    assert uniform_draws(key_hashes(["a"]), 0).tolist() == [0.7752349209974001]
    empty = key_hashes([])
    assert empty.dtype == np.uint64 and empty.shape == (0,)


def test_uniform_draws_are_uniform():
    draws = uniform_draws(key_hashes(f"key-{i}" for i in range(200_000)), seed=3)
    assert draws.min() >= 0.0 and draws.max() < 1.0
    observed = np.histogram(draws, bins=20, range=(0, 1))[0]
    expected = len(draws) / 20
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001


def test_shards_cover_every_index_evenly():
    shards = shard_indices(key_hashes(str(i) for i in range(50_000)), 7)
    counts = np.bincount(shards, minlength=7)
    assert counts.sum() == 50_000 and np.all(np.abs(counts - 50_000 / 7) < 5 * math.sqrt(50_000 / 7))


# Entry counts of a pool where each caption matches exactly one entry, so the
# kept count of entry e is Binomial(count_e, p_e), with mean min(count_e, t).
COUNTS = [20_000, 8_000, 3_000, 1_200, 600, 500, 499, 120, 7, 1]
THRESHOLD = 500


def _single_entry_pool():
    entry_of_caption = np.repeat(np.arange(len(COUNTS)), COUNTS)
    keys = [f"img-{i:07d}" for i in range(len(entry_of_caption))]
    offsets = np.arange(len(keys) + 1)
    return keys, entry_of_caption, offsets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_entry_keeps_min_count_t_in_expectation(seed):
    keys, entry_of_caption, offsets = _single_entry_pool()
    probs = entry_probabilities(np.array(COUNTS), THRESHOLD)
    keep_prob = keep_probabilities(offsets, entry_of_caption.astype(np.int32), probs)
    kept = keep_decisions(keep_prob, key_hashes(keys), seed)
    kept_per_entry = np.bincount(entry_of_caption[kept], minlength=len(COUNTS))
    for count, p, got in zip(COUNTS, probs, kept_per_entry, strict=True):
        expected = min(count, THRESHOLD)
        sigma = math.sqrt(count * p * (1 - p))
        # Tolerance: 4 standard deviations of the binomial (tail entries: exact).
        assert abs(got - expected) <= 4 * sigma, (count, got, expected)
        if count <= THRESHOLD:
            assert got == count


def test_multi_entry_captions_keep_sum_of_probabilities():
    rng = np.random.default_rng(5)
    counts = np.zeros(200, dtype=np.int64)
    rows = [np.unique(rng.zipf(1.6, size=rng.integers(1, 6)) % 200) for _ in range(40_000)]
    for row in rows:
        counts[row] += 1
    offsets = np.cumsum([0] + [len(r) for r in rows])
    flat = np.concatenate(rows).astype(np.int32)
    keep_prob = keep_probabilities(offsets, flat, entry_probabilities(counts, 300))
    kept = keep_decisions(keep_prob, key_hashes(str(i) for i in range(len(rows))), seed=11)
    sigma = math.sqrt((keep_prob * (1 - keep_prob)).sum())
    assert abs(kept.sum() - keep_prob.sum()) <= 4 * sigma  # 4 sigma of the sum of Bernoullis


def test_same_seed_same_subset_other_seed_other_subset_of_same_size():
    keys, entry_of_caption, offsets = _single_entry_pool()
    hashes = key_hashes(keys)
    keep_prob = keep_probabilities(
        offsets, entry_of_caption.astype(np.int32), entry_probabilities(np.array(COUNTS), THRESHOLD)
    )
    first = keep_decisions(keep_prob, hashes, 0)
    assert np.array_equal(first, keep_decisions(keep_prob, key_hashes(list(keys)), 0))
    other = keep_decisions(keep_prob, hashes, 1)
    assert not np.array_equal(first, other)
    head = keep_prob < 1
    overlap = (first & other & head).sum() / max(1, (first & head).sum())
    assert overlap < 0.5  # head draws are independent across seeds: overlap ~ p, not ~1
    sigma = math.sqrt(2 * (keep_prob * (1 - keep_prob)).sum())
    assert abs(int(first.sum()) - int(other.sum())) <= 4 * sigma
