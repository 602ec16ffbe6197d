"""SemDeDup's k-means (docs/dedup.md, "Fitting"): the literal fit, and sums exact in any order."""

from __future__ import annotations

import dedup_reference as ref
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.dedup.kmeans import (
    batch_sums,
    empty_sums,
    fit_centroids,
    fixed_point,
    initial_centroids,
    initial_indices,
    merge_sums,
    next_centroids,
    start_candidates,
    step_sums,
    sums_as_float,
)
from transforms.dedup.semdedup import assign_clusters, normalise_embeddings, prepare_centroids


def blob_pool(seed: int, n: int = 600, d: int = 16, k: int = 6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(k, size=n)] + rng.normal(scale=0.8, size=(n, d))
    keys = [f"img-{seed}-{i}" for i in range(n)]
    return x, keys, np.arange(n) // 100, np.arange(n) % 100


@pytest.mark.parametrize(("seed", "k", "iterations"), [(0, 6, 20), (1, 4, 3), (2, 9, 20), (3, 1, 5)])
def test_fit_equals_an_independent_spherical_kmeans_with_the_same_start(seed, k, iterations):
    x, keys, files, rows = blob_pool(seed)
    positions = list(zip(files, rows, strict=True))
    want = ref.kmeans_literal(x, keys, positions, k, seed, iterations)
    fit = fit_centroids(x, keys, files, rows, k=k, seed=seed, iterations=iterations)
    np.testing.assert_allclose(fit.centroids, want, rtol=0, atol=1e-12)
    xn, _ = normalise_embeddings(x)
    got_assign = assign_clusters(xn, prepare_centroids(fit.centroids))[0]
    assert list(got_assign) == list(np.argmax(xn @ want.T, axis=1))
    assert fit.iterations <= iterations and (fit.converged or fit.iterations == iterations)


def test_initial_centroids_are_the_smallest_order_draws():
    x, keys, files, rows = blob_pool(4, n=200)
    got = initial_indices(keys, np.ones(200, bool), files, rows, 4, 7)
    want = sorted(range(200), key=lambda i: ref.draw(4, keys[i] + "\x00order"))[:7]
    assert list(got) == want
    unusable = np.ones(200, bool)
    unusable[want[0]] = False
    assert want[0] not in initial_indices(keys, unusable, files, rows, 4, 7)
    with pytest.raises(ValueError, match="at least 300"):
        initial_indices(keys, np.ones(200, bool), files, rows, 4, 300)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.randoms(use_true_random=False))
def test_sums_are_bit_identical_for_any_order_and_partition(seed, pieces, rnd):
    """The sums a Beam combiner merges: any permutation, any split into batches, any merge order."""
    rng = np.random.default_rng(seed)
    xn, _ = normalise_embeddings(rng.normal(size=(300, 8)) * 10.0 ** rng.integers(-6, 3, size=(300, 1)))
    clusters = rng.integers(-1, 5, size=300)  # -1: unusable rows, left out
    whole = batch_sums(xn, clusters, 5)
    perm = rng.permutation(300)
    cuts = sorted(rnd.sample(range(1, 300), pieces - 1)) if pieces > 1 else []
    parts = [batch_sums(xn[p], clusters[p], 5) for p in np.split(perm, cuts)]
    rnd.shuffle(parts)
    merged = merge_sums([empty_sums(5, 8)] + parts)
    for a, b in zip(whole[:3], merged[:3], strict=True):
        assert a.tobytes() == b.tobytes()
    exact = [[sum(int(q) for q in np.rint(xn[clusters == c, j] * 2.0**52)) for j in range(8)] for c in range(5)]
    assert (whole.hi.astype(object) * 2**26 + whole.lo.astype(object)).tolist() == exact
    assert list(whole.counts) == list(np.bincount(clusters[clusters >= 0], minlength=5))


def test_fixed_point_splits_exactly():
    v = np.array([-1.0, 1.0, 0.0, -0.0, 2.0**-60, -(2.0**-53), 0.123456789, -0.987654321])
    hi, lo = fixed_point(v)
    assert ((lo >= 0) & (lo < 2**26)).all()
    assert [int(h) * 2**26 + int(lo_) for h, lo_ in zip(hi, lo, strict=True)] == [int(q) for q in np.rint(v * 2.0**52)]
    assert sums_as_float(batch_sums(v[:, None], np.zeros(len(v), int), 1))[0, 0] == pytest.approx(v.sum(), abs=1e-15)


def test_fit_is_bit_identical_across_batchings():
    x, keys, files, rows = blob_pool(5, n=500)
    a = fit_centroids(x, keys, files, rows, k=5, seed=5, iterations=6, batch_rows=500)
    b = fit_centroids(x, keys, files, rows, k=5, seed=5, iterations=6, batch_rows=37)
    assert a.centroids.tobytes() == b.centroids.tobytes()


def test_a_cluster_without_members_keeps_its_centroid():
    xn, _ = normalise_embeddings(np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]))
    centroids = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # centroid 1 ties with 0 and loses
    clusters = assign_clusters(xn, prepare_centroids(centroids))[0]
    assert list(clusters) == [0, 0, 2]
    new = next_centroids(batch_sums(xn, clusters, 3), centroids)
    assert list(new[1]) == [1.0, 0.0]
    np.testing.assert_allclose(new[0], (xn[0] + xn[1]) / np.linalg.norm(xn[0] + xn[1]), atol=1e-15)


def test_a_distributed_fit_from_its_pieces_is_the_in_memory_fit():
    """What a Beam loop does: start from the K smallest claims of every batch, then per iteration
    step_sums per batch (in any order) merged; bit-identical to fit_centroids."""
    x, keys, files, rows = blob_pool(6, n=400)
    xn, usable = normalise_embeddings(x)
    want = fit_centroids(x, keys, files, rows, k=5, seed=6, iterations=20)
    batches = [slice(s, s + 64) for s in range(0, 400, 64)][::-1]
    claims = [c for b in batches for c in start_candidates(keys[b], xn[b], usable[b], files[b], rows[b], 6)]
    centroids, previous, updates = initial_centroids(claims, 5), None, 0
    while updates < 20:
        sums = merge_sums([step_sums(xn[b], usable[b], centroids, previous) for b in batches])
        if previous is not None and sums.changed == 0:
            break
        centroids, previous, updates = next_centroids(sums, centroids), centroids, updates + 1
    assert updates == want.iterations and centroids.tobytes() == want.centroids.tobytes()
    assert 1 < updates < 20
