"""BalancedSample: MetaCLIP's keep probability and a deterministic keep decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.balancing import entry_probabilities, keep_decisions, keep_probabilities
from transforms.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, KEY_HASH
from transforms.hashing import key_hashes
from transforms.worldwide import LanguageMetadata, entry_thresholds, language_thresholds


def list_layout(list_array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of an Arrow list array, slices included."""
    offsets = list_array.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], list_array.flatten().to_numpy(zero_copy_only=False)


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
    return BalancingPlan(entry_probabilities(counts, entry_thresholds(metadata, thresholds)), int(threshold), thresholds)


class _SampleFn(beam.DoFn):
    """Batch + plan side input -> batch plus keep_prob, key hash and kept flag."""

    def __init__(self, seed: int):
        self._seed = seed
        self._kept = Metrics.counter("curation", "records_kept")
        self._sampled = Metrics.counter("curation", "records_sampled")

    def process(self, batch: pa.RecordBatch, plan: BalancingPlan):
        offsets, flat_ids = list_layout(batch.column(ENTRY_IDS))
        keep_prob = keep_probabilities(offsets, flat_ids, plan.entry_probs)
        hashes = key_hashes(batch.column(KEY).to_pylist())
        kept = keep_decisions(keep_prob, hashes, self._seed)
        self._kept.inc(int(kept.sum()))
        self._sampled.inc(batch.num_rows)
        yield (
            batch.append_column(KEEP_PROB, pa.array(keep_prob, pa.float64()))
            .append_column(KEY_HASH, pa.array(hashes, pa.uint64()))
            .append_column(KEPT, pa.array(kept, pa.bool_()))
        )


class BalancedSample(beam.PTransform):
    """Decide, for every matched caption, whether the balanced subset keeps it.

    In: batches with `key` and `entry_ids`; `plan`, a single-element
    PCollection of BalancingPlan (see plan_for_threshold). Out: the same
    batches plus `keep_prob` (float64, 1 - prod(1 - p_e)), an internal key
    hash and the keep flag, which is a pure function of (seed, key) and keep_prob.
    """

    def __init__(self, plan, seed: int):
        super().__init__()
        self._plan = plan
        self._seed = seed

    def expand(self, batches):
        return batches | "KeepOrDrop" >> beam.ParDo(_SampleFn(self._seed), plan=beam.pvalue.AsSingleton(self._plan))
