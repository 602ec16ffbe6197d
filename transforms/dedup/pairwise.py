"""SemDeDup's ordered pairwise rule in blocks: each member's largest similarity to an earlier one.

Pure numpy, no Beam import (docs/dedup.md, "The pairwise rule"). For members in cluster
order (rows of `x`, L2-normalised float64), member j's score is `max_{i<j} x_i . x_j` over
all earlier members, duplicates included, and its nearest earlier member the argmax (ties
to the earlier position). j is a duplicate iff that score is `> 1 - eps`: the score does
not depend on eps, so one pass gives the removed fraction for every eps (`removed_fraction`).

The answer is defined (ours) by float64 dot products: the products, then numpy's pairwise
sum over d (the same rule as the image filter's float64 recheck, `filters/clusters.py`),
so equal vectors score exactly equal. The fast path is a float32 BLAS matmul over blocks of
`block_rows` x `block_rows` (never an n x n matrix); per member, every earlier member whose
float32 score is within twice `clusters.error_bound` of the float32 maximum is a candidate
(the float64 maximum is always among them) and the candidates are rescored in float64. So
the score, the argmax and hence the duplicate flag are the float64 rule's for every member,
not only where a float32 score is near `1 - eps`.

Bit-identical rows are compared once (`first_copies`). Cost: n u d float32 multiply-adds
for u distinct rows (about n^2 d / 2 when all differ), plus d float64 products per
candidate: about one per member, more for a member with many distinct earlier rows within
~1e-4 of its best score (then up to one per such row); memory O(block_rows^2).
"""

from __future__ import annotations

import numpy as np

from transforms.filters.clusters import error_bound

BLOCK_ROWS = 2048  # 2048 x 2048 float32 scores: 16 MB a block
_PAIR_ELEMENTS = 2 << 20  # float64 products per rescoring step (16 MB)


def pair_scores(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The float64 score of each (row, col) pair: products, then numpy's pairwise sum over d."""
    out = np.empty(len(rows))
    step = max(1, _PAIR_ELEMENTS // max(1, x.shape[1]))
    for s in range(0, len(rows), step):
        out[s : s + step] = (x[rows[s : s + step]] * x[cols[s : s + step]]).sum(axis=1)
    return out


def first_copies(x: np.ndarray) -> np.ndarray:
    """Sorted indices of the rows that are the first of their bit-identical copies.

    A later copy of a row scores exactly what the row scores (the float64 rule only sees the
    values), so it can never be a member's nearest earlier member: its first copy, earlier,
    wins the tie. Only first copies are compared as earlier members. This keeps the cost of a
    cluster of n identical embeddings (a placeholder image, a stock photo) at O(n d).
    """
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    return np.sort(np.unique(rows, return_index=True)[1])


def _best_in_block(x, slack, earlier, b0, b1, x32, best32, best, nearest) -> None:
    """Update members b0..b1's running float32 max and float64 (best, nearest) from `earlier` rows."""
    scores = (x32[earlier] @ x32[b0:b1].T).astype(np.float64)
    if earlier[-1] >= b0:  # the block touches the diagonal: only earlier rows count
        scores[earlier[:, None] >= np.arange(b0, b1)[None, :]] = -np.inf
    np.maximum(best32, scores.max(axis=0), out=best32)
    # Candidates: every pair whose float64 score could reach the float32 leader's, rescored now
    # (the float64 maximum and all its ties are among them; extra ones cannot win).
    rr, cc = np.nonzero((scores >= (best32 - slack[b0:b1])[None, :]) & (scores > -np.inf))
    if not len(rr):
        return
    rows, cols = earlier[rr], cc + b0
    exact = pair_scores(x, rows, cols)
    order = np.lexsort((rows, -exact, cols))  # per member: highest score, then earliest row
    first = order[np.r_[True, cols[order][1:] != cols[order][:-1]]]
    cols, rows, exact = cols[first], rows[first], exact[first]
    better = exact > best[cols - b0]  # rows come in ascending blocks: a tie keeps the earlier
    best[cols[better] - b0] = exact[better]
    nearest[cols[better] - b0] = rows[better]


def earlier_maxima(x: np.ndarray, *, block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Per member (row of `x`, in cluster order): (largest float64 similarity to an earlier member,
    index of that earlier member, lowest on ties). The first member gets (-inf, -1).

    x: n x d finite float64 rows (L2-normalised for SemDeDup; any finite rows work, the bound
    scales with their norms). block_rows only changes the cost, never the answer. Memory is
    O(block_rows^2) whatever n is.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n, d = x.shape
    score = np.full(n, -np.inf)
    nearest = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return score, nearest
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    slack = 2 * error_bound(norms, float(norms.max()), d)
    x32 = x.astype(np.float32)
    firsts = first_copies(x)
    block = max(1, int(block_rows))
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        best32 = np.full(b1 - b0, -np.inf)
        candidates = firsts[firsts < b1 - 1]
        for r0 in range(0, len(candidates), block):
            _best_in_block(
                x, slack, candidates[r0 : r0 + block], b0, b1, x32, best32, score[b0:b1], nearest[b0:b1]
            )  # fmt: skip
    return score, nearest


def duplicates(score: np.ndarray, eps: float) -> np.ndarray:
    """SemDeDup's flag from `earlier_maxima`'s score: `score > 1 - eps` (the original's `>`)."""
    return np.asarray(score) > 1.0 - eps


def removed_fraction(scores: np.ndarray, eps_values) -> np.ndarray:
    """Fraction of records removed at each eps, from one run's per-record scores.

    scores: `earlier_maxima`'s score of every record that went through SemDeDup (-inf for
    the first of a cluster). The curve the report plots (eps 1e-4 .. 0.2).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    eps = np.asarray(eps_values, dtype=np.float64)
    if len(s) == 0:
        return np.zeros(len(eps))
    removed = len(s) - np.searchsorted(s, 1.0 - eps, side="right")
    return removed / len(s)
