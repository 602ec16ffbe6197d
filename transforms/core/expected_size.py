"""Subset size versus threshold: E(t) = sum over captions of P_keep(t), and picking t.

Pure Python and numpy, no Beam import. E(t) is computed from the match index
alone (each caption's entry ids and the per-entry counts), with the very
float64 operations, in the same order, as the functions the sampler uses
(`balancing.entry_probabilities` and `balancing.keep_probabilities`), many
thresholds at a time, so E at the run's t equals stats.json's `expected_kept`
to the last fixed-point unit.

Sums are in fixed point (2**-40 units, like stats.py's `keep_prob_fixed`):
each caption's P is rounded to an integer once, so per-batch sums add up
exactly and in any order on any runner.

E is nondecreasing in t: p_e = min(1, t / count) grows with t, and every step
of 1 - prod(1 - p_e) is a correctly rounded operation that is monotone in its
arguments, so even the float64 values (and their rounding) never decrease.
That is what lets `choose_threshold` and `refine_grid` bracket a target.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

# Fixed-point unit of keep probabilities; equal to transforms.beam.stats._PROB_SCALE
# (not imported from there because that module imports Beam).
PROB_SCALE = 1 << 40

# A batch's fixed-point sum must fit in int64: rows * 2**40 < 2**63.
_MAX_BATCH_ROWS = 1 << 22

# Tuning of expected_sizes_fixed: speed and memory only, never the sums.
_PIECE_IDS = 1 << 18  # entry ids of a batch handled at once
_MATRIX_CELLS = 1 << 20  # (threshold, id) complements held at once (8 MiB)
_FLOAT_SUM_ROWS = 1 << 13  # 2**13 values <= 2**40: every float64 partial sum is exact
_STEP_COST = 256  # a block step, in (threshold, caption) segments of a reduceat
_MERGE_WASTE = 32768  # (threshold, id) pairs a merged unit may compute in vain


def threshold_grid(counts: np.ndarray, points: int = 64, extra: Iterable[int] = ()) -> np.ndarray:
    """Candidate thresholds: `points` log-spaced integers from 1 to the largest count.

    Anchors: 1 (the smallest valid t), the largest count (from there on every
    entry is tail and E(t) is flat: no larger t changes anything), the
    second-largest distinct count (above it only the largest entry is head),
    and `extra` (e.g. the run's own t, so that the table holds stats.json's
    expected_kept). Sorted, unique, int64, all >= 1; at least [1].
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    counts = np.asarray(counts, dtype=np.int64)
    largest = int(counts.max()) if len(counts) else 0
    anchors = [1] + [int(t) for t in extra]
    if min(anchors) < 1:
        raise ValueError(f"thresholds must be >= 1, got {min(anchors)}")
    if largest > 1:
        distinct = np.unique(counts[counts > 0])
        anchors += [largest] + ([int(distinct[-2])] if len(distinct) > 1 else [])
        anchors += np.rint(np.geomspace(1.0, float(largest), points)).astype(np.int64).tolist()
    return np.unique(np.array(anchors, dtype=np.int64))


def expected_sizes_fixed(
    offsets: np.ndarray, flat_ids: np.ndarray, counts: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """For each t, sum over the batch's captions of rint(P_keep(t) * 2**40), as int64.

    (offsets, flat_ids) is Arrow list layout: caption i's entry ids are
    flat_ids[offsets[i]:offsets[i+1]] (offsets may start above 0, as for a
    sliced Arrow array). `counts` is every entry's caption count.

    Each P is bit-identical to the sampler's keep_prob: p_e = t / count as a
    float64 division, 1 - prod(1 - p_e) multiplied left to right in the
    caption's (ascending) id order, exactly the operations of
    `entry_probabilities` and `keep_probabilities`, only many thresholds at a
    time. Captions without a match add 0; a caption with an entry of count
    <= t has a factor 1 - p_e = 0.0, so P = 1.0 exactly and it adds 2**40.
    Only the other pairs, whose every entry is above t, are computed: with the
    thresholds sorted, caption c needs the first w(c) of them (those below its
    rarest count), and captions of near-equal w are grouped into units.

    A unit is done as a (thresholds x ids) matrix of complements 1 - t / count,
    multiplied together column position by column position: the captions
    sorted by length, descending, the k-th factors of the captions longer than
    k are one contiguous block, and the product of the first k + 1 factors is
    that of the first k times the block, for every t and caption at once. The
    rare captions longer than a few positions finish with `np.multiply.reduceat`
    from their running product (`_unit_keep_probabilities`). A unit that merged
    captions of smaller w computes pairs with an entry <= t too; they are reset
    to P = 1. A batch of 4096 captions and a grid of ~60 t take a few such
    units instead of ~10 numpy calls per t: 4-5x faster than one t at a time.

    Memory is bounded: the batch is taken in pieces of at most 2**18 ids (or
    one caption), and a matrix holds at most 2**20 cells (or one caption's ids).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.int64)
    num_rows = len(offsets) - 1
    if num_rows > _MAX_BATCH_ROWS:
        raise ValueError(
            f"a batch of {num_rows} captions could overflow the int64 sum; split it (at most {_MAX_BATCH_ROWS})"
        )
    totals = np.zeros(len(thresholds), dtype=np.int64)
    if num_rows < 1 or offsets[-1] == offsets[0] or len(thresholds) == 0:
        return totals  # no caption matched: P = 0 for every t
    order = np.argsort(thresholds, kind="stable")
    ts = thresholds[order]
    counts = np.asarray(counts, dtype=np.int64)
    flat_ids = np.asarray(flat_ids)
    sorted_totals = np.zeros(len(ts), dtype=np.int64)
    # No floating-point warnings: the pairs reset to P = 1 may overflow (a
    # complement 1 - t / count < 0) or make NaN.
    with np.errstate(all="ignore"):
        start = 0
        while start < num_rows:
            stop = int(np.searchsorted(offsets, offsets[start] + _PIECE_IDS, side="right")) - 1
            stop = min(max(stop, start + 1), num_rows)
            sorted_totals += _piece_sums(offsets[start : stop + 1], flat_ids, counts, ts)
            start = stop
    totals[order] = sorted_totals
    return totals


def _piece_sums(offsets: np.ndarray, flat_ids: np.ndarray, counts: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """`expected_sizes_fixed` of some rows, for the sorted thresholds `ts`."""
    flat = flat_ids[offsets[0] : offsets[-1]].astype(np.int64, copy=False)
    lengths = np.diff(offsets)
    matched = lengths > 0
    starts = (offsets[:-1] - offsets[0])[matched]
    lengths = lengths[matched]
    # Every matched caption at P = 1; each unit below swaps its captions' 2**40 for their sums.
    sums = np.full(len(ts), len(lengths) * PROB_SCALE, dtype=np.int64)
    if len(lengths) == 0:
        return sums
    occurrence_counts = counts[flat]
    # w: how many of the sorted thresholds lie below the caption's rarest count.
    width = np.searchsorted(ts, np.minimum.reduceat(occurrence_counts, starts), side="left")
    hard = width > 0
    if not hard.any():
        return sums
    starts, lengths, width = starts[hard], lengths[hard], width[hard]
    # Units: the captions of each w, from the widest, each merged into the unit
    # before it while the pairs that unit computes in vain stay few.
    captions_per_width = np.bincount(width, minlength=len(ts) + 1)
    ids_per_width = np.bincount(width, weights=lengths, minlength=len(ts) + 1)
    unit_of_width = np.zeros(len(ts) + 1, dtype=np.int64)
    units: list[list] = []  # [w, merged]
    waste = 0.0
    for w in np.flatnonzero(captions_per_width)[::-1].tolist():
        if units:
            waste += ids_per_width[w] * (units[-1][0] - w)
        if not units or waste > _MERGE_WASTE:
            units.append([w, False])
            waste = 0.0
        else:
            units[-1][1] = True
        unit_of_width[w] = len(units) - 1
    # Captions by unit, then by length, descending (any order among equals).
    unit = unit_of_width[width]
    longest = int(lengths.max())
    key = unit * (longest + 1) + (longest - lengths)
    if len(units) * (longest + 1) <= 1 << 16:
        key = key.astype(np.uint16)  # a radix sort
    by_unit = np.argsort(key, kind="stable")
    starts, lengths, width = starts[by_unit], lengths[by_unit], width[by_unit]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(unit, minlength=len(units))))).tolist()
    ends = np.concatenate(([0], np.cumsum(lengths)))
    complement_counts = occurrence_counts.astype(np.float64)
    float_ts = ts.astype(np.float64)
    # With every t >= 1 each rounded value lies in [0, 2**40]: float64 sums of
    # up to 2**13 of them are exact integers.
    exact_float_sums = bool(ts[0] >= 1)
    for (w, merged), lo, hi in zip(units, bounds[:-1], bounds[1:], strict=True):
        at = lo
        while at < hi:
            # At most 2**13 captions and _MATRIX_CELLS cells (or one caption) at once.
            stop = int(np.searchsorted(ends, ends[at] + _MATRIX_CELLS // w, side="right")) - 1
            stop = min(max(stop, at + 1), at + _FLOAT_SUM_ROWS, hi)
            per_pass = max(1, _MATRIX_CELLS // int(ends[stop] - ends[at]))
            for first in range(0, w, per_pass):
                last = min(w, first + per_pass)
                fixed = _unit_keep_probabilities(
                    starts[at:stop],
                    lengths[at:stop],
                    width[at:stop] if merged else None,
                    complement_counts,
                    float_ts[first:last],
                    first,
                )
                fixed *= PROB_SCALE
                np.rint(fixed, out=fixed)
                if exact_float_sums:
                    sums[first:last] += fixed.sum(axis=1).astype(np.int64)
                else:
                    sums[first:last] += fixed.astype(np.int64).sum(axis=1)
                sums[first:last] -= (stop - at) * PROB_SCALE
            at = stop
    return sums


def _unit_keep_probabilities(
    starts: np.ndarray,
    lengths: np.ndarray,
    width: np.ndarray | None,
    counts: np.ndarray,
    ts: np.ndarray,
    first: int,
) -> np.ndarray:
    """P = 1 - prod(1 - t / count) of each caption (column) for each t of `ts` (row), float64.

    The captions are (starts, lengths) into `counts` (float64, one per id),
    lengths descending, every count above every t; `ts` float64. `width`, when
    given, resets the pairs with threshold index (`first` + row) >= width to
    P = 1 (their counts need not be above t). Each P is bit-identical to
    `keep_probabilities(..., entry_probabilities(counts, t))`.

    Column positions 0..K-1 go by blocks: block k holds the complements of the
    k-th ids of the captions longer than k, which are the first ones, and
    multiplies the running products of those captions in place. Captions
    longer than K go on with a reduceat over [running product, ids K..], left
    to right as well. K is chosen by cost: a block step costs about _STEP_COST
    (threshold, caption) segments of the reduceat.
    """
    num = len(lengths)
    longer = num - np.cumsum(np.bincount(lengths))  # longer[k]: captions with more than k ids
    cost = np.arange(1, len(longer)) * _STEP_COST + longer[1:] * len(ts)
    steps = int(np.argmin(cost)) + 1
    prod = np.divide(ts[:, None], counts[starts])
    np.subtract(1.0, prod, out=prod)
    sizes = longer[1:steps]
    rows = []
    if steps > 1:
        column = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        column = starts[column]
        column += np.repeat(np.arange(1, steps), sizes)
        rows.append(column)
    tail = int(longer[steps])
    if tail:
        # Per caption: a slot for its running product, then its ids from K on.
        tail_lengths = lengths[:tail] - (steps - 1)
        tail_starts = np.cumsum(tail_lengths) - tail_lengths
        tail_rows = np.repeat(starts[:tail] + (steps - 1) - tail_starts, tail_lengths)
        tail_rows += np.arange(len(tail_rows))
        rows.append(tail_rows)
    if rows:
        matrix = np.divide(ts[:, None], counts[np.concatenate(rows)])
        np.subtract(1.0, matrix, out=matrix)
        at = 0
        for size in sizes.tolist():
            prod[:, :size] *= matrix[:, at : at + size]
            at += size
        if tail:
            rest = matrix[:, at:]
            rest[:, tail_starts] = prod[:, :tail]
            prod[:, :tail] = np.multiply.reduceat(rest, tail_starts, axis=1)
    if width is not None:
        np.copyto(prod, 0.0, where=np.arange(first, first + len(ts))[:, None] >= width)
    return np.subtract(1.0, prod, out=prod)


def add_fixed(a, b) -> list[int]:
    """Element-wise sum of two fixed-point vectors as Python ints.

    Across a whole pool the totals outgrow int64 (2**23 captions at P = 1
    already reach 2**63), so merged sums are kept as exact Python integers.
    """
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    return [int(x) + int(y) for x, y in zip(a, b, strict=True)]


def fixed_to_captions(fixed) -> np.ndarray:
    """Fixed-point sums -> expected captions (float64), as stats.json's expected_kept."""
    return np.array([int(value) / PROB_SCALE for value in fixed], dtype=np.float64)


def choose_threshold(thresholds: np.ndarray, expected, target) -> int:
    """The t of the grid whose E(t) is closest to `target`; the smallest such t on ties.

    `expected` and `target` must be in the same unit (captions, or both fixed
    point). Smallest on ties: past the largest count E is flat, and the smallest
    t reaching the plateau is the one that says so.
    """
    thresholds = np.asarray(thresholds, dtype=np.int64)
    if len(thresholds) == 0 or len(thresholds) != len(expected):
        raise ValueError(
            f"need one expected size per threshold, got {len(thresholds)} thresholds and {len(expected)} sizes"
        )
    # Python numbers, so that fixed-point ints beyond int64 compare exactly.
    distances = [abs(value - target) for value in (v.item() if hasattr(v, "item") else v for v in expected)]
    best = min(distances)
    return int(min(t for t, d in zip(thresholds.tolist(), distances, strict=True) if d == best))


def refine_grid(thresholds: np.ndarray, expected, target, points: int = 64) -> np.ndarray:
    """A finer integer grid over the interval of the coarse grid that brackets `target`.

    With E nondecreasing, every t below the last grid point whose E <= target,
    or above the first whose E >= target, is no closer to the target than that
    point, so the best integer t lies between the two (both included). The
    result holds every integer there if they are at most `points`, else
    `points` evenly spaced integers including both ends. A target outside
    [E(first), E(last)] gives just the nearer end.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    thresholds = np.asarray(thresholds, dtype=np.int64)
    values = [v.item() if hasattr(v, "item") else v for v in expected]
    if len(values) != len(thresholds) or len(values) == 0:
        raise ValueError(
            f"need one expected size per threshold, got {len(thresholds)} thresholds and {len(values)} sizes"
        )
    below = [i for i, v in enumerate(values) if v <= target]
    above = [i for i, v in enumerate(values) if v >= target]
    lo_index = below[-1] if below else 0
    hi_index = above[0] if above else len(values) - 1
    low, high = sorted((int(thresholds[lo_index]), int(thresholds[hi_index])))
    if high - low + 1 <= points:
        return np.arange(low, high + 1, dtype=np.int64)
    return np.unique(np.rint(np.linspace(low, high, points)).astype(np.int64))
