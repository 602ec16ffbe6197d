"""BalancedSample: MetaCLIP's keep probability and a deterministic keep decision."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms.balancing import entry_probabilities, keep_decisions, keep_probabilities
from transforms.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, KEY_HASH
from transforms.hashing import key_hashes


def list_layout(list_array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of an Arrow list array, slices included."""
    offsets = list_array.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], list_array.flatten().to_numpy(zero_copy_only=False)


class _SampleFn(beam.DoFn):
    """Batch + counts side input -> batch plus keep_prob, key hash and kept flag."""

    def __init__(self, threshold: int, seed: int):
        self._threshold = threshold
        self._seed = seed
        self._kept = Metrics.counter("curation", "records_kept")
        self._counts_seen = None

    def _probabilities(self, counts: np.ndarray) -> np.ndarray:
        # The side input object is the same for every element of a bundle;
        # compute the 500k entry probabilities once for it, not per batch.
        if counts is not self._counts_seen:
            self._counts_seen = counts
            self._probs = entry_probabilities(counts, self._threshold)
        return self._probs

    def process(self, batch: pa.RecordBatch, counts: np.ndarray):
        offsets, flat_ids = list_layout(batch.column(ENTRY_IDS))
        keep_prob = keep_probabilities(offsets, flat_ids, self._probabilities(counts))
        hashes = key_hashes(batch.column(KEY).to_pylist())
        kept = keep_decisions(keep_prob, hashes, self._seed)
        self._kept.inc(int(kept.sum()))
        yield (
            batch.append_column(KEEP_PROB, pa.array(keep_prob, pa.float64()))
            .append_column(KEY_HASH, pa.array(hashes, pa.uint64()))
            .append_column(KEPT, pa.array(kept, pa.bool_()))
        )


class BalancedSample(beam.PTransform):
    """Decide, for every matched caption, whether the balanced subset keeps it.

    In: batches with `key` and `entry_ids`; `counts`, the single-element
    output of CountEntries. Out: the same batches plus `keep_prob` (float64,
    1 - prod(1 - p_e)), an internal key hash and the keep flag, which is a pure
    function of (seed, key) and keep_prob.
    """

    def __init__(self, counts, threshold: int, seed: int):
        super().__init__()
        self._counts = counts
        self._threshold = threshold
        self._seed = seed

    def expand(self, batches):
        return batches | "KeepOrDrop" >> beam.ParDo(
            _SampleFn(self._threshold, self._seed), counts=beam.pvalue.AsSingleton(self._counts)
        )
