"""The in-memory SemDeDup (transforms.dedup.local) against SemDeDup written from the spec.

tests/semdedup_reference.py imports nothing from the package: it sorts each cluster part
and reads the literal triu(S) matrix. On a pool with planted exact copies, near copies and
pairs within 1e-7 of 1 - eps: the same clusters, parts, duplicates and duplicate_of, and
scores within 1e-12 (the reference normalises its rows its own way, so the last bits of a
score may differ; the flags may not). The k-means fit against a plain float64 spherical
k-means from the same start. The Beam transform is checked against local.py bit for bit
(tests/pipeline/test_semdedup_transform.py), so these together tie it to the spec.
"""

from __future__ import annotations

import numpy as np
import pytest
import semdedup_reference as ref
from semdedup_pool import EPS, planted_pool

from transforms.dedup.kmeans import fit_centroids
from transforms.dedup.local import semdedup_in_memory
from transforms.dedup.semdedup import assign_clusters, normalise_embeddings, prepare_centroids


def _compare(x, keys, files, rows, centroids, *, seed, eps, keep, cap):
    got = semdedup_in_memory(
        x, keys, files, rows, seed=seed, centroids=centroids, eps=eps, keep=keep, max_cluster_size=cap
    )
    want = ref.semdedup(
        x, keys, list(zip(files.tolist(), rows.tolist(), strict=True)), centroids, seed=seed, eps=eps, keep=keep,
        max_cluster_size=cap,
    )  # fmt: skip
    assert got.cluster.tolist() == [w["cluster"] for w in want]
    assert got.part.tolist() == [w["part"] for w in want]
    assert got.duplicate.tolist() == [w["duplicate"] for w in want]
    assert got.duplicate_of.tolist() == [-1 if w["of"] is None else w["of"] for w in want]
    want_scores = np.array([-np.inf if w["score"] is None else w["score"] for w in want])
    assert np.array_equal(np.isinf(got.score), np.isinf(want_scores))
    finite = np.isfinite(want_scores)
    np.testing.assert_allclose(got.score[finite], want_scores[finite], rtol=0, atol=1e-12)
    return got


@pytest.mark.parametrize(
    ("seed", "keep", "eps", "cap"),
    [
        (0, "hard", EPS, None),
        (1, "easy", EPS, None),
        (2, "hard", 0.05, None),
        (3, "hard", EPS, 40),
        (4, "easy", EPS, 25),
    ],
)
def test_local_semdedup_equals_the_spec_reading(seed, keep, eps, cap):
    x, keys, files, rows, centroids = planted_pool(seed)
    got = _compare(x, keys, files, rows, centroids, seed=seed, eps=eps, keep=keep, cap=cap)
    assert 20 <= got.duplicate.sum() <= len(x) // 3  # the planted copies are found, not everything
    if cap:
        assert got.clusters_split > 0 and got.part.max() > 0


def test_the_planted_pairs_at_the_threshold_fall_on_both_sides():
    x, keys, files, rows, centroids = planted_pool(0)
    got = semdedup_in_memory(x, keys, files, rows, seed=0, centroids=centroids, eps=EPS, max_cluster_size=None)
    near = np.abs(got.score - (1 - EPS)) < 1e-5
    assert got.duplicate[near].any() and not got.duplicate[near].all()


@pytest.mark.parametrize(("seed", "k", "iterations"), [(0, 6, 20), (5, 4, 3), (6, 9, 20)])
def test_fit_equals_a_plain_spherical_kmeans_from_the_same_start(seed, k, iterations):
    x, keys, files, rows, _ = planted_pool(seed, n_base=200)
    fit = fit_centroids(x, keys, files, rows, k=k, seed=seed, iterations=iterations)
    want = ref.spherical_kmeans(
        x, keys, list(zip(files.tolist(), rows.tolist(), strict=True)), k=k, seed=seed, iterations=iterations
    )
    np.testing.assert_allclose(fit.centroids, want, rtol=0, atol=1e-12)
    xn, usable = normalise_embeddings(x)
    assigned, _ = assign_clusters(xn, prepare_centroids(fit.centroids), usable)
    want_assigned = ((xn[:, None, :] * (want / np.linalg.norm(want, axis=1, keepdims=True))[None]).sum(2)).argmax(1)
    assert assigned.tolist() == want_assigned.tolist()
