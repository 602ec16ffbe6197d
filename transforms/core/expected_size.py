"""Subset size versus threshold: E(t) = sum over captions of P_keep(t), and picking t.

Pure Python and numpy, no Beam import. E(t) is computed from the match index
alone (each caption's entry ids and the per-entry counts), with the very
functions the sampler uses (`balancing.entry_probabilities` and
`balancing.keep_probabilities`), so E at the run's t equals stats.json's
`expected_kept` to the last fixed-point unit.

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

from transforms.core.balancing import entry_probabilities, keep_probabilities

# Fixed-point unit of keep probabilities; equal to transforms.beam.stats._PROB_SCALE
# (not imported from there because that module imports Beam).
PROB_SCALE = 1 << 40

# A batch's fixed-point sum must fit in int64: rows * 2**40 < 2**63.
_MAX_BATCH_ROWS = 1 << 22


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

    Only the entries this batch names are looked at: their counts are gathered
    once, the ids renumbered into that small set, and per t the entry
    probabilities of just those entries are computed, element for element the
    same values `entry_probabilities(counts, t)` gives, so P is bit-identical to
    the sampler's keep_prob.

    A caption with an entry of count <= t has p_e = 1 for it, so P = 1.0
    exactly (a factor 1 - p_e = 0.0). Only captions whose rarest entry is
    still above t need the product: with the captions ordered by that rarest
    count, descending, they are a prefix, and each t costs only its prefix.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.int64)
    num_rows = len(offsets) - 1
    if num_rows > _MAX_BATCH_ROWS:
        raise ValueError(
            f"a batch of {num_rows} captions could overflow the int64 sum; split it (at most {_MAX_BATCH_ROWS})"
        )
    flat_ids = np.asarray(flat_ids, dtype=np.int64)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    totals = np.zeros(len(thresholds), dtype=np.int64)
    if len(flat_ids) == 0:
        return totals  # no caption matched: P = 0 for every t
    used, local_ids = np.unique(flat_ids, return_inverse=True)
    used_counts = np.asarray(counts, dtype=np.int64)[used]
    # Matched captions only (no match: P = 0), as (start, length) segments of local_ids.
    lengths = np.diff(offsets)
    starts = offsets[:-1][lengths > 0]
    lengths = lengths[lengths > 0]
    rarest = np.minimum.reduceat(used_counts[local_ids], starts)
    order = np.argsort(-rarest, kind="stable")
    rarest, starts, lengths = rarest[order], starts[order], lengths[order]
    # The segments laid out again in that order, each one's ids unchanged (same product order).
    prefix_offsets = np.concatenate(([0], np.cumsum(lengths)))
    gather = np.repeat(starts - prefix_offsets[:-1], lengths) + np.arange(prefix_offsets[-1])
    ordered_ids = local_ids[gather]
    descending = -rarest
    for index, threshold in enumerate(thresholds.tolist()):
        hard = int(np.searchsorted(descending, -threshold, side="left"))  # captions with rarest > t
        total = (len(rarest) - hard) * PROB_SCALE
        if hard:
            probs = keep_probabilities(
                prefix_offsets[: hard + 1],
                ordered_ids[: prefix_offsets[hard]],
                entry_probabilities(used_counts, threshold),
            )
            total += int(np.rint(probs * PROB_SCALE).astype(np.int64).sum())
        totals[index] = total
    return totals


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
