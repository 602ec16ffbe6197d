"""Online balancing: a fresh, reproducible draw per epoch from the match index.

Statistical tolerance: an epoch's size is a sum of independent Bernoulli(P) draws, so it
is checked to lie within 5 standard deviations (sqrt(sum P(1-P))) of sum P; likewise the
overlap of two epochs (mean sum P^2) and per-group use frequencies over many epochs. Under
the model each check fails with probability below 1e-6; the draws are seeded, so the
outcome is fixed (the test cannot flicker), and a biased or repeated draw fails it.
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms.core.balancing import keep_decisions
from transforms.core.hashing import key_hashes
from transforms.handoff.online_balancing import (
    EpochFilter,
    MatchIndex,
    OnlineBalancing,
    epoch_seed,
)

N = 20_000


SEED = 5


@pytest.fixture(scope="module")
def balancing():
    rng = np.random.default_rng(0)
    probs = np.concatenate([np.ones(N // 4), rng.uniform(0, 1, N // 4), np.full(N // 4, 0.05), np.zeros(N // 4)])
    keys = [f"sample-{i:06d}" for i in range(N)]
    return OnlineBalancing(MatchIndex(keys, probs), seed=SEED)


def _within(value, mean, std, sigmas=5.0):
    return abs(value - mean) <= sigmas * std


def test_each_epoch_has_the_expected_size(balancing):
    p = balancing.index.keep_probs
    assert balancing.expected_epoch_size == pytest.approx(p.sum())
    for epoch in range(10):
        size = int(balancing.epoch_mask(epoch).sum())
        assert _within(size, balancing.expected_epoch_size, balancing.epoch_size_std), (epoch, size)
        assert len(balancing.epoch_keys(epoch)) == size
        assert list(balancing.iter_epoch(epoch, chunk=3001)) == balancing.epoch_keys(epoch)


def test_epochs_differ_and_each_is_reproducible(balancing):
    p = balancing.index.keep_probs
    masks = [balancing.epoch_mask(epoch) for epoch in range(5)]
    again = OnlineBalancing(MatchIndex(list(balancing.index.keys), p), seed=SEED)
    for epoch, mask in enumerate(masks):
        assert np.array_equal(mask, again.epoch_mask(epoch))  # same (index, seed, epoch): same draw
        # ... and it is exactly keep_decisions with the epoch's seed: the pipeline's own functions
        assert np.array_equal(mask, keep_decisions(p, key_hashes(balancing.index.keys), epoch_seed(SEED, epoch)))
        assert mask[p == 1.0].all() and not mask[p == 0.0].any()
    overlap_mean, overlap_std = (p**2).sum(), np.sqrt((p**2 * (1 - p**2)).sum())
    for a in range(5):
        for b in range(a + 1, 5):
            assert not np.array_equal(masks[a], masks[b])
            # Independent epochs share sum P^2 samples in expectation, no more.
            assert _within((masks[a] & masks[b]).sum(), overlap_mean, overlap_std), (a, b)
    other_seed = OnlineBalancing(balancing.index, seed=SEED + 1)
    assert not np.array_equal(other_seed.epoch_mask(0), masks[0])


def test_use_frequency_over_epochs_is_the_keep_probability(balancing):
    p = balancing.index.keep_probs
    epochs = 40
    used = sum(balancing.epoch_mask(epoch).astype(np.int64) for epoch in range(epochs))
    for low, high in [(0.04, 0.06), (0.0001, 0.5), (0.5, 0.9999)]:
        group = (p > low) & (p < high)
        draws = group.sum() * epochs
        expected = p[group].sum() * epochs
        std = np.sqrt((p[group] * (1 - p[group])).sum() * epochs)
        assert draws > 1000 and _within(used[group].sum(), expected, std), (low, high)


def test_epoch_draws_are_not_the_offline_subset(balancing):
    p, hashes = balancing.index.keep_probs, balancing.index.hashes
    offline = keep_decisions(p, hashes, SEED)
    assert (
        all(epoch_seed(SEED, e) != SEED for e in range(100)) and len({epoch_seed(SEED, e) for e in range(100)}) == 100
    )
    overlap_mean, overlap_std = (p**2).sum(), np.sqrt((p**2 * (1 - p**2)).sum())
    assert _within((balancing.epoch_mask(0) & offline).sum(), overlap_mean, overlap_std)


def test_single_key_decisions_agree_with_the_epoch_mask(balancing):
    mask = balancing.epoch_mask(7)
    for i in range(0, N, 97):
        assert balancing.keeps(balancing.index.keys[i], 7) == bool(mask[i])
    assert balancing.keeps("not in the index", 7) is False
    with pytest.raises(ValueError):
        balancing.epoch_mask(-1)


def test_repeated_keys_are_one_sample_with_the_largest_probability():
    index = MatchIndex(["a", "b", "a", "c", "a"], [0.1, 0.5, 0.9, 0.0, 0.3])
    assert index.keys == ["a", "b", "c"] and index.keep_probs.tolist() == [0.9, 0.5, 0.0]
    assert index.probability("a") == 0.9 and index.probability("zz") == 0.0


def test_a_key_fn_that_finds_no_key_fails_loudly_instead_of_passing_nothing(balancing):
    samples = [{"__key__": f"sample-{i:06d}", "json": b"{}"} for i in range(200)]
    wrong = EpochFilter(balancing, 0, key_fn=lambda sample: "uid-" + sample["__key__"], check_after=100)
    with pytest.raises(LookupError, match="key_fn must give the curation key"):
        list(wrong.filter(samples))
    # The right key_fn: no error, and the filter passes this epoch's draw of these samples.
    right = EpochFilter(balancing, 3, check_after=100)
    assert [s["__key__"] for s in right.filter(samples)] == [
        s["__key__"] for s in samples if balancing.keeps(s["__key__"], 3)
    ]
    # Once one key is known, unknown keys later on are just not used (rejected records).
    late = EpochFilter(balancing, 3, check_after=2)
    assert late(samples[0]) in (True, False) and not any(late({"__key__": f"gone-{i}"}) for i in range(10))
