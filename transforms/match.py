"""MatchEntries: adds each caption's matched entry ids to its batch."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms.columns import ENTRY_IDS, TEXT
from transforms.matching import EntryMatcher
from transforms.metadata_list import MetadataError, parse_metadata


def load_metadata(path: str):
    """Read and check a metadata list from any Beam filesystem path."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            data = handle.read()
    except Exception as error:  # noqa: BLE001 - surfaced as one clear line
        raise MetadataError(f"cannot read metadata file {path}: {error}") from None
    return parse_metadata(data, path)


def _load_matcher(path: str, sha256: str) -> EntryMatcher:
    metadata = load_metadata(path)
    if metadata.sha256 != sha256:
        # Ids are list positions: a list edited after the run started would
        # silently mislabel every match.
        raise MetadataError(f"metadata file {path} changed after the run started (sha256 {metadata.sha256[:12]} != {sha256[:12]})")
    return EntryMatcher(metadata.entries)


class _MatchEntriesFn(beam.DoFn):
    """Batch -> the same batch plus an `entry_ids` list<int32> column."""

    def __init__(self, metadata_path: str, metadata_sha256: str, matcher_handle: shared.Shared):
        self._path = metadata_path
        self._sha256 = metadata_sha256
        self._handle = matcher_handle
        self._matched = Metrics.counter("curation", "records_matched")
        self._matches = Metrics.counter("curation", "entry_matches")

    def setup(self):
        # One automaton per worker process, shared by every DoFn instance and
        # thread in it; built from the file, not unpickled per bundle.
        self._matcher = self._handle.acquire(lambda: _load_matcher(self._path, self._sha256), tag=self._sha256)

    def process(self, batch: pa.RecordBatch):
        offsets, flat_ids = self._matcher.match_batch(batch.column(TEXT).to_pylist())
        entry_ids = pa.ListArray.from_arrays(pa.array(offsets.astype("int32")), pa.array(flat_ids, pa.int32()))
        self._matched.inc(int((offsets[1:] > offsets[:-1]).sum()))
        self._matches.inc(len(flat_ids))
        yield batch.append_column(ENTRY_IDS, entry_ids)


class MatchEntries(beam.PTransform):
    """Match every caption against the metadata list.

    In: pa.RecordBatch with a `text` column. Out: the same batches with an
    `entry_ids` column (list<int32>, ascending ids, the curation-spec's match
    set). The metadata is read from `metadata_path` once per worker process.
    """

    def __init__(self, metadata_path: str, metadata_sha256: str):
        super().__init__()
        self._path = metadata_path
        self._sha256 = metadata_sha256

    def expand(self, batches):
        return batches | "MatchBatch" >> beam.ParDo(_MatchEntriesFn(self._path, self._sha256, shared.Shared()))
