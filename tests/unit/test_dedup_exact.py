"""Exact dedup's survivor rule (docs/dedup.md): brute force, order independence, the chain."""

from __future__ import annotations

import dedup_reference as ref
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.dedup.exact import Candidate, candidates, chain_duplicate_of, duplicate_of, survivor_index

_records = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None]), st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6"])),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(_records, st.integers(0, 2**64 - 1), st.randoms(use_true_random=False))
def test_survivors_equal_brute_force_and_ignore_arrival_order(records, seed, rnd):
    """Duplicate sample keys included (ties to the earlier position); any permutation, same survivors."""
    dedup_keys = [r[0] for r in records]
    keys = [r[1] for r in records]
    files = [i // 7 for i in range(len(records))]
    rows = [i % 7 for i in range(len(records))]
    got = duplicate_of(dedup_keys, keys, files, rows, seed)
    assert list(got) == ref.exact_survivors(dedup_keys, keys, list(zip(files, rows, strict=True)), seed)
    perm = list(range(len(records)))
    rnd.shuffle(perm)
    shuffled = duplicate_of(
        [dedup_keys[i] for i in perm], [keys[i] for i in perm], np.take(files, perm), np.take(rows, perm), seed
    )
    back = np.full(len(records), -1)
    back[perm] = [perm[s] if s >= 0 else -1 for s in shuffled]
    assert list(back) == list(got)


@settings(max_examples=100, deadline=None)
@given(_records, st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_min_over_candidates_is_the_survivor_for_any_merge_tree(records, seed, rnd):
    """What a CombinePerKey does: candidates merged in any grouping give survivor_index's member."""
    keys = [r[1] for r in records]
    files, rows = list(range(len(records))), [0] * len(records)
    cands = candidates(keys, files, rows, seed)
    rnd.shuffle(cands)
    cut = rnd.randint(0, len(cands))
    parts = [c for c in (cands[:cut], cands[cut:]) if c]
    merged = min(min(part) for part in parts)
    best = survivor_index([c.draw for c in cands], [c.source_file for c in cands], [c.source_row for c in cands])
    assert merged == cands[best]
    assert isinstance(merged, Candidate)


def test_equal_sample_keys_go_to_the_earlier_position():
    # same sample key three times: equal draws, so file then row decide
    assert survivor_index([0.5, 0.5, 0.5], [2, 1, 1], [0, 9, 3]) == 2
    assert list(duplicate_of(["u", "u", "u"], ["k", "k", "k"], [2, 1, 1], [0, 9, 3], 0)) == [2, 2, -1]


def test_records_without_a_key_are_never_duplicates():
    assert list(duplicate_of([None, None, "x"], ["a", "a", "b"], [0, 0, 0], [0, 1, 2], 3)) == [-1, -1, -1]


def test_the_smallest_draw_survives():
    keys = [f"k{i}" for i in range(50)]
    draws = [ref.draw(11, k + "\x00dedup") for k in keys]
    got = duplicate_of(["same"] * 50, keys, [0] * 50, list(range(50)), 11)
    winner = int(np.argmin(draws))
    assert got[winner] == -1 and all(got[i] == winner for i in range(50) if i != winner)


def test_chain_runs_text_on_the_url_survivors():
    urls = ["a", "a", None, "b"]
    texts = ["t", "x", "x", "x"]
    keys = ["k0", "k1", "k2", "k3"]
    dup, kind = chain_duplicate_of([urls, texts], keys, [0] * 4, range(4), 5)
    url_dup = duplicate_of(urls, keys, [0] * 4, range(4), 5)
    loser = 0 if url_dup[0] >= 0 else 1
    assert dup[loser] == 1 - loser and kind[loser] == 0
    alive = [i for i in range(4) if i != loser]
    text_dup = ref.exact_survivors([texts[i] for i in alive], [keys[i] for i in alive], [(0, i) for i in alive], 5)
    for pos, i in enumerate(alive):
        assert dup[i] == (alive[text_dup[pos]] if text_dup[pos] >= 0 else -1)
        assert kind[i] == (1 if text_dup[pos] >= 0 else -1)


def test_text_does_not_see_the_url_duplicates():
    """Two records of one image with one caption: the url kind removes one, text then has nothing left to do."""
    dup, kind = chain_duplicate_of([["a", "a"], ["x", "x"]], ["k0", "k1"], [0, 0], [0, 1], 3)
    assert sorted(kind) == [-1, 0] and sorted(dup) == [-1, int(np.argmin(kind))]
