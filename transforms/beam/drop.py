"""DropRecords: a stage that drops records by a rule, each with the reason it was dropped.

In: record batches. Out: `Dropped`: the batches of the records the rule keeps (columns
unchanged) and the dropped records as filtered/ takes them (key, source columns, the
reason in `filter`, key hash). The rule is pure (transforms/filters/); this module only
runs it: built once per worker process (`setup`), asked per batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from transforms.beam import metrics
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes

FILTER = "filter"  # filtered/'s column of the reason a record was dropped
DROPPED = "dropped"


class DropRule:
    """What a dropping stage asks of its rule; subclasses are pickled into the workers."""

    names: Sequence[str] = ()  # the reasons, as filtered/ and stats.json name them

    def setup(self) -> None:
        """Load what the rule needs (a list, a model), once per worker process."""

    def first_failed(self, batch: pa.RecordBatch) -> np.ndarray:
        """Per row: the index in `names` of the reason it is dropped for, or -1 when it is kept."""
        raise NotImplementedError


def dropped_rows(batch: pa.RecordBatch, failed: np.ndarray, names: Sequence[str]) -> pa.RecordBatch:
    """The rows of `batch` whose `failed` index is >= 0, as filtered/ takes them."""
    dropped = np.flatnonzero(failed >= 0)
    rows = batch.select([KEY, SOURCE_FILE, SOURCE_ROW]).take(pa.array(dropped))
    reasons = pa.array([names[index] for index in failed[dropped].tolist()], pa.string())
    hashes = pa.array(key_hashes(rows.column(KEY).to_pylist()), pa.uint64())
    return rows.append_column(FILTER, reasons).append_column(KEY_HASH, hashes)


class Dropped(NamedTuple):
    """What a dropping stage hands on."""

    batches: PCollection  # [pa.RecordBatch]: the records the rule keeps
    dropped: PCollection  # [pa.RecordBatch]: key, source columns, filter (the reason), key hash


class _DropFn(beam.DoFn):
    def __init__(self, rule: DropRule):
        self._rule = rule
        self._counters = {name: Metrics.counter(metrics.FILTERED, name) for name in rule.names}

    def setup(self):
        self._rule.setup()

    def process(self, batch: pa.RecordBatch):
        failed = self._rule.first_failed(batch)
        kept = failed < 0
        if kept.all():
            yield batch
            return
        if kept.any():
            yield batch.filter(pa.array(kept))
        for index, count in zip(*np.unique(failed[~kept], return_counts=True), strict=True):
            self._counters[self._rule.names[index]].inc(int(count))
        yield beam.pvalue.TaggedOutput(DROPPED, dropped_rows(batch, failed, self._rule.names))


class DropRecords(beam.PTransform):
    """Drop the records `rule` fails; see the module docstring. Beam metrics: "filtered" per reason."""

    def __init__(self, rule: DropRule):
        super().__init__()
        self._rule = rule

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Dropped:
        results = batches | "DropRecords" >> beam.ParDo(_DropFn(self._rule)).with_outputs(DROPPED, main="kept")
        return Dropped(results["kept"], results[DROPPED])
