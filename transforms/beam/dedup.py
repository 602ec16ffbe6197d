"""ExactDedup: the url and text kinds of `--dedup`, chained (docs/dedup.md, sections 1 and 4).

In: record batches (key, text, source columns; `url` for the url kind). Out: `ExactOutput`:
the surviving records, one duplicates row per record removed, and each kind's figures. The
rules are transforms.dedup.keys and transforms.dedup.exact (pure); this module spreads them
so that no worker holds more than one key group, and reads the batches once for every kind:

    candidates   batches -> (key shard, Arrow batch of candidates: every kind's dedup key,
                 file, row, sample key, text) of the records with a key, a bundle's cut by
                 the shard of the first kind they have a key for (keys.url_key_array / text_key_array)
    levels       one per kind, in order: GroupBatchesByShard on the shard (a hash of the
                 kind's key bytes mod `shards`; through spill files on local engines), so a
                 worker holds one shard, whole key groups, at a time;
                 exact.key_group_duplicates sorts it by (key, draw, file, row): each group's
                 first is its survivor, the rest its duplicates. The survivors go on, cut by
                 the shard of the next kind's key: each kind judges the survivors of the ones
                 before, as docs/dedup.md's composition says
    by file      every kind's duplicates (row, kind, survivor's key and text), by input file:
                 a multimap side input of spill-file names on local engines (small: only
                 duplicates travel), which a worker loads and sorts once per file
    remove       the batches (kept on disk meanwhile on local engines, transforms.beam.spill),
                 read once, less their duplicates of every kind; the duplicates as rows of
                 DUPLICATES_SCHEMA plus `caption` and `duplicate_of_caption`

Why Arrow batches by shard rather than one element per record (a CombinePerKey(min) on
the key and a join back, or a GroupByKey on the key): both find the same minimum, but one
element per record costs its encoding and decoding at each shuffle, more than the run's
matching per record; shards move a few large elements, sorted and split with Arrow. The
result is still a minimum over (draw, file, row) of each key group among the records the
kind judges, so it does not depend on file splits, batch size, bundles, workers or runner.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsMultiMap, PCollection

from transforms.beam.spill import (
    GroupBatchesByShard,
    LoadBatches,
    StoreBatches,
    StorePairs,
    _in_global_window,
    load_pair_values,
    write_shard_parts,
)
from transforms.beam.stats import SumFigures
from transforms.core.batches import ordered_batch, shard_runs, take_runs
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.core.hashing import key_hashes, splitmix64
from transforms.dedup.exact import key_group_duplicates
from transforms.dedup.keys import text_key_array, url_key_array

__all__ = ["CAPTION", "DUPLICATE_OF_CAPTION", "EXACT_KINDS", "ExactDedup", "ExactOutput", "URL"]

URL = "url"  # the batch column of a record's URL (the reader's name for --url_field)
# kind -> (the batch column it reads, its keys as an Arrow array), in the order they run
EXACT_KINDS = {"url": (URL, url_key_array), "text": (TEXT, text_key_array)}
CAPTION = "caption"  # duplicates/: the removed record's text
DUPLICATE_OF_CAPTION = "duplicate_of_caption"  # duplicates/: the text of the record it duplicates
_FIGURES = "figures"
_DUPLICATES = "duplicates"
_FOUND = "found"  # the duplicates a level found, by input file
# Shards of the dedup keys: the unit a worker holds at once (whole key groups). Each flush of
# a DoFn's buffer sends a piece to each shard, a spill file on local engines: fewer shards on
# small pools (`key_shards`), as long as one holds a few hundred thousand candidates at most.
KEY_SHARDS = 256
MIN_KEY_SHARDS, MAX_KEY_SHARDS = 16, 4096
# Candidates a DoFn buffers before cutting them by shard (~50 MB): each flush makes a piece,
# a spill file on local engines, per shard.
FLUSH_ROWS = 1 << 18


class ExactOutput(NamedTuple):
    """The chained exact kinds' result over the batches they were given."""

    survivors: PCollection  # [pa.RecordBatch]: the records no kind removed, the input's schema
    duplicates: PCollection  # [pa.RecordBatch]: DUPLICATES_SCHEMA + captions, one row per record removed
    figures: dict  # kind -> singleton PCollection of {"judged", "deduplicated"}


def _key_column(kind: str) -> str:
    return f"{kind}_key"


def key_shards(input_files: int) -> int:
    """Shards for a pool of `input_files` files: 2 a file, within [16, 4096] (a DataComp 1.28B
    pool's ~25k files: 4,096 shards of ~300k candidates; the 8 files of 500k captions of the
    4M benchmark pool: 16 of 250k; 64 shards there made ~4x the spill files, 10 CPU s)."""
    return int(min(MAX_KEY_SHARDS, max(MIN_KEY_SHARDS, 2 * input_files)))


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


class _ShardCutter:
    """Candidate tables buffered per level, cut by the shard of that level's key on flush.

    With `directories` (local engines: one spill directory per level) each shard's slice
    goes to a spill file right here and only its name is yielded; else each piece is a
    copy (`take`): a pickled slice carries its parent's whole buffers, and the runner
    pickles some elements even inside a fused stage, to estimate their size.
    """

    def __init__(self, kinds: Sequence[str], shards: int, directories: Optional[Sequence[str]]):
        self._kinds = list(kinds)
        self._shards = shards
        self._directories = directories
        self._buffer: dict[int, list[pa.Table]] = {}
        self.rows = 0

    def add(self, level: int, table: pa.Table) -> None:
        if table.num_rows:
            self._buffer.setdefault(level, []).append(table)
            self.rows += table.num_rows

    def flush(self):
        """-> (level, shard, candidates batch or its SpillPart) for everything buffered."""
        buffer, self._buffer, self.rows = self._buffer, {}, 0
        for level in sorted(buffer):
            table = pa.concat_tables(buffer[level])
            runs = shard_runs(shard_of(table.column(_key_column(self._kinds[level])), self._shards))
            if self._directories is None:
                pieces = take_runs(table, *runs)
            else:
                order, present, bounds = runs
                ordered = ordered_batch(table, order)
                pieces = write_shard_parts(self._directories[level], self._kinds[level], ordered, present, bounds)
            for shard, piece in pieces:
                yield level, shard, piece


def _route(table: pa.Table, kinds: Sequence[str], start: int):
    """(level, rows) for the rows of `table` by the first kind from `start` on they have a key
    for (a record without a key of a kind survives it untouched); rows with none are left out."""
    pending = np.ones(table.num_rows, dtype=bool)
    for level in range(start, len(kinds)):
        has = table.column(_key_column(kinds[level])).is_valid().to_numpy()
        here = pending & has
        if here.any():
            yield level, table.filter(pa.array(here))
        pending &= ~has
        if not pending.any():
            return


def _level_tag(level: int) -> str:
    return f"level{level}"


class _CutByShardFn(beam.DoFn):
    """A DoFn whose outputs are candidates cut by shard, tagged by level (_ShardCutter),
    flushed when FLUSH_ROWS are buffered and when the bundle ends."""

    def __init__(self, kinds: Sequence[str], shards: int, directories: Optional[Sequence[str]]):
        self._kinds = list(kinds)
        self._shards = shards
        self._directories = directories

    def start_bundle(self):
        self._cutter = _ShardCutter(self._kinds, self._shards, self._directories)

    def finish_bundle(self):
        yield from self._flush(_in_global_window)  # finish_bundle names the window of what it yields

    def _flush_if_full(self):
        return self._flush() if self._cutter.rows >= FLUSH_ROWS else ()

    def _flush(self, wrap=lambda value: value):
        for level, shard, part in self._cutter.flush():
            yield beam.pvalue.TaggedOutput(_level_tag(level), wrap((shard, part)))


class _CandidatesFn(_CutByShardFn):
    """Batches -> (key shard, candidates) tagged by the first kind each record has a key for.

    A candidate row: every kind's dedup key (null where it has none), file, row, sample key,
    text. Buffered and cut by shard (_CutByShardFn): a few large elements cross the shuffle
    instead of one per record.
    """

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        columns = {}
        for kind in self._kinds:
            column, keys_of = EXACT_KINDS[kind]
            columns[_key_column(kind)] = keys_of(batch.column(column))
        columns[SOURCE_FILE] = batch.column(SOURCE_FILE).cast(pa.int64())
        columns[SOURCE_ROW] = batch.column(SOURCE_ROW).cast(pa.int64())
        columns[KEY] = batch.column(KEY)
        columns[TEXT] = batch.column(TEXT)
        for level, rows in _route(pa.table(columns), self._kinds, 0):
            self._cutter.add(level, rows)
        yield from self._flush_if_full()


class _LevelDuplicatesFn(_CutByShardFn):
    """(shard, its candidates) at one level -> the level's duplicates by input file (tagged
    _FOUND: (file, batch of row, level, survivor's key and text)), and its survivors routed
    on to the next kind they have a key for, cut by that kind's shard (tagged by level)."""

    def __init__(self, kinds: Sequence[str], level: int, shards: int, seed: int, directories):
        super().__init__(kinds, shards, directories)
        self._level = level
        self._seed = seed

    def process(self, item):
        _, parts = item
        if not parts:  # an empty shard (GroupBatchesByShard yields every shard)
            return
        table = pa.Table.from_batches(list(parts)).combine_chunks()
        keys = table.column(_key_column(self._kinds[self._level]))
        duplicate, survivor = key_group_duplicates(
            keys, table.column(KEY), table.column(SOURCE_FILE), table.column(SOURCE_ROW), self._seed
        )
        yield from self._found(table, duplicate, survivor)
        if self._level + 1 < len(self._kinds):
            alive = np.ones(table.num_rows, dtype=bool)
            alive[duplicate] = False
            for level, rows in _route(table.filter(pa.array(alive)), self._kinds, self._level + 1):
                self._cutter.add(level, rows)
            yield from self._flush_if_full()

    def _found(self, table: pa.Table, duplicate: np.ndarray, survivor: np.ndarray):
        if len(duplicate) == 0:
            return
        order, files, bounds = shard_runs(table.column(SOURCE_FILE).to_numpy()[duplicate])
        duplicate, survivor = duplicate[order], survivor[order]
        found = pa.RecordBatch.from_arrays(
            [
                pa.array(table.column(SOURCE_ROW).to_numpy()[duplicate]),
                pa.array(np.full(len(duplicate), self._level, dtype=np.int8)),
                table.column(KEY).take(pa.array(survivor)).combine_chunks(),
                table.column(TEXT).take(pa.array(survivor)).combine_chunks(),
            ],
            names=[SOURCE_ROW, "level", "of_key", "of_text"],
        )
        for source_file, rows in take_runs(found, np.arange(len(duplicate)), files, bounds):
            yield beam.pvalue.TaggedOutput(_FOUND, (source_file, rows))


# The duplicates a worker keeps between batches, by input file, least recently used out
# first: a file's duplicates come from every key shard (many small pieces), so loading them
# costs far more than looking a batch up, and the batches of the pass arrive in no file
# order. 256 MiB holds every file's at 4M captions (~60 MB); at DataComp's 1.28B (~25k
# files of ~15k duplicates) some hundreds of files, and a reload is then a few ms a batch.
_CACHE_BYTES = 256 << 20


class _RemoveFn(beam.DoFn):
    """A batch, every kind's duplicates by file -> the batch less its duplicates, their rows, figures."""

    def __init__(self, kinds: Sequence[str]):
        self._kinds = list(kinds)

    def setup(self):
        self._cache: OrderedDict = OrderedDict()  # file -> (rows ascending, level, survivor keys, texts)
        self._cached_bytes = 0

    def _found(self, found_by_file, source_file: int):
        if source_file in self._cache:
            self._cache.move_to_end(source_file)
            return self._cache[source_file][0]
        batches = load_pair_values(found_by_file[source_file])
        found, size = None, 0
        if batches:
            table = pa.Table.from_batches(batches).combine_chunks()
            table = table.take(pa.array(np.argsort(table.column(SOURCE_ROW).to_numpy(), kind="stable")))
            table = table.combine_chunks()
            found = (
                table.column(SOURCE_ROW).to_numpy(),
                table.column("level").to_numpy(),
                table.column("of_key").combine_chunks(),  # Arrays: pa.chunked_array below
                table.column("of_text").combine_chunks(),  # would convert ChunkedArrays value by value
            )
            size = table.nbytes
        self._cache[source_file] = (found, size)
        self._cached_bytes += size
        while self._cached_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._cached_bytes -= dropped
        return found

    def process(self, batch: pa.RecordBatch, found_by_file):
        n = batch.num_rows
        if n == 0:
            return
        files = batch.column(SOURCE_FILE).to_numpy().astype(np.int64)
        rows = batch.column(SOURCE_ROW).to_numpy().astype(np.int64)
        level = np.full(n, -1, dtype=np.int64)  # the kind that removed each record, -1 none
        survivor = np.full(n, -1, dtype=np.int64)  # index into the concatenated arrays below
        keys_of, texts_of, offset = [], [], 0
        for source_file in np.unique(files).tolist():
            found = self._found(found_by_file, source_file)
            if found is None:
                continue
            found_rows, found_level, found_keys, found_texts = found
            mine = np.flatnonzero(files == source_file)
            at = np.minimum(np.searchsorted(found_rows, rows[mine]), len(found_rows) - 1)
            match = found_rows[at] == rows[mine]
            level[mine[match]] = found_level[at[match]]
            survivor[mine[match]] = at[match] + offset
            keys_of.append(found_keys)
            texts_of.append(found_texts)
            offset += len(found_rows)
        figures = Counter()
        judged = n
        for index, kind in enumerate(self._kinds):
            removed_here = int((level == index).sum())
            figures[f"{kind}/judged"] = judged
            figures[f"{kind}/deduplicated"] = removed_here
            judged -= removed_here
        yield beam.pvalue.TaggedOutput(_FIGURES, figures)
        hit = level >= 0
        if not hit.any():
            yield batch
            return
        removed = np.flatnonzero(hit)
        if len(removed) < n:
            yield batch.filter(pa.array(~hit))
        picked = pa.array(survivor[removed])
        of_keys = pa.chunked_array(keys_of, pa.string()).take(picked).combine_chunks()
        of_texts = pa.chunked_array(texts_of, pa.string()).take(picked).combine_chunks()
        kinds = pa.array(np.array(self._kinds, dtype=object)[level[removed]], pa.string())
        yield beam.pvalue.TaggedOutput(_DUPLICATES, _duplicate_rows(batch, removed, kinds, of_keys, of_texts))


def _duplicate_rows(batch: pa.RecordBatch, removed: np.ndarray, kinds, of_keys, of_texts) -> pa.RecordBatch:
    index = pa.array(removed)
    keys = batch.column(KEY).take(index)
    return pa.RecordBatch.from_arrays(
        [
            keys,
            kinds,
            of_keys,
            pa.array(np.ones(len(removed))),
            batch.column(TEXT).take(index),
            of_texts,
            batch.column(SOURCE_FILE).take(index),
            batch.column(SOURCE_ROW).take(index),
            pa.array(key_hashes(keys.to_pylist()), pa.uint64()),
        ],
        names=[KEY, "kind", "duplicate_of", "similarity", CAPTION, DUPLICATE_OF_CAPTION]
        + [SOURCE_FILE, SOURCE_ROW, KEY_HASH],
    )


def _kind_figures(summed: dict, kind: str) -> dict:
    return {"judged": int(summed.get(f"{kind}/judged", 0)), "deduplicated": int(summed.get(f"{kind}/deduplicated", 0))}


class ExactDedup(beam.PTransform):
    """The exact kinds of docs/dedup.md, section 1, chained in the order given (url, then text);
    see the module docstring.

    In: record batches (`url` column for kind url). Out: ExactOutput: survivors (the input's
    schema), duplicates (key, kind, duplicate_of, similarity 1.0, caption,
    duplicate_of_caption, source columns, key hash), figures per kind {"judged",
    "deduplicated"}. `spill_dir`: where the batches, the key shards and the duplicates wait on
    local engines (None: in the runner); `shards`: how many parts the keys are cut into by
    hash (`key_shards`); the result does not depend on it.
    """

    def __init__(self, kinds: Sequence[str], seed: int, spill_dir: Optional[str] = None, shards: int = KEY_SHARDS):
        super().__init__()
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [kind for kind in kinds if kind not in EXACT_KINDS]
        if unknown or not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"exact dedup kinds are {', '.join(EXACT_KINDS)}, each once; got {kinds!r}")
        self._kinds = kinds
        self._seed = seed
        self._spill_dir = spill_dir
        self._shards = shards

    def _spill(self, name: str) -> Optional[str]:
        return self._spill_dir and FileSystems.join(self._spill_dir, name)

    def expand(self, batches: PCollection[pa.RecordBatch]) -> ExactOutput:
        kinds, levels = self._kinds, range(len(self._kinds))
        # Local engines: each level's key shards as spill files, written by the DoFn that cuts them.
        directories = self._spill_dir and [self._spill(f"dedup{kind}-keys") for kind in kinds]
        tags = [_level_tag(level) for level in levels]
        candidates = batches | "Candidates" >> beam.ParDo(_CandidatesFn(kinds, self._shards, directories)).with_outputs(
            *tags
        )
        arriving = {level: [candidates[_level_tag(level)]] for level in levels}
        found = []
        for level, kind in enumerate(kinds):
            label = f"Dedup{kind.title()}"
            pieces = arriving[level]
            judged = (
                (pieces[0] if len(pieces) == 1 else tuple(pieces))
                | f"{label}GroupByKeyShard"
                >> GroupBatchesByShard(directories and directories[level], [kind] * self._shards, stored=True)
                | f"{label}Duplicates"
                >> beam.ParDo(_LevelDuplicatesFn(kinds, level, self._shards, self._seed, directories)).with_outputs(
                    _FOUND, *tags[level + 1 :]
                )
            )
            found.append(judged[_FOUND])
            for later in levels[level + 1 :]:
                arriving[later].append(judged[_level_tag(later)])
        # Stored before the Flatten: the FnApiRunner materialises a Flatten's inputs.
        stored = [
            pairs | f"StoreFound{kinds[level].title()}" >> StorePairs(self._spill("dedup-found"), "DedupFound")
            for level, pairs in enumerate(found)
        ]
        found_by_file = stored[0] if len(stored) == 1 else tuple(stored) | "AllFound" >> beam.Flatten()
        removed = (
            batches
            | "StoreBatches" >> StoreBatches(self._spill("dedupexact"), "DedupExact")
            | "LoadBatches" >> LoadBatches(self._spill_dir)
            | "RemoveDuplicates"
            >> beam.ParDo(_RemoveFn(kinds), AsMultiMap(found_by_file)).with_outputs(
                _FIGURES, _DUPLICATES, main="survivors"
            )
        )
        summed = removed[_FIGURES] | "SumFigures" >> beam.CombineGlobally(SumFigures())
        figures = {kind: summed | f"{kind.title()}Figures" >> beam.Map(_kind_figures, kind) for kind in kinds}
        return ExactOutput(removed["survivors"], removed[_DUPLICATES], figures)
