"""Image-filter clusters: the inner-product argmax against a float64 oracle (docs/datacomp.md, "The rules")."""

from __future__ import annotations

import io
import math
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.filters.clusters import (
    error_bound,
    fast_argmax,
    load_centroids,
    load_target_clusters,
    nearest_centroids,
    prepare_centroids,
    read_cluster_spec,
    resolve_target_clusters,
    target_clusters,
)


def oracle(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Brute force, per row: the first index of the largest correctly rounded float64 inner product."""
    out = []
    for row in x:
        scores = oracle_scores(row, centroids)
        out.append(scores.index(max(scores)))
    return np.array(out, dtype=np.int64)


def oracle_scores(row: np.ndarray, centroids: np.ndarray) -> list[float]:
    row = row.astype(np.float64).tolist()
    return [math.fsum(a * b for a, b in zip(row, c, strict=True)) for c in centroids.astype(np.float64).tolist()]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class StreamOnly:
    """A non-seekable binary stream, as a remote file system may hand out."""

    def __init__(self, data: bytes):
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("block_bytes", [4 * 40 * 7, 64 << 20])  # 7 rows a block: 150 is not a multiple
def test_random_data_equals_the_oracle(dtype, block_bytes):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 32)).astype(dtype)
    centroids = (rng.normal(size=(40, 32)) * rng.uniform(0.5, 2, size=(40, 1))).astype(dtype)
    got = nearest_centroids(x, centroids, block_bytes=block_bytes)
    assert got.dtype == np.int64
    assert np.array_equal(got, oracle(x, centroids))


def test_inner_product_not_l2_distance():
    centroids = np.array([[1.0, 0.0], [3.0, 0.5], [0.0, 1.0]], dtype=np.float32)
    x = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    l2_nearest = np.linalg.norm(x[:, None] - centroids[None], axis=2).argmin(axis=1)
    assert l2_nearest.tolist() == [0, 2]
    assert nearest_centroids(x, centroids).tolist() == [1, 2] == oracle(x, centroids).tolist()


def test_exact_ties_go_to_the_lowest_index():
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(300, 64)).astype(np.float32)
    centroids[[171, 250, 299]] = centroids[17]  # duplicates, tail positions included
    x = centroids[[17] * 5] + rng.normal(scale=1e-3, size=(5, 64)).astype(np.float32)
    assert nearest_centroids(x, centroids).tolist() == [17] * 5
    assert nearest_centroids(np.zeros((2, 64), np.float32), centroids).tolist() == [0, 0]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda d: st.tuples(
            st.lists(st.lists(st.integers(-3, 3), min_size=d, max_size=d), min_size=0, max_size=12),
            st.lists(st.lists(st.integers(-3, 3), min_size=d, max_size=d), min_size=1, max_size=12),
            st.sampled_from([np.float16, np.float32, np.float64]),
        )
    )
)
def test_small_integer_vectors_full_of_ties(case):
    x, centroids, dtype = case
    width = len(centroids[0])
    x = np.array(x, dtype=dtype).reshape(-1, width)
    centroids = np.array(centroids, dtype=dtype)
    assert np.array_equal(nearest_centroids(x, centroids, block_bytes=4 * len(centroids) * 3), oracle(x, centroids))


def test_planted_near_ties_beat_the_float32_path():
    """Each row gets two candidates far ahead of the rest: a copy and the copy nudged by one
    float32 ulp per coordinate, the float64 winner placed second. Their gap is far below
    float32 rounding, so float32 ties them (first wins) or orders them wrongly."""
    rng = np.random.default_rng(4)
    d, n = 256, 200
    centroids = rng.normal(size=(2 * n + 50, d)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    for i in range(n):
        a = x[i] * 4 + rng.normal(size=d).astype(np.float32)
        b = np.nextafter(a, np.where(rng.random(d) < 0.5, np.float32(np.inf), np.float32(-np.inf)))
        pair = np.stack([a, b])
        centroids[2 * i : 2 * i + 2] = pair[np.argsort(oracle_scores(x[i], pair))]
    expected = oracle(x, centroids)
    assert np.array_equal(expected, 2 * np.arange(n) + 1)
    scores = x @ centroids.T
    rows = np.arange(n)
    assert (scores[rows, 2 * rows] > scores[rows, 2 * rows + 1]).sum() > 10  # misordered, not just tied
    fast = fast_argmax(x, prepare_centroids(centroids))
    assert (fast != expected).sum() > n // 4  # the float32 path alone gets many wrong
    assert np.array_equal(nearest_centroids(x, centroids), expected)


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(np.float32, 1.0), (np.float64, 1.0), (np.float16, 1.0), (np.float64, 1e-25), (np.float32, 1e18)],
)
def test_the_bound_holds_on_every_score(dtype, scale):
    """|float32 BLAS score - float64 score| <= error_bound, for every pair (underflow and large scales too)."""
    rng = np.random.default_rng(5)
    d = 768
    x = (rng.normal(size=(64, d)) * scale).astype(dtype)
    centroids = (rng.normal(size=(500, d)) * scale).astype(dtype)
    cents = prepare_centroids(centroids)
    with np.errstate(under="ignore"):
        s32 = (x.astype(np.float32) @ cents.as_float32.T).astype(np.float64)
    s64 = x.astype(np.float64) @ centroids.astype(np.float64).T
    bound = error_bound(np.linalg.norm(x.astype(np.float64), axis=1), cents.max_norm, d)
    ratio = np.abs(s32 - s64) / bound[:, None]
    assert ratio.max() <= 1.0
    print(f"{np.dtype(dtype).name} x{scale:g}: largest error / bound = {ratio.max():.2e}")


def test_sizes_and_non_finite_rows():
    rng = np.random.default_rng(6)
    one = rng.normal(size=(1, 8)).astype(np.float32)
    x = rng.normal(size=(9, 8)).astype(np.float32)
    assert nearest_centroids(x, one).tolist() == [0] * 9  # K = 1
    empty = nearest_centroids(np.zeros((0, 8), np.float32), x)
    assert empty.dtype == np.int64 and empty.shape == (0,)  # n = 0
    x[3, 2] = np.nan
    assert nearest_centroids(x, x[4:]).tolist()[3] == -1  # no cluster: the image filter drops it
    huge, big = rng.normal(size=(4, 8)) * 1e20, rng.normal(size=(20, 8)) * 1e20
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(huge.astype(np.float32) @ big.astype(np.float32).T).all()
    assert np.array_equal(nearest_centroids(huge, big), oracle(huge, big))  # float32 overflows: float64 rows
    # float32 gives inf - inf = NaN (and 1e39 casts to inf, inf * 0 = NaN): the true scores are 0 < 2e10, 1 < 2
    for x_row, cents in (([1e10, 1e10], [[1e30, -1e30], [1.0, 1.0]]), ([1e39, 1.0], [[0.0, 1.0], [0.0, 2.0]])):
        assert nearest_centroids(np.array([x_row]), np.array(cents)).tolist() == [1]
    with pytest.raises(ValueError, match="NaN"):
        prepare_centroids(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="width 8"):
        nearest_centroids(np.zeros((2, 5)), x[4:])


def test_target_clusters_and_the_asset_files(tmp_path):
    rng = np.random.default_rng(8)
    centroids = rng.normal(size=(30, 16)).astype(np.float32)
    features = rng.normal(size=(50, 16)).astype(np.float16)
    expected = np.unique(oracle(features, centroids))
    assert np.array_equal(target_clusters(features, centroids), expected)

    path = tmp_path / "centroids.npy"
    np.save(path, centroids)
    with open(path, "rb") as handle:
        assert np.array_equal(load_centroids(handle), centroids)
    assert np.array_equal(load_centroids(StreamOnly(path.read_bytes())), centroids)
    for bad, match in ((b"not numpy", "must be a .npy"), (npy_bytes(np.arange(4.0)), "2-D float")):
        with pytest.raises(ValueError, match=match):
            load_centroids(bad, "c.npy")
    with pytest.raises(ValueError, match="NaN"):
        load_centroids(npy_bytes(np.full((2, 2), np.nan)))

    ids = load_target_clusters(npy_bytes(np.array([7, 3, 7, 0], dtype=np.uint8)), "t.npy", centroids)
    assert ids.tolist() == [0, 3, 7] and ids.dtype == np.int64
    assert load_target_clusters(b"\xef\xbb\xbf12, 3\n4\t4,,\r\n", "t.txt", centroids).tolist() == [3, 4, 12]
    spec = read_cluster_spec(StreamOnly(npy_bytes(features)), "in1k.npy")
    assert spec.ndim == 2  # features: the caller computes T with the centroids
    assert np.array_equal(resolve_target_clusters(spec, centroids, "in1k.npy"), expected)
    for data, match in (
        (b"1 2 30", r"t: cluster id 30 is outside \[0, 30\)"),
        (b"1 -2", "cluster id -2"),
        (b"1 2.5", "'2.5' is not an integer"),
        (b" \n", "no cluster ids"),
        (b"\xff\xfe", "UTF-8"),
        (b"99999999999999999999", "out of range"),
        (npy_bytes(np.zeros((3, 8), np.float32)), "width 8"),
        (npy_bytes(np.array([1.0, 2.0])), "1-D integer cluster ids or 2-D float features"),
        (npy_bytes(np.array([1, 2], dtype=object)), "t: not a readable .npy"),
    ):
        with pytest.raises(ValueError, match=match):
            load_target_clusters(data, "t", centroids)


@pytest.mark.skipif(
    not os.environ.get("BALANCEBEAM_BENCH_CLUSTERS"), reason="a ~20 s timing: BALANCEBEAM_BENCH_CLUSTERS=1"
)
def test_speed_at_datacomp_scale():
    rng = np.random.default_rng(9)
    n, k, d = 4096, 100_000, 768
    centroids = rng.standard_normal((k, d), dtype=np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    x = rng.standard_normal((n, d), dtype=np.float32)
    start = time.perf_counter()
    cents = prepare_centroids(centroids)
    prepared = time.perf_counter()
    nearest_centroids(x, cents)
    done = time.perf_counter()
    seconds = done - prepared
    print(f"\nprepare {prepared - start:.2f} s; n={n} K={k} d={d}: {seconds:.2f} s, {n / seconds:.0f} rows/s")
