"""MatchEntries: adds each caption's matched entry ids to its batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.utils import shared

from transforms.beam import metrics
from transforms.beam.modes import CurationMode
from transforms.core.columns import ENTRY_IDS, TEXT
from transforms.core.matching import PROFILE_CAPTIONS
from transforms.runtime.quick_exit import exit_quickly_at_end

__all__ = ["LocalWorkers", "MatchEntries"]


@dataclass(frozen=True)
class LocalWorkers:
    """Settings for worker processes on this machine (DirectRunner, embedded job service)."""

    cache_dir: Optional[str]  # the automaton cache; None: build every time


class _MatchEntriesFn(beam.DoFn):
    """Batch -> the same batch plus an `entry_ids` list<int32> column."""

    def __init__(self, mode: CurationMode, matcher_handle: shared.Shared, local: Optional[LocalWorkers]):
        self._mode = mode
        self._handle = matcher_handle
        self._local = local
        self._matched = Metrics.counter(metrics.CURATION, "records_matched")
        self._matches = Metrics.counter(metrics.CURATION, "entry_matches")

    def setup(self):
        if self._local is not None:
            exit_quickly_at_end()
        self._matcher = None

    def _matcher_for(self, batch: pa.RecordBatch):
        # One matcher per worker process, shared by every DoFn instance and
        # thread in it; built from the file (or loaded from the machine's
        # cache), not unpickled per bundle. Taken at the first batch rather
        # than in setup, so that a worker that builds it profiles its layout
        # on the captions it is about to match (transforms.core.matching).
        cache_dir = self._local.cache_dir if self._local is not None else None
        mode = self._mode
        texts = batch.column(TEXT).slice(0, PROFILE_CAPTIONS)
        return self._handle.acquire(lambda: mode.load_matcher(cache_dir, texts.to_pylist()), tag=mode.metadata_sha256)

    def process(self, batch: pa.RecordBatch):
        if self._matcher is None:
            self._matcher = self._matcher_for(batch)
        batch, offsets, flat_ids = self._matcher.match(batch)
        entry_ids = pa.ListArray.from_arrays(pa.array(offsets.astype("int32")), pa.array(flat_ids, pa.int32()))
        self._matched.inc(int((offsets[1:] > offsets[:-1]).sum()))
        self._matches.inc(len(flat_ids))
        yield batch.append_column(ENTRY_IDS, entry_ids)


class MatchEntries(beam.PTransform):
    """Match every caption against the metadata of `mode` (transforms.beam.modes).

    In: pa.RecordBatch with a `text` column. Out: the same batches with an
    `entry_ids` column (list<int32>, ascending ids, docs/curation-spec.md section 3: the match
    set). The metadata is read from its path once per worker process.
    With MetaClip2 each caption is matched against its language's list only;
    the ids are global (languages' lists concatenated in sorted order) and an
    internal `__language` column says which list.
    With `local` (engines that start worker processes on this machine), the
    metaclip1 automaton goes through the machine's cache
    (transforms.runtime.automaton_cache) and worker processes end without heap
    teardown (transforms.runtime.quick_exit).
    """

    def __init__(self, mode: CurationMode, local: Optional[LocalWorkers] = None):
        super().__init__()
        self._mode = mode
        self._local = local

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection[pa.RecordBatch]:
        return batches | "MatchBatch" >> beam.ParDo(_MatchEntriesFn(self._mode, shared.Shared(), self._local))
