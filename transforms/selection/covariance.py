"""Cross-covariance selection: exact class sums, pseudo-classes, tie keys, the greedy.

Pure numpy, no Beam import (docs/selection.md, ClipCov-style). Within a
class c of n_c members with budget k_c, the class sum C_c = sum_i x_i y_i^T (image and
caption embeddings, L2-normalised) gives the target T_c = k_c C_c / n_c, and the greedy
picks k_c members whose sum C_S maximises F(S) = 2<T_c, C_S> - ||C_S||_F^2. The Beam
wrapper sums CrossCovSum accumulators per class (a CombinePerKey), then runs
`greedy_select` on the worker that holds the class (or one part of it).

Exactness rule (ours): a class's picks must not depend on how the pool was split into
files, batches or workers. Float64 sums taken in different orders differ in the last
bits and could flip a near-tie, so

- embeddings are L2-normalised in float64 and rounded to multiples of 2**-20
  (`normalise_rows`), far below the precision of the float16 inputs;
- a batch of at most 8192 rows is summed as `Xq.T @ Yq` on the integer-valued matrices
  Xq = 2**20 X: every product is below 2**40 and every partial sum below 2**53, so float64
  BLAS gives the exact integer, which goes into a two-limb int64 accumulator. Merging is
  exact integer addition, so the class sum is the same integer in any order;
- the greedy sorts the class's members by tie key first, so it sees the same arrays
  whatever order they arrived in, and `np.argmax` (first maximum) applies the tie rule.
  Its float64 arithmetic is then deterministic for a given numpy/BLAS build and CPU
  (different SIMD kernels may differ in the last bits; that only matters at exact ties).

Also ours: zero embeddings stay zero (they never change any gain and have gain 0), the
class embeddings are quantised the same way so that class scores are exact integers,
and ties go to the smaller tie key `splitmix64(key_hash ^ splitmix64(seed))`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from transforms.core.hashing import splitmix64

QUANTUM_BITS = 20
SCALE = float(2**QUANTUM_BITS)  # the vector used everywhere is q / SCALE, q an integer
BATCH_ROWS = 8192  # 8192 products below 2**40 sum below 2**53: exact in float64
_LIMB_BITS = 32
_LIMB = np.int64(2**_LIMB_BITS)


def normalise_rows(v) -> np.ndarray:
    """Rows L2-normalised in float64, rounded to multiples of 2**-20 (float64, n x d).

    A zero row stays zero. Non-finite values raise ValueError: they would poison a
    class sum. Each row's result depends on that row alone.
    """
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("embeddings hold NaN or infinity")
    # Divide by the largest |component| first, so that squaring cannot overflow.
    peak = np.max(np.abs(a), axis=1, keepdims=True) if a.shape[1] else np.zeros((len(a), 1))
    nonzero = peak[:, 0] > 0
    scaled = np.zeros_like(a)
    scaled[nonzero] = a[nonzero] / peak[nonzero]
    norms = np.sqrt(np.sum(scaled * scaled, axis=1, keepdims=True))
    norms[~nonzero] = 1.0
    return np.rint(scaled / norms * SCALE) / SCALE


def _integer_valued(v, name: str) -> np.ndarray:
    """2**20 v as integer-valued float64; ValueError unless v came from normalise_rows."""
    q = np.asarray(v, dtype=np.float64) * SCALE
    if q.ndim != 2 or not (np.all(np.rint(q) == q) and np.all(np.abs(q) <= SCALE)):
        raise ValueError(f"{name} is not a 2-d array from normalise_rows (quantised, norm <= 1)")
    return q


class CrossCovSum:
    """Exact sum of x_i y_i^T over the rows added, and the row count.

    The sum is held as the integer matrix sum(q_x q_y^T) = 2**40 sum(x y^T) in two int64
    limbs, hi * 2**32 + lo with 0 <= lo < 2**32: exact up to |entry| < 2**95, i.e. beyond
    2**55 rows. An empty accumulator has no shape yet, so a combiner can create it before
    seeing data. Pickles as the two limbs in 32 bits each (4.7 MB at d = 768) and the count.
    """

    __slots__ = ("_hi", "_lo", "count")

    def __init__(self) -> None:
        self._hi: np.ndarray | None = None
        self._lo: np.ndarray | None = None
        self.count = 0

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self._hi is None else self._hi.shape

    def _add_integers(self, part: np.ndarray) -> None:
        """Adds an int64 matrix of entries below 2**62 in magnitude, keeping lo in [0, 2**32)."""
        if self._hi is None:
            self._hi = np.zeros(part.shape, dtype=np.int64)
            self._lo = np.zeros(part.shape, dtype=np.int64)
        elif part.shape != self._hi.shape:
            raise ValueError(f"cross-covariance shapes differ: {self._hi.shape} and {part.shape}")
        self._lo += part
        carry = self._lo >> _LIMB_BITS  # arithmetic shift: floor division, also for negatives
        self._lo -= carry << _LIMB_BITS
        self._hi += carry

    def add_batch(self, x, y) -> CrossCovSum:
        """Adds rows of normalise_rows output (n x dx and n x dy); returns self."""
        qx = _integer_valued(x, "x")
        qy = _integer_valued(y, "y")
        if len(qx) != len(qy):
            raise ValueError(f"x has {len(qx)} rows and y {len(qy)}")
        if self._hi is None and len(qx) == 0:
            self._add_integers(np.zeros((qx.shape[1], qy.shape[1]), dtype=np.int64))
        for start in range(0, len(qx), BATCH_ROWS):
            stop = start + BATCH_ROWS
            exact = qx[start:stop].T @ qy[start:stop]  # integer-valued, below 2**53: exact
            self._add_integers(exact.astype(np.int64))
        self.count += len(qx)
        return self

    def merge(self, other: CrossCovSum) -> CrossCovSum:
        """Adds another accumulator into this one (exact, any order); returns self."""
        if other is self:
            other = self.copy()
        if other._hi is not None:
            # lo + lo < 2**33: add the limbs separately, then carry.
            self._add_integers(other._lo)
            self._hi += other._hi
        self.count += other.count
        return self

    def __getstate__(self):
        # Half the bytes on the wire (4.7 MB at d = 768): lo fits uint32 by construction, hi
        # fits int32 below 2**63 in magnitude (about 8M rows of a class); int64 beyond.
        if self._hi is None:
            return (None, None, self.count)
        hi = self._hi
        if hi.size and (hi.min() < -(2**31) or hi.max() >= 2**31):
            return (hi, self._lo.astype(np.uint32), self.count)
        return (hi.astype(np.int32), self._lo.astype(np.uint32), self.count)

    def __setstate__(self, state) -> None:
        hi, lo, self.count = state
        self._hi = None if hi is None else hi.astype(np.int64)
        self._lo = None if lo is None else lo.astype(np.int64)

    def copy(self) -> CrossCovSum:
        """An independent copy."""
        twin = CrossCovSum()
        if self._hi is not None:
            twin._hi, twin._lo = self._hi.copy(), self._lo.copy()
        twin.count = self.count
        return twin

    def matrix(self) -> np.ndarray:
        """sum x_i y_i^T as float64, correctly rounded from the exact integer (|hi| < 2**53)."""
        if self._hi is None:
            raise ValueError("an empty CrossCovSum has no shape")
        return (self._hi.astype(np.float64) * float(_LIMB) + self._lo.astype(np.float64)) * (1.0 / SCALE**2)

    def integer_matrix(self) -> np.ndarray:
        """The exact 2**40 * sum as Python ints (object array); slow, for tests and checks."""
        if self._hi is None:
            raise ValueError("an empty CrossCovSum has no shape")
        hi = self._hi.astype(object)
        return hi * int(_LIMB) + self._lo.astype(object)


def cross_cov_sum(x, y) -> CrossCovSum:
    """A CrossCovSum of the rows of x and y (normalise_rows output)."""
    return CrossCovSum().add_batch(x, y)


def merge_sums(sums: Iterable[CrossCovSum]) -> CrossCovSum:
    """The merged sum of several accumulators (a new one; the inputs are unchanged)."""
    total = CrossCovSum()
    for s in sums:
        total.merge(s)
    return total


def pseudo_classes(x_norm, class_embeddings=None) -> np.ndarray:
    """Class of each row: argmax_k x . W_k, ties to the lowest k (int64).

    x_norm comes from normalise_rows. The rows of W are normalised and quantised the
    same way (ours), so each score is an exact integer / 2**40 (d <= 8192) and the
    argmax cannot depend on BLAS summation order. No class embeddings: all zeros.
    """
    qx = _integer_valued(x_norm, "x_norm")
    if class_embeddings is None or len(class_embeddings) == 0:
        return np.zeros(len(qx), dtype=np.int64)
    qw = normalise_rows(class_embeddings) * SCALE
    if qw.shape[1] != qx.shape[1] or qx.shape[1] > BATCH_ROWS:
        raise ValueError(f"class embeddings of width {qw.shape[1]} for embeddings of width {qx.shape[1]}")
    if len(qx) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.argmax(qx @ qw.T, axis=1).astype(np.int64)


def tie_keys(key_hashes, seed: int) -> np.ndarray:
    """Per-key tie-break order, smaller first: splitmix64(hash ^ splitmix64(seed)), uint64.

    These are the same 64 bits that hashing.uniform_draws turns into a draw for the
    seed; they only decide exact ties (and, in local.py, the split of a large class).
    """
    seed_mix = splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    return splitmix64(np.asarray(key_hashes, dtype=np.uint64) ^ seed_mix)


def _tie_order(tie: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Members sorted by tie key; equal keys (duplicate keys) by their rows, so still order-free."""
    order = np.argsort(tie, kind="stable")
    sorted_tie = tie[order]
    if len(tie) > 1 and np.any(sorted_tie[1:] == sorted_tie[:-1]):
        # np.lexsort: the last key is the primary one.
        columns = [y[:, j] for j in range(y.shape[1] - 1, -1, -1)] + [x[:, j] for j in range(x.shape[1] - 1, -1, -1)]
        order = np.lexsort(columns + [tie])
    return order


def greedy_select(x, y, class_matrix, class_size: int, budget: int, tie) -> np.ndarray:
    """Greedy picks of `budget` members, as indices into the given rows, in pick order.

    x, y: the m members held here (normalise_rows output, m x d); class_matrix: the
    class-wide sum C_c (CrossCovSum.matrix()); class_size: n_c, which is more than m when
    the class is split into parts. The target is budget * C_c / n_c: the class-wide mean
    times this budget (ours, for parts). Gains g_i = 2 x_i^T (T - C_S) y_i - |x_i|^2 |y_i|^2
    fall by 2 (x_i.x_j)(y_i.y_j) after each pick j: two mat-vecs, O(m d) per pick.
    Largest gain wins, ties to the smaller tie key. Plain greedy: F is not submodular.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    tie = np.asarray(tie, dtype=np.uint64)
    m = len(x)
    if x.ndim != 2 or y.ndim != 2 or len(y) != m or len(tie) != m:
        raise ValueError(f"x {x.shape}, y {y.shape} and tie {tie.shape} do not match")
    if not 0 <= budget <= m or class_size < m:
        raise ValueError(f"budget {budget} outside [0, {m}], or class size {class_size} below {m} members")
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    order = _tie_order(tie, x, y)
    # From here on every array is in tie-key order: bit-identical inputs, whatever the
    # order the members arrived in, and np.argmax's first maximum is the smaller tie key.
    xs = np.ascontiguousarray(x[order])
    ys = np.ascontiguousarray(y[order])
    target = np.asarray(class_matrix, dtype=np.float64) * budget / class_size
    gains = 2.0 * np.einsum("ij,ij->i", xs @ target, ys)
    gains -= np.einsum("ij,ij->i", xs, xs) * np.einsum("ij,ij->i", ys, ys)
    picks = np.empty(budget, dtype=np.int64)
    for step in range(budget):
        j = int(np.argmax(gains))
        picks[step] = j
        gains[j] = -np.inf  # stays -inf under the updates: never picked again
        if step + 1 < budget:
            gains -= 2.0 * (xs @ xs[j]) * (ys @ ys[j])
    return order[picks].astype(np.int64)


def selected_sum(x, y, indices) -> np.ndarray:
    """C_S = sum over the given rows of x_i y_i^T, float64 (for reports and tests)."""
    idx = np.asarray(indices, dtype=np.int64)
    return np.asarray(x, dtype=np.float64)[idx].T @ np.asarray(y, dtype=np.float64)[idx]


def objective(target, selected) -> float:
    """F = 2<T, C_S> - ||C_S||_F^2."""
    t = np.asarray(target, dtype=np.float64)
    s = np.asarray(selected, dtype=np.float64)
    return float(2.0 * np.sum(t * s) - np.sum(s * s))


def objective_two_ways(target, selected) -> tuple[float, float]:
    """(2<T, C_S> - ||C_S||^2, ||T||^2 - ||T - C_S||^2): equal up to rounding."""
    t = np.asarray(target, dtype=np.float64)
    s = np.asarray(selected, dtype=np.float64)
    return objective(t, s), float(np.sum(t * t) - np.sum((t - s) ** 2))


def mean_cosine(x, y) -> float:
    """Mean image-caption cosine over rows (a zero row counts as 0); NaN for no rows."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if len(a) == 0:
        return float("nan")
    norms = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    dots = np.sum(a * b, axis=1)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return float(np.mean(cos))
