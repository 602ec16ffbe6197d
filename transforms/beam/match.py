"""MatchEntries: adds each caption's matched entry ids to its batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms.beam.io import load_language_metadata, load_metadata
from transforms.core.columns import ENTRY_IDS, LANGUAGE, TEXT
from transforms.core.matching import EntryMatcher
from transforms.language_id import language_identifier
from transforms.metadata.lists import MetadataError
from transforms.runtime.automaton_cache import cached_matcher
from transforms.runtime.worker_exit import exit_quickly_at_end
from transforms.worldwide import (
    LanguageMap,
    WorldwideMatcher,
)


def _build_matcher(path: str, sha256: str) -> EntryMatcher:
    metadata = load_metadata(path, sha256)
    if metadata.sha256 != sha256:
        # Ids are list positions: a list edited after the run started would
        # silently mislabel every match.
        raise MetadataError(f"metadata file {path} changed after the run started (sha256 {metadata.sha256[:12]} != {sha256[:12]})")
    return EntryMatcher(metadata.entries)


def _load_matcher(path: str, sha256: str, cache_dir: Optional[str]) -> EntryMatcher:
    # The cache is keyed by the sha256 the run started with: a hit is that very list.
    return cached_matcher(cache_dir, sha256, lambda: _build_matcher(path, sha256))


@dataclass(frozen=True)
class LocalWorkers:
    """Settings for worker processes on this machine (DirectRunner, embedded job service)."""

    cache_dir: Optional[str]  # the automaton cache; None: build every time


@dataclass(frozen=True)
class WorldwideSettings:
    """--mode metaclip2: where each caption's language comes from (docs/worldwide.md)."""

    lang_field: Optional[str]  # a column of the batches, or None
    language_id: str  # the --language_id value: auto, none or a model name
    language_map: Optional[str]  # the --language_map text (JSON object or pairs), already read
    default_language: str


class _WorldwideMatcher:
    """What a worker needs for metaclip2: the matcher, the code resolver, the language-id model."""

    def __init__(self, path: str, sha256: str, settings: WorldwideSettings):
        metadata = load_language_metadata(path)
        if metadata.sha256 != sha256:
            raise MetadataError(f"metadata {path} changed after the run started (sha256 {metadata.sha256[:12]} != {sha256[:12]})")
        self.matcher = WorldwideMatcher(metadata)
        self.resolve = LanguageMap.parse(settings.language_map).resolver(metadata.languages, settings.default_language)
        self.identifier = language_identifier(settings.language_id, settings.lang_field)
        self.lang_field = settings.lang_field

    def languages(self, batch: pa.RecordBatch) -> list[str]:
        """Each caption's metadata language: its field, else the model, else the default."""
        n = batch.num_rows
        codes = batch.column(self.lang_field).to_pylist() if self.lang_field else [None] * n
        if self.identifier is not None:
            unknown = [i for i, code in enumerate(codes) if not (isinstance(code, str) and code.strip())]
            if unknown:
                texts = batch.column(TEXT).to_pylist()
                for i, code in zip(unknown, self.identifier.identify([texts[i] for i in unknown])):
                    codes[i] = code
        return [self.resolve(code) for code in codes]


class _MatchEntriesFn(beam.DoFn):
    """Batch -> the same batch plus an `entry_ids` list<int32> column."""

    def __init__(self, metadata_path: str, metadata_sha256: str, matcher_handle: shared.Shared, worldwide: Optional[WorldwideSettings],
                 local: Optional["LocalWorkers"]):
        self._path = metadata_path
        self._sha256 = metadata_sha256
        self._handle = matcher_handle
        self._worldwide = worldwide
        self._local = local
        self._matched = Metrics.counter("curation", "records_matched")
        self._matches = Metrics.counter("curation", "entry_matches")

    def setup(self):
        # One automaton per worker process, shared by every DoFn instance and
        # thread in it; built from the file (or loaded from the machine's
        # cache), not unpickled per bundle.
        if self._local is not None:
            exit_quickly_at_end()
        if self._worldwide is None:
            cache_dir = self._local.cache_dir if self._local is not None else None
            self._matcher = self._handle.acquire(lambda: _load_matcher(self._path, self._sha256, cache_dir), tag=self._sha256)
        else:
            # Automata are built per language on first use, only for languages present.
            self._matcher = self._handle.acquire(lambda: _WorldwideMatcher(self._path, self._sha256, self._worldwide), tag=self._sha256)

    def process(self, batch: pa.RecordBatch):
        texts = batch.column(TEXT).to_pylist()
        if self._worldwide is None:
            offsets, flat_ids = self._matcher.match_batch(texts)
        else:
            languages = self._matcher.languages(batch)
            offsets, flat_ids = self._matcher.matcher.match_batch(texts, languages)
            batch = batch.append_column(LANGUAGE, pa.array(languages, pa.string()))
        entry_ids = pa.ListArray.from_arrays(pa.array(offsets.astype("int32")), pa.array(flat_ids, pa.int32()))
        self._matched.inc(int((offsets[1:] > offsets[:-1]).sum()))
        self._matches.inc(len(flat_ids))
        yield batch.append_column(ENTRY_IDS, entry_ids)


class MatchEntries(beam.PTransform):
    """Match every caption against the metadata list.

    In: pa.RecordBatch with a `text` column. Out: the same batches with an
    `entry_ids` column (list<int32>, ascending ids, the curation-spec's match
    set). The metadata is read from `metadata_path` once per worker process.
    With `worldwide` (--mode metaclip2) each caption is matched against its
    language's list only; the ids are global (languages' lists concatenated in
    sorted order) and an internal `__language` column says which list.
    With `local` (engines that start worker processes on this machine), the
    metaclip1 automaton goes through the machine's cache
    (transforms.runtime.automaton_cache) and worker processes end without heap
    teardown (transforms.runtime.worker_exit).
    """

    def __init__(self, metadata_path: str, metadata_sha256: str, worldwide: Optional[WorldwideSettings] = None,
                 local: Optional[LocalWorkers] = None):
        super().__init__()
        self._path = metadata_path
        self._sha256 = metadata_sha256
        self._worldwide = worldwide
        self._local = local

    def expand(self, batches):
        return batches | "MatchBatch" >> beam.ParDo(_MatchEntriesFn(self._path, self._sha256, shared.Shared(), self._worldwide, self._local))
