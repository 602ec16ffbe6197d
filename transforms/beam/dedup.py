"""ExactDedup: the url and text kinds of `--dedup` (docs/dedup.md, section 1).

In: record batches (key, text, source columns; `url` for the url kind). Out: `KindOutput`
(transforms.beam.dedup_kinds): the surviving records, one duplicates row per record
removed, and the kind's figures. The rules are transforms.dedup.keys and
transforms.dedup.exact (pure); this module spreads them so that no worker holds more than
one key group:

    candidates   batches -> (key shard, Arrow batch of candidates: dedup key, file, row,
                 sample key, text) of the records with a key, a bundle's cut by shard
                 (keys.url_keys / text_keys)
    groups       GroupByKey on the shard (a hash of the dedup key's bytes mod `shards`): every
                 member of a key group lands in one shard, and a worker holds one shard, a slice
                 of the candidates (64 to 4,096 of them by pool size), at a time; exact.key_group_duplicates sorts it
                 by (key, draw, file, row): each group's first is its survivor, the rest
                 its duplicates
    by file      the duplicates, grouped by input file into sorted row arrays (small: only
                 duplicates travel), a multimap side input each batch looks its files up in
    remove       the batches (kept on disk meanwhile on local engines, transforms.beam.spill)
                 less their duplicates; the duplicates as rows of DUPLICATES_SCHEMA plus
                 `caption` and `duplicate_of_caption` (the survivor's text)

Why Arrow batches by shard rather than one element per record (a CombinePerKey(min) on
the key and a join back, or a GroupByKey on the key): both find the same minimum, but one
element per record costs its encoding and decoding at each shuffle, more than the run's
matching per record; shards move a few large elements, sorted and split with Arrow. The
result is still a minimum over (draw, file, row) of each key group, so it does not depend
on file splits, batch size, bundles, workers or runner.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsMultiMap, PCollection

from transforms.beam.dedup_kinds import KindOutput
from transforms.beam.spill import GroupBatchesByShard, LoadBatches, StoreBatches, _in_global_window
from transforms.beam.stats import SumFigures
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.core.hashing import key_hashes, splitmix64
from transforms.dedup.exact import key_group_duplicates
from transforms.dedup.keys import text_keys, url_keys

__all__ = ["CAPTION", "DUPLICATE_OF_CAPTION", "EXACT_KINDS", "ExactDedup", "URL"]

URL = "url"  # the batch column of a record's URL (the reader's name for --url_field)
EXACT_KINDS = {"url": (URL, url_keys), "text": (TEXT, text_keys)}
CAPTION = "caption"  # duplicates/: the removed record's text
DUPLICATE_OF_CAPTION = "duplicate_of_caption"  # duplicates/: the text of the record it duplicates
_FIGURES = "figures"
_DUPLICATES = "duplicates"
_DEDUP_KEY = "dedup_key"
_CANDIDATE_COLUMNS = [_DEDUP_KEY, SOURCE_FILE, SOURCE_ROW, KEY, TEXT]
# Shards of the dedup keys: the unit a worker holds at once (whole key groups). Each bundle
# sends a piece to each shard, and a piece costs ~10 us to encode whatever its rows: local
# engines make bundles of about one batch, so fewer shards on small pools (`key_shards`).
KEY_SHARDS = 256
MIN_KEY_SHARDS, MAX_KEY_SHARDS = 64, 4096
FLUSH_ROWS = 1 << 17  # candidates a bundle buffers before cutting them by shard


class _CandidatesFn(beam.DoFn):
    """Batches -> (key shard, Arrow batch of candidates: dedup key, file, row, sample key, text).

    The records with a key, buffered over the bundle and cut by `shard_of` their dedup key
    when FLUSH_ROWS are buffered or the bundle ends: a few large elements cross the shuffle
    instead of one per record (per-element encoding cost the time of the matching itself).
    """

    def __init__(self, kind: str, shards: int):
        self._column, self._keys = EXACT_KINDS[kind]
        self._shards = shards

    def start_bundle(self):
        self._buffer: list[pa.RecordBatch] = []
        self._rows = 0

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        dedup_keys = self._keys(batch.column(self._column))
        has_key = np.fromiter((k is not None for k in dedup_keys), dtype=bool, count=len(dedup_keys))
        if not has_key.any():
            return
        index = pa.array(np.flatnonzero(has_key))
        sample_keys = batch.column(KEY).take(index)
        keys = pa.array([k for k in dedup_keys if k is not None], pa.string())
        self._buffer.append(
            pa.RecordBatch.from_arrays(
                [
                    keys,
                    batch.column(SOURCE_FILE).take(index).cast(pa.int64()),
                    batch.column(SOURCE_ROW).take(index).cast(pa.int64()),
                    sample_keys,
                    batch.column(TEXT).take(index),
                ],
                names=_CANDIDATE_COLUMNS,
            )
        )
        self._rows += len(keys)
        if self._rows >= FLUSH_ROWS:
            yield from self._flush()

    def finish_bundle(self):
        for shard, part in self._flush():
            yield _in_global_window((shard, part))

    def _flush(self):
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer).combine_chunks()
        self._buffer, self._rows = [], 0
        shards = shard_of(table.column(_DEDUP_KEY), self._shards)
        order = np.argsort(shards, kind="stable")
        sorted_shards = shards[order]
        bounds = np.flatnonzero(np.r_[True, sorted_shards[1:] != sorted_shards[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            # take, not slice: a slice pickles its parent's whole buffers.
            yield int(sorted_shards[a]), table.take(pa.array(order[a:b])).to_batches()[0]


def key_shards(input_files: int) -> int:
    """Shards for a pool of `input_files` files: 8 a file, within [64, 4096] (a DataComp 1.28B
    pool's ~25k files: 4,096 shards of ~300k candidates; an 8-file benchmark pool: 64)."""
    return int(min(MAX_KEY_SHARDS, max(MIN_KEY_SHARDS, 8 * input_files)))


def shard_of(dedup_keys, shards: int) -> np.ndarray:
    """The shard of each dedup key, in [0, shards): a function of the key's UTF-8 bytes only
    (its length, its first 4 and last 12 bytes, mixed by SplitMix64), so every member of a
    group lands in one shard and every process agrees; computed on the Arrow buffers, with
    no Python per key. Keys are never empty (a record without one is no candidate)."""
    array = dedup_keys.combine_chunks() if isinstance(dedup_keys, pa.ChunkedArray) else dedup_keys
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[array.offset : array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    starts, ends = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
    mixed = (ends - starts).astype(np.uint64)
    prime = np.uint64(0x100000001B3)
    for at in [ends - j for j in range(1, 13)] + [starts + j for j in range(4)]:
        byte = data[np.clip(at, starts, ends - 1)].astype(np.uint64)
        mixed = (mixed ^ byte) * prime  # FNV-style; uint64 wraps
    return (splitmix64(mixed) % np.uint64(shards)).astype(np.int64)


def _duplicates_by_file(item, seed: int):
    """(shard, its candidate batches) -> (file, (rows, survivor keys, survivor texts)) of the
    duplicates it holds, per input file (exact.sorted_duplicates: each group's smallest
    (draw, file, row) survives; the draws only where a key has several members)."""
    _, parts = item
    if not parts:  # an empty shard (GroupBatchesByShard yields every shard)
        return
    table = pa.Table.from_batches(list(parts)).combine_chunks()
    duplicate, survivor = key_group_duplicates(
        table.column(_DEDUP_KEY), table.column(KEY), table.column(SOURCE_FILE), table.column(SOURCE_ROW), seed
    )
    if len(duplicate) == 0:
        return
    files = table.column(SOURCE_FILE).to_numpy()[duplicate]
    rows = table.column(SOURCE_ROW).to_numpy()[duplicate]
    order = np.lexsort((rows, files))
    duplicate, survivor, files, rows = duplicate[order], survivor[order], files[order], rows[order]
    survivor_keys = table.column(KEY).take(pa.array(survivor))
    survivor_texts = table.column(TEXT).take(pa.array(survivor))
    bounds = np.flatnonzero(np.r_[True, files[1:] != files[:-1], True])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield int(files[a]), (rows[a:b], survivor_keys.slice(a, b - a), survivor_texts.slice(a, b - a))


def _pack_file(item):
    """(file, its duplicates from every shard) -> (file, (rows ascending, survivor keys, survivor
    texts)), the keys and texts as Arrow arrays: a lookup decodes buffers, not Python strings."""
    source_file, found = item
    found = list(found)
    rows = np.concatenate([rows for rows, _, _ in found])
    order = pa.array(np.argsort(rows, kind="stable"))
    keys = pa.chunked_array([keys for _, keys, _ in found], pa.string()).take(order).combine_chunks()
    texts = pa.chunked_array([texts for _, _, texts in found], pa.string()).take(order).combine_chunks()
    return source_file, (rows[order.to_numpy()], keys, texts)


# Files whose packed duplicates a worker keeps between batches: a file's batches mostly come
# together, and a runner may decode the side input's value again at every lookup (the
# FnApiRunner does: at 4M captions in 8 files that was quadratic, 2.3x the run's CPU).
_CACHED_FILES = 4


class _RemoveFn(beam.DoFn):
    """A batch, the packed duplicates by file -> the batch less its duplicates, and their rows."""

    def __init__(self, kind: str):
        self._kind = kind

    def setup(self):
        self._cache: dict = {}  # file -> its packed duplicates (the side input is one fixed value)

    def _found(self, duplicates_by_file, source_file: int) -> list:
        if source_file not in self._cache:
            if len(self._cache) >= _CACHED_FILES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[source_file] = list(duplicates_by_file[source_file])
        return self._cache[source_file]

    def process(self, batch: pa.RecordBatch, duplicates_by_file):
        n = batch.num_rows
        yield beam.pvalue.TaggedOutput(_FIGURES, Counter(judged=n))
        if n == 0:
            return
        files = batch.column(SOURCE_FILE).to_numpy().astype(np.int64)
        rows = batch.column(SOURCE_ROW).to_numpy().astype(np.int64)
        hit = np.zeros(n, dtype=bool)
        survivor = np.full(n, -1, dtype=np.int64)  # index into the concatenated found arrays below
        keys_of, texts_of, offset = [], [], 0
        for source_file in np.unique(files).tolist():
            for found_rows, found_keys, found_texts in self._found(duplicates_by_file, source_file):
                mine = np.flatnonzero(files == source_file)
                at = np.searchsorted(found_rows, rows[mine])
                inside = at < len(found_rows)
                match = np.zeros(len(mine), dtype=bool)
                match[inside] = found_rows[at[inside]] == rows[mine][inside]
                hit[mine[match]] = True
                survivor[mine[match]] = at[match] + offset
                keys_of.append(found_keys)
                texts_of.append(found_texts)
                offset += len(found_rows)
        if not hit.any():
            yield batch
            return
        removed = np.flatnonzero(hit)
        if len(removed) < n:
            yield batch.filter(pa.array(~hit))
        picked = pa.array(survivor[removed])
        of_keys = pa.chunked_array(keys_of, pa.string()).take(picked)
        of_texts = pa.chunked_array(texts_of, pa.string()).take(picked)
        yield beam.pvalue.TaggedOutput(_FIGURES, Counter(deduplicated=len(removed)))
        yield beam.pvalue.TaggedOutput(_DUPLICATES, self._rows(batch, removed, of_keys, of_texts))

    def _rows(self, batch, removed, of_keys, of_texts) -> pa.RecordBatch:
        index = pa.array(removed)
        keys = batch.column(KEY).take(index)
        return pa.RecordBatch.from_arrays(
            [
                keys,
                pa.array([self._kind] * len(removed), pa.string()),
                of_keys.combine_chunks(),
                pa.array(np.ones(len(removed))),
                batch.column(TEXT).take(index),
                of_texts.combine_chunks(),
                batch.column(SOURCE_FILE).take(index),
                batch.column(SOURCE_ROW).take(index),
                pa.array(key_hashes(keys.to_pylist()), pa.uint64()),
            ],
            names=[KEY, "kind", "duplicate_of", "similarity", CAPTION, DUPLICATE_OF_CAPTION]
            + [SOURCE_FILE, SOURCE_ROW, KEY_HASH],
        )


def _kind_figures(summed: dict) -> dict:
    return {"judged": int(summed.get("judged", 0)), "deduplicated": int(summed.get("deduplicated", 0))}


class ExactDedup(beam.PTransform):
    """One exact kind (`url` or `text`) of docs/dedup.md, section 1; see the module docstring.

    In: record batches (`url` column for kind url). Out: KindOutput: survivors (the input's
    schema), duplicates (key, kind, duplicate_of, similarity 1.0, caption,
    duplicate_of_caption, source columns, key hash), figures {"judged", "deduplicated"}.
    `spill_dir`: where the batches wait for the groups on local engines (None: in the runner);
    `shards`: how many parts the keys are cut into by hash (`key_shards`); the result does not
    depend on it.
    """

    def __init__(self, kind: str, seed: int, spill_dir: Optional[str] = None, shards: int = KEY_SHARDS):
        super().__init__()
        if kind not in EXACT_KINDS:
            raise ValueError(f"exact dedup kinds are {', '.join(EXACT_KINDS)}; got {kind!r}")
        self._kind = kind
        self._seed = seed
        self._spill_dir = spill_dir
        self._shards = shards

    def expand(self, batches: PCollection[pa.RecordBatch]) -> KindOutput:
        kind, spill = self._kind, self._spill_dir
        label = f"Dedup{kind.title()}"
        duplicates_by_file = (
            batches
            | "Candidates" >> beam.ParDo(_CandidatesFn(kind, self._shards))
            # Through spill files on local engines: the FnApiRunner would otherwise carry every
            # candidate through its own process, one core (at 4M captions, ~15 s a kind).
            | "GroupByKeyShard"
            >> GroupBatchesByShard(
                spill and FileSystems.join(spill, f"{label.lower()}-keys"), [label.lower()] * self._shards
            )
            | "GroupDuplicates" >> beam.FlatMap(_duplicates_by_file, self._seed)
            | "GroupByFile" >> beam.GroupByKey()
            | "PackByFile" >> beam.Map(_pack_file)
        )
        removed = (
            batches
            | "StoreBatches" >> StoreBatches(spill and FileSystems.join(spill, label.lower()), label)
            | "LoadBatches" >> LoadBatches(spill)
            | "RemoveDuplicates"
            >> beam.ParDo(_RemoveFn(kind), AsMultiMap(duplicates_by_file)).with_outputs(
                _FIGURES, _DUPLICATES, main="survivors"
            )
        )
        figures = (
            removed[_FIGURES]
            | "SumFigures" >> beam.CombineGlobally(SumFigures())
            | "KindFigures" >> beam.Map(_kind_figures)
        )
        return KindOutput(removed["survivors"], removed[_DUPLICATES], figures)
