"""SemDeDup (docs/dedup.md): the blocked pairwise rule against the literal n x n `triu` rule.

The reference (tests/dedup_reference.py) is plain numpy from the spec: float64, the whole
similarity matrix per cluster. The pool plants exact copies (equal scores: ties), near
copies, and pairs whose cosine is 1 - eps +- 1e-9 .. 3e-6, closer than float32 can tell.
"""

from __future__ import annotations

import dedup_reference as ref
import numpy as np
import pytest

from transforms.dedup.kmeans import fit_centroids
from transforms.dedup.local import semdedup_in_memory
from transforms.dedup.pairwise import duplicates, earlier_maxima, first_copies, removed_fraction
from transforms.dedup.semdedup import (
    assign_clusters,
    cluster_parts,
    deduplicate_cluster,
    deduplicate_members,
    normalise_embeddings,
    order_bits,
    prepare_centroids,
)

EPS = 0.01


def _unit(v):
    return v / np.linalg.norm(v)


def planted_pool(seed: int, n_base: int = 120, d: int = 24):
    """Random base rows plus exact copies, near copies and pairs at cosine 1 - EPS +- delta."""
    rng = np.random.default_rng(seed)
    rows = [_unit(v) for v in rng.normal(size=(n_base, d))]
    for i in rng.choice(n_base, 15, replace=False):  # exact copies, some twice
        rows += [rows[i]] * int(rng.integers(1, 3))
    for i in rng.choice(n_base, 15, replace=False):  # near copies at several distances
        rows.append(_unit(rows[i] + rng.choice([1e-4, 1e-2, 0.1, 0.14]) * rng.normal(size=d)))
    for delta in (-3e-6, -1e-7, -1e-9, 1e-9, 1e-7, 3e-6):  # cosine 1 - EPS + delta to an existing row
        base = rows[int(rng.integers(n_base))]
        z = _unit(rng.normal(size=d))
        z = _unit(z - (z @ base) * base)
        c = 1 - EPS + delta
        rows.append(c * base + np.sqrt(1 - c * c) * z)
    # not normalised on input; powers of two keep exact copies exact after normalisation
    x = np.array(rows) * 2.0 ** rng.integers(-2, 3, size=(len(rows), 1))
    order = rng.permutation(len(x))
    keys = [f"key-{i % (len(x) - 3)}" for i in range(len(x))]  # three sample keys appear twice
    return x[order], keys, rng.normal(size=(4, d))


def run_package(x, keys, centroids, seed, eps, keep="hard", max_cluster_size=None, block_rows=2048):
    """The pure functions in the order a stage calls them; per record (duplicate, of, score, cluster, part)."""
    n = len(x)
    files, rows = np.arange(n) // 50, np.arange(n) % 50
    xn, usable = normalise_embeddings(x)
    assert usable.all()
    cluster, sim = assign_clusters(xn, prepare_centroids(centroids))
    bits = order_bits(keys, seed)
    dup, of, score, part = np.zeros(n, bool), np.full(n, -1), np.full(n, -np.inf), np.zeros(n, int)
    for k in np.unique(cluster):
        m = np.flatnonzero(cluster == k)
        p, res = deduplicate_cluster(
            xn[m], sim[m], bits[m], files[m], rows[m], eps=eps, keep=keep,
            max_cluster_size=max_cluster_size, block_rows=block_rows,
        )  # fmt: skip
        dup[m], score[m], part[m] = res.duplicate, res.score, p
        of[m] = np.where(res.nearest >= 0, m[np.maximum(res.nearest, 0)], -1)
    return dup, of, score, cluster, part


@pytest.mark.parametrize(
    ("seed", "keep", "eps"), [(0, "hard", EPS), (1, "hard", EPS), (2, "easy", EPS), (3, "hard", 0.1)]
)
def test_package_equals_the_literal_rule_on_a_planted_pool(seed, keep, eps):
    x, keys, centroids = planted_pool(seed)
    n = len(x)
    positions = [(i // 50, i % 50) for i in range(n)]
    want_dup, want_of, want_score = ref.semdedup_literal(x, keys, positions, centroids, seed, eps, keep)
    dup, of, score, _, _ = run_package(x, keys, centroids, seed, eps, keep)
    assert list(dup) == want_dup
    assert list(of) == want_of
    np.testing.assert_allclose(score, want_score, rtol=0, atol=1e-12)
    assert 20 < sum(want_dup) < n // 2  # the pool does plant duplicates, and not only


def test_near_threshold_pairs_are_decided_in_float64():
    """Scores 1 - eps +- 1e-9: float32 cannot tell them apart, the flag still follows float64."""
    x, keys, centroids = planted_pool(5)
    dup, _, score, _, _ = run_package(x, keys, centroids, 5, EPS)
    near = np.abs(score - (1 - EPS)) < 1e-6
    assert near.sum() >= 4
    assert set(dup[near]) == {False, True}
    assert list(dup[near]) == list(score[near] > 1 - EPS)


@pytest.mark.parametrize("block_rows", [1, 2, 3, 7, 64])
def test_blocked_equals_unblocked_bit_for_bit(block_rows):
    x, _, _ = planted_pool(7)
    xn, _ = normalise_embeddings(x)
    whole = earlier_maxima(xn, block_rows=len(xn))
    blocked = earlier_maxima(xn, block_rows=block_rows)
    assert whole[0].tobytes() == blocked[0].tobytes()
    assert list(whole[1]) == list(blocked[1])


@pytest.mark.parametrize("block_rows", [1, 2, 3, 100])
def test_earlier_maxima_ties_go_to_the_earlier_member(block_rows):
    v = _unit(np.arange(1.0, 9.0))
    w = _unit(v + 0.01)
    score, nearest = earlier_maxima(np.array([w, v, v, v, w]), block_rows=block_rows)
    assert list(nearest) == [-1, 0, 1, 1, 0]
    assert score[0] == -np.inf and score[2] == score[3]
    # distinct rows with exactly equal scores 0.6 to e1 (within and across row blocks)
    e = np.eye(8)
    x = np.array([0.6 * e[0] + 0.8 * e[k] for k in range(1, 7)] + [e[0]])
    score, nearest = earlier_maxima(x, block_rows=block_rows)
    assert nearest[6] == 0 and score[6] == 0.6


def test_members_in_any_arrival_order_give_the_same_answer():
    x, keys, centroids = planted_pool(9)
    xn, _ = normalise_embeddings(x)
    cluster, sim = assign_clusters(xn, prepare_centroids(centroids))
    m = np.flatnonzero(cluster == np.bincount(cluster).argmax())
    bits = order_bits([keys[i] for i in m], 9)
    files, rows = np.zeros(len(m), int), m
    base = deduplicate_members(xn[m], sim[m], bits, files, rows)
    perm = np.random.default_rng(1).permutation(len(m))
    moved = deduplicate_members(xn[m][perm], sim[m][perm], bits[perm], files[perm], rows[perm])
    assert list(moved.rank) == list(base.rank[perm])
    assert list(moved.duplicate) == list(base.duplicate[perm])
    assert list(perm[np.maximum(moved.nearest, 0)] * (moved.nearest >= 0)) == list(
        base.nearest[perm] * (moved.nearest >= 0)
    )


def test_large_cluster_split_is_the_literal_rule_per_part_and_only_misses():
    x, keys, centroids = planted_pool(11)
    n = len(x)
    positions = [(i // 50, i % 50) for i in range(n)]
    whole_dup, _, whole_score, cluster, _ = run_package(x, keys, centroids, 11, EPS)
    dup, of, score, _, part = run_package(x, keys, centroids, 11, EPS, max_cluster_size=20)
    assert part.max() >= 2
    assert not (dup & ~whole_dup).any() and (score <= whole_score).all()
    assert (dup != whole_dup).any()  # it does miss pairs across parts
    for key in set(zip(cluster, part, strict=True)):  # each part alone is the literal rule on its members
        m = [i for i in range(n) if (cluster[i], part[i]) == key]
        sub = ref.semdedup_literal(x[m], [keys[i] for i in m], [positions[i] for i in m], centroids[[key[0]]], 11, EPS)
        assert list(dup[m]) == sub[0]
        assert list(of[m]) == [m[j] if j >= 0 else -1 for j in sub[1]]


def test_parts_are_the_order_bits_modulo_the_part_count():
    bits = order_bits([f"k{i}" for i in range(1000)], 3)
    parts = cluster_parts(bits, 1000, 300)
    assert list(parts) == [int(b % 4) for b in bits]
    assert set(cluster_parts(bits, 1000, None)) == {0} and set(cluster_parts(bits, 1000, 1000)) == {0}


def test_removed_fraction_curve_is_the_flag_at_each_eps():
    x, keys, centroids = planted_pool(13)
    _, _, score, _, _ = run_package(x, keys, centroids, 13, EPS)
    grid = np.geomspace(1e-4, 0.2, 25)
    curve = removed_fraction(score, grid)
    for eps, fraction in zip(grid, curve, strict=True):
        assert fraction == np.mean(score > 1 - eps)
    for i in (0, 12, 24):  # and the runs at those eps remove exactly that fraction
        assert curve[i] == np.mean(run_package(x, keys, centroids, 13, grid[i])[0])
    assert (np.diff(curve) >= 0).all() and curve[-1] > curve[0]


def test_unusable_rows_are_flagged_and_clustered_nowhere():
    xn, usable = normalise_embeddings(np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0]]))
    assert list(usable) == [True, False, False, False]
    cluster, sim = assign_clusters(xn, prepare_centroids(np.array([[0.0, 2.0], [3.0, 0.0]])))
    assert list(cluster) == [1, -1, -1, -1] and sim[0] == 1.0 and np.isnan(sim[1:]).all()


def test_the_flag_is_strictly_above_one_minus_eps():
    at = np.array([1.0 - EPS, np.nextafter(1.0 - EPS, 2.0), -np.inf])
    assert list(duplicates(at, EPS)) == [False, True, False]
    assert list(removed_fraction(at, [EPS])) == [1 / 3]


def test_near_tied_earlier_members_are_told_apart_in_float64():
    """Earlier members at cosines c and c + 1e-9 to the last one: float32 cannot order them,
    the answer (nearest, score) is the float64 argmax of the literal rule."""
    rng = np.random.default_rng(17)
    d, found = 256, []
    for _ in range(40):
        j = _unit(rng.normal(size=d))
        rows = []
        for c in (0.7, 0.7 + rng.choice([-1e-9, 1e-9]), 0.7 + rng.choice([-2e-9, 2e-9])):
            z = _unit(rng.normal(size=d))
            z = _unit(z - (z @ j) * j)
            rows.append(c * j + np.sqrt(1 - c * c) * z)
        x = np.array(rows + [j])
        s = x @ x.T
        score, nearest = earlier_maxima(x)
        assert nearest[3] == int(np.argmax(s[:3, 3]))
        assert abs(score[3] - s[:3, 3].max()) < 1e-15
        found.append(int(np.argmax((x.astype(np.float32) @ x[3].astype(np.float32))[:3])) != nearest[3])
    assert sum(found) >= 5  # float32 alone would have picked another member this often


def test_a_cluster_of_identical_rows_is_linear_and_literal():
    """Bit-identical copies (a placeholder image): each copy's nearest is the first copy."""
    rng = np.random.default_rng(3)
    a, b = _unit(rng.normal(size=32)), _unit(rng.normal(size=32))
    x = np.array([b] + [a] * 3000 + [b, _unit(a + 1e-3)])
    assert list(first_copies(x)) == [0, 1, 3002]
    score, nearest = earlier_maxima(x, block_rows=512)
    s = x @ x.T
    want = [-1] + [int(np.argmax(s[:j, j])) for j in range(1, len(x))]
    assert list(nearest) == want and nearest[3001] == 0 and set(nearest[2:3001]) == {1}
    np.testing.assert_allclose(score[1:], [s[:j, j].max() for j in range(1, len(x))], rtol=0, atol=1e-15)


def test_in_memory_run_equals_the_literal_rule_and_fits_when_asked():
    x, keys, centroids = planted_pool(21)
    x = np.vstack([x, np.zeros((1, x.shape[1]))])  # an unusable row: clustered nowhere
    keys = keys + ["zero"]
    n = len(x)
    files, rows = np.arange(n) // 50, np.arange(n) % 50
    got = semdedup_in_memory(x, keys, files, rows, seed=21, centroids=centroids, max_cluster_size=None)
    want_dup, want_of, _ = ref.semdedup_literal(
        x[:-1], keys[:-1], list(zip(files, rows, strict=True)), centroids, 21, EPS
    )
    assert list(got.duplicate[:-1]) == want_dup and not got.duplicate[-1] and got.cluster[-1] == -1
    assert list(got.duplicate_of[:-1]) == [o if d else -1 for d, o in zip(want_dup, want_of, strict=True)]
    assert got.clusters_split == 0
    fitted = semdedup_in_memory(x, keys, files, rows, seed=21, clusters=3, iterations=5)
    assert (
        fitted.centroids.tobytes()
        == fit_centroids(x, keys, files, rows, k=3, seed=21, iterations=5).centroids.tobytes()
    )
    sizes = np.sort(np.bincount(got.cluster[:-1]))
    cap = int(sizes[-2])  # only the largest cluster is over it
    split = semdedup_in_memory(x, keys, files, rows, seed=21, centroids=centroids, max_cluster_size=cap)
    assert sizes[-1] > cap and split.clusters_split == 1 and split.part.max() >= 1
    assert not (split.duplicate & ~got.duplicate).any()
