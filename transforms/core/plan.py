"""The balancing plan: p_e of every entry once the counts are known (docs/curation-spec.md, section 6).

MetaCLIP 2's plan, a t per language, is transforms.worldwide.thresholds.plan_for_languages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transforms.core.balancing import entry_probabilities


@dataclass(frozen=True)
class BalancingPlan:
    """What the sampler needs once the counts are known: p_e of every entry.

    `threshold` is the run's t (English's t in MetaCLIP 2 mode, where
    `thresholds` holds each language's); a singleton side input, 4 MB for
    500k entries, computed once, not per worker or per batch.
    """

    entry_probs: np.ndarray
    threshold: int
    thresholds: dict = field(default_factory=dict)


def plan_for_threshold(counts: np.ndarray, threshold: int) -> BalancingPlan:
    """MetaCLIP 1: one t for every entry."""
    return BalancingPlan(entry_probabilities(counts, threshold), int(threshold))
