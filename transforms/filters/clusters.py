"""DataComp's image filter: the centroid an image embedding belongs to, and the target clusters.

docs/datacomp.md, "The rules" ("image"): a row's cluster is `argmax_j <x, C_j>` over the pool
centroids C (raw inner product, not L2-nearest; ties to the lowest index), and the row is
kept iff that cluster is in T, the clusters ImageNet-1k train image features land in by the
same rule (T given as integers, or as the features to compute it from). Section 4: on the
Beam side this runs on the rows that passed clip_score. Pure numpy; the Beam side opens files.

The answer is defined **(ours)** as the argmax of float64 inner products of the
float64-cast inputs (products, then numpy's pairwise sum over d: the same for every
centroid, so equal centroids score exactly equal). The fast path is a float32 BLAS matmul in
row blocks (the score block stays under `block_bytes`); rows whose float32 winner is not
clear by twice the rounding-error bound below get their candidates rescored in float64.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np

BLOCK_BYTES = 64 << 20  # float32 score block (rows x K) per matmul
_PAIR_ELEMENTS = 2 << 20  # float64 products per rescoring block (16 MB)
_U32, _U64 = 2.0**-24, 2.0**-53  # unit roundoffs
_ETA32 = 2.0**-149  # float32's smallest subnormal: twice the absolute error of an underflow
_TOO_BIG = 2.0**100  # rows beyond this could overflow float32 (max ~2**128): all rescored
_NPY_MAGIC = b"\x93NUMPY"


def _gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


def error_bound(x_norms: np.ndarray, c_norm: float, d: int) -> np.ndarray:
    """Per row, a bound on |float32 BLAS score - float64 score| for every centroid.

    With x, c the float64-cast inputs and s = sum_i x_i c_i exactly: casting to float32
    costs a factor (1+d1)(1+d2), |d| <= u32, per product (exact for float16 and float32
    inputs), and any float32 summation order (blocked, FMA, threaded) a further gamma_d;
    together gamma_{d+2}(u32) * sum|x_i c_i| <= gamma_{d+2}(u32) ||x||_2 max_j ||C_j||_2
    (Cauchy-Schwarz). Float64 adds gamma_d(u64) on the same sum. Underflow adds at most
    2**-150 per cast element and per product (gradual-underflow sums are exact): below
    2**-149 (d + sqrt(d) (||x||_2 + max||C_j||_2)). The 1.01 covers the rounding of the
    float64 norms themselves. Rows with ||x|| ||C|| >= 2**100 are not bounded here: rescored.
    """
    rel = _gamma(d + 2, _U32) + _gamma(d, _U64)
    absolute = _ETA32 * (d + math.sqrt(d) * (x_norms + c_norm))
    return 1.01 * (rel * x_norms * c_norm + absolute)


@dataclass(frozen=True, eq=False)
class Centroids:
    """Centroids prepared once for many batches: the float32 copy BLAS reads, and the largest norm."""

    values: np.ndarray  # K x d, as given
    as_float32: np.ndarray
    max_norm: float


def prepare_centroids(centroids: np.ndarray) -> Centroids:
    """Validate K x d finite float centroids and prepare them for `nearest_centroids`."""
    values = np.asarray(centroids)
    if values.ndim != 2 or values.dtype.kind != "f" or 0 in values.shape:
        raise ValueError(f"centroids must be a non-empty 2-D float array, not {values.dtype} {values.shape}")
    norms = [np.linalg.norm(values[i : i + 8192].astype(np.float64), axis=1) for i in range(0, len(values), 8192)]
    max_norm = float(np.concatenate(norms).max())
    if not math.isfinite(max_norm):
        raise ValueError("centroids hold NaN or infinite values")
    return Centroids(values, np.ascontiguousarray(values, dtype=np.float32), max_norm)


def _float64_argmax(x64: np.ndarray, values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For (row, centroid) pairs sorted by row: each row's float64 argmax, lowest index on ties."""
    scores = np.empty(len(rows))
    step = max(1, _PAIR_ELEMENTS // x64.shape[1])
    for s in range(0, len(rows), step):
        r, c = rows[s : s + step], cols[s : s + step]
        scores[s : s + step] = (values[c].astype(np.float64) * x64[r]).sum(axis=1)
    order = np.lexsort((cols, -scores, rows))  # by row, then score descending, then index ascending
    first = np.r_[True, rows[order][1:] != rows[order][:-1]]
    return cols[order[first]]


def fast_argmax(x: np.ndarray, centroids: Centroids) -> np.ndarray:
    """The float32 BLAS argmax alone (no rescoring): what the bound protects against. For tests."""
    return (x.astype(np.float32) @ centroids.as_float32.T).argmax(axis=1)


def _nearest_block(x: np.ndarray, cents: Centroids) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)  # no copy when x is float64 already (read only here)
    finite = np.isfinite(x64).all(axis=1)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    safe = finite & (norms * cents.max_norm < _TOO_BIG) & (norms < _TOO_BIG) & (cents.max_norm < _TOO_BIG)
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing rows are not `safe`: rescored
        scores = x.astype(np.float32) @ cents.as_float32.T
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(x)), best]
        # Candidates: every centroid whose float64 score could reach the float32 winner's.
        near = scores >= (top - 2 * error_bound(norms, cents.max_norm, x.shape[1]))[:, None]
    near[~safe] = True
    near[~finite] = False
    unclear = np.flatnonzero(np.count_nonzero(near, axis=1) > 1)
    if len(unclear):
        rows, cols = np.nonzero(near[unclear])
        best[unclear] = _float64_argmax(x64[unclear], cents.values, rows, cols)
    best[~finite] = -1
    return best


def nearest_centroids(embeddings: np.ndarray, centroids, *, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """Each row's `argmax_j <x, C_j>` (int64, lowest index on ties); -1 for a non-finite row.

    `centroids`: a K x d float array, or `prepare_centroids(...)` of it (prepare once per worker).
    """
    cents = centroids if isinstance(centroids, Centroids) else prepare_centroids(centroids)
    x = np.asarray(embeddings)
    k, d = cents.values.shape
    if x.ndim != 2 or x.dtype.kind != "f" or x.shape[1] != d:
        raise ValueError(f"embeddings must be a 2-D float array of width {d}, not {x.dtype} {x.shape}")
    out = np.empty(len(x), dtype=np.int64)
    rows = max(1, block_bytes // (4 * k))
    for start in range(0, len(x), rows):
        out[start : start + rows] = _nearest_block(x[start : start + rows], cents)
    return out


def target_clusters(features: np.ndarray, centroids) -> np.ndarray:
    """DataComp's T: the sorted unique clusters the (ImageNet-1k) features land in."""
    ids = nearest_centroids(features, centroids)
    if (ids < 0).any():
        raise ValueError(f"features row {int(np.argmax(ids < 0))} holds NaN or infinite values")
    return np.unique(ids)


class _Rejoined:
    """A reader that gives back the bytes already read from the head of a stream, then the rest."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            head, self.head = self.head, b""
            return head + self.rest.read()
        head, self.head = self.head[:size], self.head[size:]
        return head + (self.rest.read(size - len(head)) if size > len(head) else b"")


def _stream(source):
    return io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source


def _read_npy(head: bytes, stream, name: str) -> np.ndarray:
    try:  # read_array reads a stream in chunks: no second copy of a large file in memory
        return np.lib.format.read_array(_Rejoined(head, stream), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{name}: not a readable .npy file ({exc})") from exc


def load_centroids(source, name: str = "centroids") -> np.ndarray:
    """The pool centroids from a .npy (an open binary file or bytes): a finite K x d float array."""
    stream = _stream(source)
    head = stream.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        raise ValueError(f"{name}: centroids must be a .npy file (K x d floats)")
    values = _read_npy(head, stream, name)
    try:
        prepare_centroids(values)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return values


def read_cluster_spec(source, name: str) -> np.ndarray:
    """The target-cluster file: 1-D int64 cluster ids, or 2-D float features to compute them from.

    Accepted: a .npy of integers (1-D), a .npy of floats (2-D: ImageNet features), or text
    holding integers separated by white space, commas or newlines. Pass the result, with the
    centroids, to `resolve_target_clusters`.
    """
    stream = _stream(source)
    head = stream.read(len(_NPY_MAGIC))
    if head == _NPY_MAGIC:
        spec = _read_npy(head, stream, name)
        if spec.ndim == 1 and spec.dtype.kind in "iu":
            if spec.dtype.kind == "u" and len(spec) and spec.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{name}: cluster id {spec.max()} is out of range")
            spec = spec.astype(np.int64)
        elif not (spec.ndim == 2 and spec.dtype.kind == "f"):
            kind = f"{spec.dtype} {spec.shape}"
            raise ValueError(f"{name}: expected 1-D integer cluster ids or 2-D float features, not {kind}")
    else:
        try:
            text = (head + stream.read()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{name}: neither a .npy file nor UTF-8 text of cluster ids") from None
        tokens = [token for token in re.split(r"[\s,]+", text) if token]
        bad = next((token for token in tokens if not re.fullmatch(r"[+-]?[0-9]+", token)), None)
        if bad is not None:
            raise ValueError(f"{name}: {bad[:40]!r} is not an integer cluster id")
        ids = [int(token) for token in tokens]
        big = next((i for i in ids if abs(i) > np.iinfo(np.int64).max), None)
        if big is not None:
            raise ValueError(f"{name}: cluster id {big} is out of range")
        spec = np.array(ids, dtype=np.int64)
    if len(spec) == 0:
        raise ValueError(f"{name}: holds no cluster ids")
    return spec


def resolve_target_clusters(spec: np.ndarray, centroids, name: str) -> np.ndarray:
    """Sorted unique cluster ids from `read_cluster_spec`'s result, each checked to be in [0, K)."""
    cents = centroids if isinstance(centroids, Centroids) else prepare_centroids(centroids)
    k, d = cents.values.shape
    if spec.ndim == 2:
        if spec.shape[1] != d:
            raise ValueError(f"{name}: features of width {spec.shape[1]} for centroids of width {d}")
        return target_clusters(spec, cents)
    ids = np.asarray(spec, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= k)]
    if len(bad):
        raise ValueError(f"{name}: cluster id {bad[0]} is outside [0, {k}) of the {k} centroids")
    return np.unique(ids)


def load_target_clusters(source, name: str, centroids) -> np.ndarray:
    """`read_cluster_spec` then `resolve_target_clusters`: DataComp's T as sorted int64 ids."""
    return resolve_target_clusters(read_cluster_spec(source, name), centroids, name)
