"""BalancedSample: MetaCLIP's keep probability and a deterministic keep decision."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from transforms.beam import metrics
from transforms.core.arrow import list_layout
from transforms.core.balancing import keep_decisions, keep_probabilities
from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, KEY_HASH
from transforms.core.hashing import key_hashes
from transforms.core.plan import BalancingPlan

__all__ = ["BalancedSample"]


class _SampleFn(beam.DoFn):
    """Batch + plan side input -> batch plus keep_prob, key hash and kept flag."""

    def __init__(self, seed: int):
        self._seed = seed
        self._kept = Metrics.counter(metrics.CURATION, "records_kept")
        self._sampled = Metrics.counter(metrics.CURATION, "records_sampled")

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
    PCollection of BalancingPlan (transforms.core.plan). Out: the same
    batches plus `keep_prob` (float64, 1 - prod(1 - p_e)), an internal key
    hash and the keep flag, which is a pure function of (seed, key) and keep_prob.
    """

    def __init__(self, plan, seed: int):
        super().__init__()
        self._plan = plan
        self._seed = seed

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection[pa.RecordBatch]:
        return batches | "KeepOrDrop" >> beam.ParDo(_SampleFn(self._seed), plan=beam.pvalue.AsSingleton(self._plan))
