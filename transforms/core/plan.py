"""The balancing plan: p_e of every entry once the counts are known (docs/curation-spec.md, section 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transforms.core.balancing import entry_probabilities
from transforms.worldwide.metadata import LanguageMetadata
from transforms.worldwide.thresholds import entry_thresholds, language_thresholds


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


def plan_for_languages(counts: np.ndarray, metadata: LanguageMetadata, threshold: int) -> BalancingPlan:
    """MetaCLIP 2: English's t is `threshold`; every other language's keeps English's tail share."""
    thresholds = language_thresholds(counts, metadata, threshold)
    return BalancingPlan(
        entry_probabilities(counts, entry_thresholds(metadata, thresholds)), int(threshold), thresholds
    )
