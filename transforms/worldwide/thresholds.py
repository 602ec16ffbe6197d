"""MetaCLIP 2 worldwide mode: a t per language (docs/curation-spec.md, section 6).

Pure Python and numpy, no Beam import (docs/worldwide.md). English keeps `t_en`;
every other language gets the t among its own counts whose tail share is closest
to English's (`language_thresholds`). Where the published MetaCLIP 2 reference
code is ambiguous or does not run, the choice made here is written below.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import numpy as np

from transforms.core.balancing import entry_probabilities
from transforms.core.plan import BalancingPlan
from transforms.worldwide.metadata import LanguageMetadata, require_language

# Decisions, and why (the MetaCLIP 2 reference's `t_to_p` / `p_to_t` were read
# for them; docs/worldwide.md has a worked example):
#
# * The tail at t is the entries balancing keeps whole: count <= t
#   (p_e = 1 iff count <= t, spec section 6). tail_share(t) = sum of the counts
#   <= t / sum of all counts. The reference's per-language search computes
#   exactly this (cumulative sums of the sorted counts, each including the count
#   at that position), while its English share uses count < t_en. The two agree
#   unless an English entry's count equals t_en exactly; using one definition on
#   both sides means a language whose counts equal English's gets English's tail
#   (the same entries kept whole), which "<" on both sides would not give.
# * Candidates: the distinct positive counts of the language. Between two of
#   them the share does not change, so nothing else could be closer; 0 is left
#   out (t = 0 would drop every caption of the language, and 0/0 in the
#   reference gives NaN).
# * Closest: smallest |tail_share(t) - English's share|, compared exactly in
#   integers (no float ties); on an exact tie the smaller t, as the reference's
#   argmin over ascending counts picks the first.
# * English keeps t_en itself (as in the reference). A language whose counts
#   are all 0 gets t_en (no caption of it matches, t changes nothing). If no
#   caption matched an English entry, English's share is undefined: every
#   language gets t_en, MetaCLIP 1's single-t rule.


def tail_share(counts: np.ndarray, t: int) -> float:
    """The spec's tail_share(t): the share of all matches on entries with count below t (count < t)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("the tail share is undefined when every count is 0")
    return int(counts[counts < t].sum()) / total


def threshold_for_tail_share(counts: np.ndarray, share_numerator: int, share_denominator: int) -> int | None:
    """The t among `counts`' distinct positive values whose tail share is closest to the given share.

    The share is the fraction `share_numerator / share_denominator`, compared
    exactly; ties go to the smaller t. None when every count is 0 or the
    share's denominator is 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    values, multiplicities = np.unique(counts[counts > 0], return_counts=True)
    if len(values) == 0 or share_denominator <= 0:
        return None
    # Tail share of candidate values[k] is at_or_below[k] / total; strictly increasing in k.
    at_or_below = np.cumsum(values * multiplicities).tolist()
    total = at_or_below[-1]
    # Compare a/total with n/d as a*d with n*total: Python ints, no overflow, no float ties.
    target = share_numerator * total
    k = bisect.bisect_left(at_or_below, target, key=lambda mass: mass * share_denominator)
    candidates = [i for i in (k - 1, k) if 0 <= i < len(values)]
    best = min(candidates, key=lambda i: (abs(at_or_below[i] * share_denominator - target), values[i]))
    return int(values[best])


def language_thresholds(
    counts: np.ndarray, metadata: LanguageMetadata, t_reference: int, reference: str = "en"
) -> dict[str, int]:
    """t for every language of the metadata: English `t_reference`, the others matched to its tail share.

    `counts` is the global count array (one int64 per global id). Raises
    MetadataError when the metadata has no list for `reference`.
    """
    require_language(metadata, reference)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (metadata.num_entries,):
        raise ValueError(f"counts has shape {counts.shape}, the metadata {metadata.num_entries} global ids")
    if t_reference < 1:
        raise ValueError(f"the reference threshold must be >= 1, got {t_reference}")

    def counts_of(language: str) -> np.ndarray:
        span = metadata.entry_range(language)
        return counts[span.start : span.stop]

    reference_counts = counts_of(reference)
    # English's share counts strictly below t_en (the spec's "below t", the
    # reference's `< t_en`); a candidate t of another language counts its own
    # entries too (the reference's cumulative sum): tail_share(t + 1).
    share_numerator = int(reference_counts[reference_counts < t_reference].sum())
    share_denominator = int(reference_counts.sum())
    thresholds = {}
    for language in metadata.languages:
        t = None
        if language != reference:
            t = threshold_for_tail_share(counts_of(language), share_numerator, share_denominator)
        thresholds[language] = t_reference if t is None else t
    return thresholds


def entry_thresholds(metadata: LanguageMetadata, thresholds: Mapping[str, int]) -> np.ndarray:
    """t of every global id (int64), for `balancing.entry_probabilities(counts, per-entry t)`."""
    missing = [language for language in metadata.languages if language not in thresholds]
    if missing:
        raise KeyError(f"no threshold for language(s) {', '.join(missing)}")
    return np.repeat(
        np.asarray([thresholds[language] for language in metadata.languages], dtype=np.int64), metadata.sizes
    )


def plan_for_languages(counts: np.ndarray, metadata: LanguageMetadata, threshold: int) -> BalancingPlan:
    """MetaCLIP 2: English's t is `threshold`; every other language's keeps English's tail share."""
    thresholds = language_thresholds(counts, metadata, threshold)
    return BalancingPlan(
        entry_probabilities(counts, entry_thresholds(metadata, thresholds)), int(threshold), thresholds
    )
