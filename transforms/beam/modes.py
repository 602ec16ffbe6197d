"""Curation modes: what differs between MetaCLIP 1 (one list) and MetaCLIP 2 (a list per language).

The pipeline asks a mode five things (`CurationMode`): its metadata (read once at start,
for the sha256 and the number of entries), a matcher (built on each worker), the
balancing plan once the counts are known, the entry names (figures.json) and the
entry_counts.json document. Everything else is the same for both, so the graph never
asks which mode it runs. A mode is a small frozen object: it is pickled into the
DoFns, and the metadata is read again from its path wherever it is needed (on a
worker, in the plan), never shipped with it.

Not PTransforms, but the metadata is read through Beam's filesystems
(transforms.beam.io), hence this folder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Optional, Protocol, Sequence

import numpy as np
import pyarrow as pa

from transforms.beam.io import load_language_metadata, load_metadata
from transforms.core.arrow import list_layout
from transforms.core.columns import (
    ENTRY_IDS,
    KEEP_PROB,
    KEY,
    KEY_HASH,
    LANG,
    LANGUAGE,
    SOURCE_FILE,
    SOURCE_ROW,
    TEXT,
)
from transforms.core.matching import DAACHORSE, EntryMatcher
from transforms.core.plan import BalancingPlan, plan_for_threshold
from transforms.metadata.lists import MetadataError
from transforms.runtime.automaton_cache import cached_matcher
from transforms.worldwide.language_id import language_identifier
from transforms.worldwide.language_map import LanguageMap
from transforms.worldwide.matcher import WorldwideMatcher
from transforms.worldwide.metadata import require_language
from transforms.worldwide.thresholds import plan_for_languages

__all__ = ["CurationMode", "MetaClip1", "MetaClip2", "WorldwideSettings"]

MATCHES_SCHEMA = pa.schema([(KEY, pa.string()), (ENTRY_IDS, pa.list_(pa.int32())), (KEEP_PROB, pa.float64())])
# metaclip2: the language each caption was matched against; entry ids index that language's list.
WORLDWIDE_MATCHES_SCHEMA = pa.schema(
    [(KEY, pa.string()), (LANG, pa.string()), (ENTRY_IDS, pa.list_(pa.int32())), (KEEP_PROB, pa.float64())]
)


class BatchMatcher(Protocol):
    """A worker's matcher: a batch in; the batch (maybe with more columns), list offsets and flat entry ids out."""

    def match(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]: ...


class CurationMode(Protocol):
    """What the pipeline needs of a curation mode (MetaClip1, MetaClip2)."""

    name: ClassVar[str]
    # Whether one t holds for every entry: E(t) over a grid of t and --target_size need it.
    single_threshold: ClassVar[bool]
    metadata_path: str
    metadata_sha256: str
    num_entries: int

    def load_matcher(self, cache_dir: Optional[str], profile: Sequence[str] = ()) -> BatchMatcher:
        """The worker's matcher; `profile`: captions like those it will match, should it be built."""
        ...

    def plan(self, counts: np.ndarray, threshold: int) -> BalancingPlan: ...

    def entry_names(self) -> list[str]: ...

    def counts_document(self, counts: np.ndarray) -> dict: ...

    @property
    def matches_schema(self) -> pa.Schema: ...

    def match_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


def _changed(path: str, found: str, expected: str) -> MetadataError:
    # Ids are list positions: a list edited after the run started would silently mislabel every match.
    return MetadataError(f"metadata file {path} changed after the run started (sha256 {found[:12]} != {expected[:12]})")


class _EntryBatchMatcher:
    """metaclip1 on a worker: every caption against the one automaton."""

    def __init__(self, matcher: EntryMatcher):
        self._matcher = matcher

    def match(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        offsets, flat_ids = self._matcher.match_batch(batch.column(TEXT).to_pylist())
        return batch, offsets, flat_ids


@dataclass(frozen=True)
class MetaClip1:
    """MetaCLIP 1: one metadata list (a JSON list of strings), one t for every entry."""

    name: ClassVar[str] = "metaclip1"
    single_threshold: ClassVar[bool] = True
    metadata_path: str
    metadata_sha256: str
    num_entries: int
    matcher: str = DAACHORSE  # the Aho-Corasick library (transforms.core.matching.MATCHERS)

    @classmethod
    def load(cls, path: str, matcher: str = DAACHORSE) -> "MetaClip1":
        """Read and check the list now (raises MetadataError with one line)."""
        metadata = load_metadata(path)
        return cls(path, metadata.sha256, len(metadata), matcher)

    def _build(self, profile: Sequence[str] = ()) -> EntryMatcher:
        metadata = load_metadata(self.metadata_path, self.metadata_sha256)
        if metadata.sha256 != self.metadata_sha256:
            raise _changed(self.metadata_path, metadata.sha256, self.metadata_sha256)
        return EntryMatcher(metadata.entries, self.matcher, profile)

    def load_matcher(self, cache_dir: Optional[str], profile: Sequence[str] = ()) -> BatchMatcher:
        # The cache is keyed by the sha256 the run started with: a hit is that very list,
        # whatever captions its layout was profiled on (the layout changes no match).
        build = functools.partial(self._build, profile)
        return _EntryBatchMatcher(cached_matcher(cache_dir, self.metadata_sha256, build, matcher=self.matcher))

    def plan(self, counts: np.ndarray, threshold: int) -> BalancingPlan:
        return plan_for_threshold(counts, threshold)

    def entry_names(self) -> list[str]:
        return load_metadata(self.metadata_path, self.metadata_sha256).entries

    def counts_document(self, counts: np.ndarray) -> dict:
        """entry_counts.json: every entry -> its caption count, in metadata order."""
        return dict(zip(self.entry_names(), counts.tolist(), strict=True))

    @property
    def matches_schema(self) -> pa.Schema:
        return MATCHES_SCHEMA

    def match_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


@dataclass(frozen=True)
class WorldwideSettings:
    """--mode metaclip2: where each caption's language comes from (docs/worldwide.md)."""

    lang_field: Optional[str]  # a column of the batches, or None
    language_id: str  # the --language_id value: auto, none or a model name
    language_map: Optional[str]  # the --language_map text (JSON object or pairs), already read
    default_language: str


class _WorldwideBatchMatcher:
    """metaclip2 on a worker: the matcher, the code resolver, the language-id model."""

    def __init__(self, path: str, sha256: str, settings: WorldwideSettings):
        metadata = load_language_metadata(path)
        if metadata.sha256 != sha256:
            raise _changed(path, metadata.sha256, sha256)
        # Automata are built per language on first use, only for languages present.
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
                for i, code in zip(unknown, self.identifier.identify([texts[i] for i in unknown]), strict=True):
                    codes[i] = code
        return [self.resolve(code) for code in codes]

    def match(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        languages = self.languages(batch)
        offsets, flat_ids = self.matcher.match_batch(batch.column(TEXT).to_pylist(), languages)
        return batch.append_column(LANGUAGE, pa.array(languages, pa.string())), offsets, flat_ids


@dataclass(frozen=True)
class MetaClip2:
    """MetaCLIP 2 worldwide: a list per language, one global id space, a t per language.

    Global ids number the languages' lists concatenated in sorted language order;
    `language_offsets` holds (language, its first global id).
    """

    name: ClassVar[str] = "metaclip2"
    single_threshold: ClassVar[bool] = False
    metadata_path: str
    metadata_sha256: str
    num_entries: int
    language_offsets: tuple = ()
    settings: Optional[WorldwideSettings] = None  # set before the run; the matcher needs it

    @classmethod
    def load(cls, path: str, settings: Optional[WorldwideSettings] = None) -> "MetaClip2":
        """Read and check the lists now, English among them (raises MetadataError with one line)."""
        metadata = load_language_metadata(path)
        require_language(metadata, "en")
        offsets = tuple(zip(metadata.languages, metadata.offsets, strict=True))
        return cls(path, metadata.sha256, metadata.num_entries, offsets, settings)

    def load_matcher(self, cache_dir: Optional[str], profile: Sequence[str] = ()) -> BatchMatcher:
        # No automaton cache: a worker builds only the languages its captions are in,
        # with pyahocorasick, which has no layout to profile.
        return _WorldwideBatchMatcher(self.metadata_path, self.metadata_sha256, self.settings)

    def plan(self, counts: np.ndarray, threshold: int) -> BalancingPlan:
        return plan_for_languages(counts, load_language_metadata(self.metadata_path), threshold)

    def entry_names(self) -> list[str]:
        """'language:entry' by global id."""
        metadata = load_language_metadata(self.metadata_path)
        return [f"{language}:{entry}" for language in metadata.languages for entry in metadata.entries[language]]

    def counts_document(self, counts: np.ndarray) -> dict:
        """entry_counts.json: {language: {entry: count}}, languages sorted (the global id order)."""
        metadata = load_language_metadata(self.metadata_path)
        counts = counts.tolist()
        document = {}
        for language in metadata.languages:
            span = metadata.entry_range(language)
            document[language] = dict(zip(metadata.entries[language], counts[span.start : span.stop], strict=True))
        return document

    @property
    def matches_schema(self) -> pa.Schema:
        return WORLDWIDE_MATCHES_SCHEMA

    def match_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """matches/ rows: `lang` and entry ids into that language's own list."""
        offsets = dict(self.language_offsets)
        languages = batch.column(LANGUAGE).to_pylist()
        list_offsets, flat = list_layout(batch.column(ENTRY_IDS))
        row_offsets = np.fromiter(
            (offsets.get(language, 0) for language in languages), dtype=np.int64, count=len(languages)
        )
        local = flat.astype(np.int64) - np.repeat(row_offsets, np.diff(list_offsets))
        entry_ids = pa.ListArray.from_arrays(
            pa.array(list_offsets.astype(np.int32)), pa.array(local.astype(np.int32), pa.int32())
        )
        names = [KEY, LANG, ENTRY_IDS, KEEP_PROB, KEY_HASH, SOURCE_FILE, SOURCE_ROW]
        columns = [
            batch.column(KEY),
            batch.column(LANGUAGE),
            entry_ids,
            batch.column(KEEP_PROB),
            batch.column(KEY_HASH),
            batch.column(SOURCE_FILE),
            batch.column(SOURCE_ROW),
        ]
        return pa.RecordBatch.from_arrays(columns, names=names)
