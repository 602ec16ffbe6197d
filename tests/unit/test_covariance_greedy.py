"""Cross-covariance selection (docs/selection.md): exact class sums, the greedy
against a brute-force oracle, invariances, budgets, and the independent reference."""

from __future__ import annotations

import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covariance_reference import budgets_for, reference_selection, tie_key
from transforms.core.hashing import key_hashes, splitmix64
from transforms.selection.budgets import class_budgets, num_parts, part_budgets, split_parts
from transforms.selection.covariance import (
    BATCH_ROWS,
    CrossCovSum,
    cross_cov_sum,
    greedy_select,
    mean_cosine,
    merge_sums,
    normalise_rows,
    objective,
    objective_two_ways,
    pseudo_classes,
    selected_sum,
    tie_keys,
)
from transforms.selection.local import select_in_memory

TWO40 = 2**40


def exact(v) -> list[list[Fraction]]:
    """Rows of normalise_rows output as exact Fractions (they are multiples of 2**-20)."""
    return [[Fraction(float(a)) for a in row] for row in np.asarray(v)]


def planted_pool(rng, n, d, num_classes=4, misaligned=0.18):
    """Clustered images, captions near their image except for a share of random ones."""
    centres = rng.normal(size=(num_classes, d))
    label = rng.integers(0, num_classes, size=n)
    x = centres[label] + 0.6 * rng.normal(size=(n, d))
    y = x + 0.4 * rng.normal(size=(n, d))
    wrong = rng.random(n) < misaligned
    y[wrong] = rng.normal(size=(int(wrong.sum()), d))
    return x, y, centres


# --- normalise, class sums --------------------------------------------------------------


def test_normalise_rows_unit_quantised_zero_stays_zero():
    v = np.array([[3.0, 4.0], [0.0, 0.0], [1e300, -1e300], [np.float16(1e-4), 0.0]])
    q = normalise_rows(v)
    assert q[0].tolist() == [np.rint(0.6 * 2**20) / 2**20, np.rint(0.8 * 2**20) / 2**20]
    assert q[1].tolist() == [0.0, 0.0] and q[3].tolist() == [1.0, 0.0]
    assert np.allclose(np.linalg.norm(q[[0, 2, 3]], axis=1), 1.0, atol=1e-6)
    assert np.all(np.rint(q * 2**20) == q * 2**20)
    with pytest.raises(ValueError):
        normalise_rows(np.array([[1.0, np.nan]]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), d=st.integers(1, 9))
def test_normalise_rows_depends_on_each_row_alone(seed, n, d):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d)).astype(np.float16)
    idx = rng.permutation(n)[: rng.integers(1, n + 1)]
    assert normalise_rows(v)[idx].tobytes() == normalise_rows(v[idx]).tobytes()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), d=st.integers(1, 6), cuts=st.integers(0, 8))
def test_class_sum_is_bit_identical_over_splits_and_orders(seed, n, d, cuts):
    rng = np.random.default_rng(seed)
    x, y = normalise_rows(rng.normal(size=(n, d))), normalise_rows(rng.normal(size=(n, d + 1)))
    whole = cross_cov_sum(x, y)
    perm = rng.permutation(n)
    bounds = np.sort(rng.integers(0, n + 1, size=cuts)).tolist()
    pieces = [cross_cov_sum(x[rows], y[rows]) for rows in np.split(perm, bounds)]
    rng.shuffle(pieces)
    merged = merge_sums(pieces)
    assert merged.count == whole.count == n
    assert merged.matrix().tobytes() == whole.matrix().tobytes()
    qx, qy = (x * 2**20).astype(np.int64).tolist(), (y * 2**20).astype(np.int64).tolist()
    truth = [[sum(rx[i] * ry[j] for rx, ry in zip(qx, qy, strict=True)) for j in range(d + 1)] for i in range(d)]
    assert merged.integer_matrix().tolist() == truth
    assert np.array_equal(merged.matrix(), np.array(truth, dtype=float) / TWO40)


def test_class_sum_chunks_large_batches_and_carries_between_limbs():
    rng = np.random.default_rng(1)
    x, y = (
        normalise_rows(rng.normal(size=(3 * BATCH_ROWS + 5, 3))),
        normalise_rows(rng.normal(size=(3 * BATCH_ROWS + 5, 3))),
    )
    one = cross_cov_sum(x, y)
    many = merge_sums(cross_cov_sum(x[i : i + 1000], y[i : i + 1000]) for i in range(0, len(x), 1000))
    assert one.integer_matrix().tolist() == many.integer_matrix().tolist()
    # 8192 products of 2**40 and one of 1: 2**53 + 1 is exact only with batches of <= 8192 rows.
    e = np.zeros((BATCH_ROWS + 1, 2))
    e[:, 0] = 1.0
    e[-1] = normalise_rows([[2.0**-20, 1.0]])[0]
    assert e[-1, 0] == 2.0**-20
    assert cross_cov_sum(e, e).integer_matrix()[0, 0] == 2**53 + 1
    # Basis vectors: every product is 2**40, one full batch sums to 2**53. Doubling by
    # merging an accumulator with itself 30 times goes far beyond int64 (2**83).
    e = np.zeros((BATCH_ROWS, 2))
    e[:, 0] = 1.0
    big = cross_cov_sum(e, -e)
    for _ in range(30):
        big.merge(big)
    assert big.count == BATCH_ROWS * 2**30
    assert big.integer_matrix().tolist() == [[-(2**83), 0], [0, 0]]
    assert big.matrix()[0, 0] == -(2.0**43)
    back = pickle.loads(pickle.dumps(big))
    assert back.integer_matrix().tolist() == big.integer_matrix().tolist() and back.count == big.count
    plus = merge_sums([cross_cov_sum(e, e) for _ in range(8)])  # 2**56
    assert merge_sums([big, plus, back]).integer_matrix()[0, 0] == 2**56 - 2**84
    # Cancellation is exact: +2**83 - 2**83 + 3 rows leaves exactly 3.
    opposite = cross_cov_sum(e, e)
    for _ in range(30):
        opposite.merge(opposite)
    assert merge_sums([big, cross_cov_sum(e[:3], e[:3]), opposite]).matrix()[0, 0] == 3.0
    with pytest.raises(ValueError):
        CrossCovSum().add_batch(np.array([[0.3, 0.4]]), np.array([[1.0, 0.0]]))  # not quantised
    with pytest.raises(ValueError):
        cross_cov_sum(e[:1], e[:1, :1]).merge(cross_cov_sum(e[:1], e[:1]))


# --- classes and tie keys -----------------------------------------------------------------


def test_pseudo_classes_argmax_lowest_on_ties_and_one_class_without_embeddings():
    x = normalise_rows(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]]))
    w = np.array([[5.0, 0.0], [0.0, 0.1], [0.0, 3.0]])  # rows 1 and 2 are the same direction
    assert pseudo_classes(x, w).tolist() == [0, 1, 0, 1, 0]
    assert pseudo_classes(x, None).tolist() == [0] * 5
    assert pseudo_classes(x, np.zeros((0, 2))).tolist() == [0] * 5


def test_tie_keys_formula_and_reference():
    keys = [f"sample-{i}" for i in range(50)]
    hashes = key_hashes(keys)
    for seed in (0, 7, 2**64 - 1):
        mixed = splitmix64(np.array([seed], dtype=np.uint64))[0]
        assert np.array_equal(tie_keys(hashes, seed), splitmix64(hashes ^ mixed))
        assert tie_keys(hashes, seed).tolist() == [tie_key(k, seed) for k in keys]
    assert not np.array_equal(tie_keys(hashes, 1), tie_keys(hashes, 2))


# --- the greedy against a brute-force oracle ---------------------------------------------


def plus_outer(c, a, b):
    """c + a b^T, on nested lists of Fractions."""
    return [[v + ai * bj for v, bj in zip(row, b, strict=True)] for row, ai in zip(c, a, strict=True)]


def exact_objective(target, chosen_sum):
    """F(S) = 2<T, C_S> - ||C_S||_F^2, exactly."""
    pairs = (ts for trow, crow in zip(target, chosen_sum, strict=True) for ts in zip(trow, crow, strict=True))
    return sum(2 * t * s - s * s for t, s in pairs)


def oracle_gains(xs, ys, target, chosen_sum, candidates):
    """Exact F(S + i) - F(S) from the d x d matrices, for each candidate i."""
    base = exact_objective(target, chosen_sum)
    return {i: exact_objective(target, plus_outer(chosen_sum, xs[i], ys[i])) - base for i in candidates}


def check_against_oracle(x, y, class_x, class_y, budget, tie):
    """Follows greedy_select's picks and checks each against the exact marginal gains."""
    xs, ys = exact(x), exact(y)
    class_matrix = cross_cov_sum(class_x, class_y)
    n = len(class_x)
    ci = class_matrix.integer_matrix()
    target = [[Fraction(budget) * Fraction(int(v), TWO40) / n for v in row] for row in ci]
    picks = greedy_select(x, y, class_matrix.matrix(), n, budget, tie)
    assert len(picks) == budget == len(set(picks.tolist()))
    d_x, d_y = x.shape[1], y.shape[1]
    chosen = [[Fraction(0)] * d_y for _ in range(d_x)]
    left = set(range(len(x)))
    for p in picks.tolist():
        gains = oracle_gains(xs, ys, target, chosen, left)
        best = max(gains.values())
        near = [i for i in left if best - gains[i] <= 1e-9]
        assert p in near, (p, gains)
        if all(xs[i] == xs[near[0]] and ys[i] == ys[near[0]] for i in near):
            assert p == min(near, key=lambda i: int(tie[i]))  # identical rows: the smaller tie key
        chosen = plus_outer(chosen, xs[p], ys[p])
        left.remove(p)
    final = [[float(v) for v in row] for row in chosen]
    exact_f = float(exact_objective(target, chosen))
    for value in objective_two_ways(np.array([[float(t) for t in r] for r in target]), final):
        assert value == pytest.approx(exact_f, abs=1e-9)
    assert selected_sum(x, y, picks) == pytest.approx(np.array(final), abs=1e-12)
    return picks


small_rows = st.lists(st.integers(-2, 2), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 12),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    integer_entries=st.booleans(),
)
def test_greedy_pick_is_the_exact_argmax_at_every_step(data, n, d, seed, integer_entries):
    rng = np.random.default_rng(seed)
    if integer_entries:  # duplicates, zero rows and exact ties
        raw_x = rng.integers(-2, 3, size=(n, d)).astype(float)
        raw_y = rng.integers(-2, 3, size=(n, d)).astype(float)
    else:
        raw_x, raw_y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    cx, cy = normalise_rows(raw_x), normalise_rows(raw_y)
    held = np.sort(rng.permutation(n)[: data.draw(st.integers(1, n))])  # a part of the class
    budget = data.draw(st.integers(0, len(held)))
    tie = rng.integers(0, 2**64, size=len(held), dtype=np.uint64)
    check_against_oracle(cx[held], cy[held], cx, cy, budget, tie)


def test_exact_ties_go_to_the_smaller_tie_key():
    # Basis vectors and a class of 8: every float64 step is exact, so ties are exact.
    rng = np.random.default_rng(5)
    for _ in range(30):
        x = np.eye(3)[rng.integers(0, 3, size=8)]
        y = np.eye(3)[rng.integers(0, 3, size=8)]
        tie = rng.permutation(2**40 + np.arange(8)).astype(np.uint64)
        picks = check_against_oracle(x, y, x, y, int(rng.integers(1, 9)), tie)
        assert picks[0] == min(range(8), key=lambda i: (-float(x[i] @ (x.T @ y) @ y[i]), int(tie[i])))
    same = np.tile([[1.0, 0.0]], (6, 1))
    tie = np.array([9, 3, 7, 1, 8, 2], dtype=np.uint64)
    assert greedy_select(same, same, 6 * np.outer(same[0], same[0]), 6, 6, tie).tolist() == [3, 5, 1, 2, 4, 0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), perm_seed=st.integers(0, 2**32 - 1))
def test_greedy_is_invariant_to_row_order(seed, perm_seed):
    rng = np.random.default_rng(seed)
    x, y, _ = planted_pool(rng, 150, 8)
    x, y = normalise_rows(x), normalise_rows(y)
    tie = tie_keys(key_hashes([f"k{i}" for i in range(150)]), seed)
    class_matrix = cross_cov_sum(x, y).matrix()
    perm = np.random.default_rng(perm_seed).permutation(150)
    picks = greedy_select(x, y, class_matrix, 150, 45, tie)
    permuted = greedy_select(x[perm], y[perm], cross_cov_sum(x[perm], y[perm]).matrix(), 150, 45, tie[perm])
    assert perm[permuted].tolist() == picks.tolist()


def test_duplicate_tie_keys_fall_back_to_the_rows():
    # The same key twice (a duplicate sample) with different embeddings: still order-free.
    rng = np.random.default_rng(3)
    x, y = normalise_rows(rng.normal(size=(40, 5))), normalise_rows(rng.normal(size=(40, 5)))
    tie = np.repeat(rng.integers(0, 2**64, size=20, dtype=np.uint64), 2)
    c = cross_cov_sum(x, y).matrix()
    picks = greedy_select(x, y, c, 40, 15, tie)
    for _ in range(5):
        perm = rng.permutation(40)
        assert perm[greedy_select(x[perm], y[perm], c, 40, 15, tie[perm])].tolist() == picks.tolist()
    # An exact tie between different rows under one key: the rows decide, not their order.
    e = np.eye(2)
    same = np.array([5, 5], dtype=np.uint64)
    assert greedy_select(e, e, e, 2, 1, same).tolist() == [1]
    assert greedy_select(e[::-1], e[::-1], e, 2, 1, same).tolist() == [0]


def float_gaps(x, y, class_matrix, n, picks):
    """Smallest gap between the best and the second-best gain along the pick path."""
    target = class_matrix * len(picks) / n
    chosen = np.zeros_like(target)
    gaps = []
    left = list(range(len(x)))
    for p in picks:
        g = np.array([2 * x[i] @ (target - chosen) @ y[i] - (x[i] @ x[i]) * (y[i] @ y[i]) for i in left])
        top = np.sort(g)[::-1]
        gaps.append(top[0] - top[1] if len(top) > 1 else np.inf)
        chosen += np.outer(x[p], y[p])
        left.remove(p)
    return min(gaps)


def test_greedy_is_invariant_to_a_common_rotation_on_a_pool_with_clear_gaps():
    # Quantising after normalising is not rotation invariant (it moves each component by up
    # to 2**-21), so exact invariance needs a pool whose greedy path has no near-ties: the
    # test first checks that this planted pool has gaps far above that perturbation.
    rng = np.random.default_rng(11)
    raw_x, raw_y, _ = planted_pool(rng, 30, 6, num_classes=3)
    x, y = normalise_rows(raw_x), normalise_rows(raw_y)
    tie = rng.integers(0, 2**64, size=30, dtype=np.uint64)
    picks = greedy_select(x, y, cross_cov_sum(x, y).matrix(), 30, 9, tie)
    assert float_gaps(x, y, cross_cov_sum(x, y).matrix(), 30, picks) > 1e-4
    for _ in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
        rx, ry = normalise_rows(raw_x @ q), normalise_rows(raw_y @ q)
        assert greedy_select(rx, ry, cross_cov_sum(rx, ry).matrix(), 30, 9, tie).tolist() == picks.tolist()


def test_objective_and_mean_cosine():
    t = np.array([[1.0, 2.0], [0.5, -1.0]])
    s = np.array([[0.5, 1.0], [1.0, 0.0]])
    assert objective(t, s) == 2 * (0.5 + 2.0 + 0.5) - (0.25 + 1 + 1)
    a, b = objective_two_ways(t, s)
    assert a == pytest.approx(b)
    assert mean_cosine([[1.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [1.0, 1.0]]) == 0.5
    assert np.isnan(mean_cosine(np.zeros((0, 2)), np.zeros((0, 2))))


# --- budgets --------------------------------------------------------------------------------


def test_class_budget_examples():
    assert class_budgets({0: 5}, 0.5) == {0: 2}  # round(2.5) == 2: banker's rounding
    assert class_budgets({0: 7}, 0.5) == {0: 4}  # round(3.5) == 4
    assert class_budgets({3: 3, 1: 3, 2: 4}, 0.5) == {1: 2, 2: 2, 3: 1}  # remainder tie: lower id
    # 0.1 * 3 - 0 and 0.1 * 13 - 1 are the same float, but exactly the second is larger.
    assert 0.1 * 3 - 0 == 0.1 * 13 - 1 and class_budgets({0: 3, 1: 13}, 0.1) == {0: 0, 1: 2}
    assert class_budgets({0: 10, 1: 3}, 1.0) == {0: 10, 1: 3}
    assert class_budgets({0: 10, 1: 3}, 0.0) == {0: 0, 1: 0}
    assert class_budgets({}, 0.3) == {}
    with pytest.raises(ValueError):
        class_budgets({0: 3}, 1.5)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.dictionaries(st.integers(-5, 1000), st.integers(0, 2000), max_size=8),
    fraction=st.one_of(st.floats(0, 1), st.sampled_from([0.1, 0.3, 0.7, 0.5, 1 / 3, 0.05])),
)
def test_class_budgets_largest_remainder(sizes, fraction):
    budgets = class_budgets(sizes, fraction)
    assert sum(budgets.values()) == round(fraction * sum(sizes.values()))
    assert all(0 <= budgets[c] <= n for c, n in sizes.items())
    assert budgets == budgets_for(sizes, fraction)


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 500), min_size=1, max_size=8), data=st.data())
def test_part_budgets_largest_remainder(sizes, data):
    k = data.draw(st.integers(0, sum(sizes)))
    shares = part_budgets(sizes, k)
    assert sum(shares) == k and all(0 <= s <= n for s, n in zip(shares, sizes, strict=True))
    total = max(sum(sizes), 1)
    want = [k * n // total for n in sizes]
    rems = sorted(range(len(sizes)), key=lambda p: (-(Fraction(k * sizes[p], total) - want[p]), p))
    for p in rems[: k - sum(want)]:
        want[p] += 1
    assert shares == want


def test_split_parts():
    h = key_hashes([f"k{i}" for i in range(10_000)])
    assert num_parts(10_000, 3_000) == 4 and num_parts(0, 5) == 1 and num_parts(7, None) == 1
    parts = split_parts(h, 10_000, 3_000)
    assert parts.min() == 0 and parts.max() == 3 and np.array_equal(parts, (h % np.uint64(4)).astype(np.int64))
    assert np.all(np.abs(np.bincount(parts) - 2_500) < 200)  # approximately equal
    assert split_parts(h, 10_000, None).tolist() == [0] * 10_000


# --- the whole selection against the independent reference --------------------------------


@pytest.mark.parametrize(
    ("seed", "n", "d", "fraction", "with_classes"),
    [(0, 300, 16, 0.3, True), (1, 250, 12, 0.25, True), (2, 200, 8, 0.4, False), (3, 320, 16, 0.1, True)],
)
def test_package_agrees_with_the_independent_reference(seed, n, d, fraction, with_classes):
    rng = np.random.default_rng(seed)
    x, y, centres = planted_pool(rng, n, d)
    x, y = x.astype(np.float16), y.astype(np.float16)
    w = centres if with_classes else None
    keys = [f"{seed}/{i:05d}" for i in range(n)]
    got = select_in_memory(key_hashes(keys), x, y, fraction, seed, w, batch_rows=64)
    want = reference_selection(keys, x, y, fraction, seed, w)
    assert got.budgets == want["budgets"]
    assert {keys[i] for i in got.kept} == want["kept"]
    assert len(got.kept) == round(fraction * n)


def test_package_and_reference_agree_on_exact_ties():
    # Five distinct rows, each repeated under several keys: only the tie keys decide which copies.
    rng = np.random.default_rng(8)
    base_x, base_y = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    which = rng.integers(0, 5, size=60)
    keys = [f"dup-{i}" for i in range(60)]
    for seed in (0, 1, 2):
        got = select_in_memory(key_hashes(keys), base_x[which], base_y[which], 0.3, seed)
        want = reference_selection(keys, base_x[which], base_y[which], 0.3, seed)
        assert {keys[i] for i in got.kept} == want["kept"]


def test_select_in_memory_with_parts():
    rng = np.random.default_rng(4)
    x, y, centres = planted_pool(rng, 600, 8, num_classes=2)
    got = select_in_memory(key_hashes([f"k{i}" for i in range(600)]), x, y, 0.3, 9, centres, max_class_size=100)
    assert len(got.kept) == 180 and sum(got.budgets.values()) == 180
    for c, shares in got.part_budgets.items():
        assert len(shares) == num_parts(int(np.sum(got.classes == c)), 100) and sum(shares) == got.budgets[c]
    assert np.array_equal(got.kept, np.unique(got.kept))
