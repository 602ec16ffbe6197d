"""Batches kept on disk between passes, for engines that would keep them in memory.

The curation reads its pool twice: once to count, once to sample with the
counts. Dataflow, Flink and Spark materialise a PCollection between stages
themselves (shuffle service, managed memory that spills), but Beam's Python
FnApiRunner, the engine of the DirectRunner and of the embedded portable job
service, holds every element between stages in the memory of the runner
process: 840 MB at 200k captions, growing with the pool. With a spill
directory, the batches go to Arrow IPC files instead and only their names
cross between stages, so memory stays flat whatever the pool size.

Without a spill directory each transform here is the plain Beam equivalent,
so the pipeline is the same on every runner and the outputs are the same bytes.
Spill files have random names: they are internal, never outputs, and a retried
bundle's files are simply never referenced. The whole directory is deleted
when the run ends (and by the next run into the same output directory).
"""

from __future__ import annotations

import uuid
from typing import Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.core.columns import ENTRY_IDS

__all__ = [
    "GroupBatchesByShard",
    "LoadBatches",
    "SpillFile",
    "SpillPart",
    "StoreBatches",
    "StorePairs",
    "delete_spill_dir",
    "load_pair_values",
    "write_shard_parts",
]

# A bundle's batches are written out when this many bytes are buffered: large
# enough for few files (~70k LAION captions each), small enough that a worker's
# memory stays flat and the progress display moves.
FLUSH_BYTES = 16 << 20
# Uncompressed. Measured on 125k LAION captions, one write and one read:
# 0.034 s and 27 MB as they are, 0.094 s and 19 MB with LZ4. Every caption
# makes two or three such round trips, and the files live only during the run.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


class SpillFile(NamedTuple):
    """A spill file and what it holds (the progress display reads its name)."""

    path: str
    rows: int


def spill_name(directory: str, label: str, rows: int, suffix: str = "") -> str:
    """`<label>-<random>-<rows>r<suffix>.arrow`: unique per write, readable at a glance."""
    return FileSystems.join(directory, f"{label}-{uuid.uuid4().hex[:16]}-{rows}r{suffix}.arrow")


def write_batches(path: str, batches: list[pa.RecordBatch]) -> None:
    """One Arrow IPC stream holding `batches` (all of one schema)."""
    with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
        with pa.ipc.new_stream(handle, batches[0].schema, options=_WRITE_OPTIONS) as writer:
            for batch in batches:
                writer.write_batch(batch)


def read_batches(path: str) -> list[pa.RecordBatch]:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return list(pa.ipc.open_stream(handle.read()))


def delete_spill_dir(directory: str) -> None:
    """Remove a spill directory and everything in it; a missing one is fine."""
    # Object stores have no directories: delete the files, then whatever a
    # local filesystem leaves (the empty folders).
    files = [m.path for m in FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def _in_global_window(value) -> WindowedValue:
    # finish_bundle must say which window its outputs belong to.
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def _matched_suffix(batches: list[pa.RecordBatch]) -> str:
    """`-<n>m`: how many rows matched an entry, for the progress display."""
    if ENTRY_IDS not in batches[0].schema.names:
        return ""
    matched = 0
    for batch in batches:
        offsets = batch.column(ENTRY_IDS).offsets.to_numpy()
        matched += int((offsets[1:] > offsets[:-1]).sum())
    return f"-{matched}m"


class _SpillBatchesFn(beam.DoFn):
    """Batches -> SpillFile names, a file per FLUSH_BYTES of a bundle's batches."""

    def __init__(self, directory: str, label: str):
        self._directory = directory
        self._label = label

    def start_bundle(self):
        self._buffer: list[pa.RecordBatch] = []
        self._bytes = 0

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._bytes += batch.nbytes
        if self._bytes >= FLUSH_BYTES:
            yield self._flush()

    def finish_bundle(self):
        if self._buffer:
            yield _in_global_window(self._flush())

    def _flush(self) -> SpillFile:
        rows = sum(batch.num_rows for batch in self._buffer)
        path = spill_name(self._directory, self._label, rows, _matched_suffix(self._buffer))
        write_batches(path, self._buffer)
        self._buffer, self._bytes = [], 0
        return SpillFile(path, rows)


class StoreBatches(beam.PTransform):
    """Keep batches for later passes: on disk under `directory`, or as they are.

    In: pa.RecordBatch. Out: SpillFile names when `directory` is set, else the
    batches themselves. Read them back, as often as needed, with LoadBatches.
    """

    def __init__(self, directory: Optional[str], label: str):
        super().__init__()
        self._directory = directory
        self._label = label

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection:
        if self._directory is None:
            return batches
        return batches | "SpillBatches" >> beam.ParDo(_SpillBatchesFn(self._directory, self._label))


class LoadBatches(beam.PTransform):
    """The batches StoreBatches kept: read back from their files, spread over workers.

    In: StoreBatches' output. Out: pa.RecordBatch.
    """

    def __init__(self, directory: Optional[str]):
        super().__init__()
        self._directory = directory

    def expand(self, stored: PCollection) -> PCollection[pa.RecordBatch]:
        if self._directory is None:
            return stored
        return (
            stored
            # Spread the files over the workers of the next pass.
            | "SpreadSpillFiles" >> beam.Reshuffle()
            | "ReadSpillFiles" >> beam.FlatMap(lambda spill: read_batches(spill.path))
        )


class SpillPart(NamedTuple):
    """One shard's part of a spill file that holds the parts of many shards one after
    another: the `length` bytes from `offset`, a whole Arrow IPC stream of its own."""

    path: str
    offset: int
    length: int
    rows: int


def _stream_bytes(batches: list[pa.RecordBatch]) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema, options=_WRITE_OPTIONS) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def read_part(part: SpillPart) -> list[pa.RecordBatch]:
    """The batches of one SpillPart: its own byte range of the file, nothing else."""
    with FileSystems.open(part.path, compression_type="uncompressed") as handle:
        handle.seek(part.offset)
        return list(pa.ipc.open_stream(handle.read(part.length)))


def _write_shard_batches(directory: str, label: str, by_shard: dict[int, list[pa.RecordBatch]], suffix: str = ""):
    """(shard, SpillPart) per shard of `by_shard`: one file, each shard's batches a stream in it.

    A reader reads its own bytes only (no footer to parse, unlike Arrow's file format,
    whose footer lists every batch of the file: read once per shard, that grew as the
    shard count squared)."""
    streams = {shard: _stream_bytes(by_shard[shard]) for shard in sorted(by_shard)}
    rows = {shard: sum(batch.num_rows for batch in by_shard[shard]) for shard in streams}
    path = spill_name(directory, label, sum(rows.values()), suffix)
    parts, offset = [], 0
    with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
        for shard, data in streams.items():
            handle.write(data)
            parts.append((shard, SpillPart(path, offset, data.size, rows[shard])))
            offset += data.size
    return parts


class _SpillShardPartsFn(beam.DoFn):
    """(shard, batch) -> (shard, SpillPart): a file per label (and schema) and flush, holding
    every shard's part, not a file per shard and flush: with S shards a flush of B bytes
    made S files of B/S bytes, so the file count grew as the pool times the shard count
    (40M captions, 212 shards of matches/ and subset/: ~50k files of ~75 KB; their
    creation, reading and deletion took most of the writing stage). `labels`: one per
    shard, or one string for every key (StorePairs, whose keys are not numbered)."""

    def __init__(self, directory: str, labels):
        self._directory = directory
        self._labels = labels if isinstance(labels, str) else list(labels)

    def _label(self, shard) -> str:
        return self._labels if isinstance(self._labels, str) else self._labels[shard]

    def start_bundle(self):
        self._parts: dict[int, list[pa.RecordBatch]] = {}
        self._bytes = 0

    def process(self, shard_and_part):
        shard, part = shard_and_part
        self._parts.setdefault(shard, []).append(part)
        self._bytes += part.nbytes
        if self._bytes >= FLUSH_BYTES:
            yield from self._flush()

    def finish_bundle(self):
        for item in self._flush():
            yield _in_global_window(item)

    def _flush(self) -> Iterable[tuple[int, SpillPart]]:
        parts, self._parts, self._bytes = self._parts, {}, 0
        files: dict[tuple, dict[int, list[pa.RecordBatch]]] = {}
        for shard, batches in parts.items():
            for batch in batches:
                files.setdefault((self._label(shard), batch.schema), {}).setdefault(shard, []).append(batch)
        for (label, _), by_shard in files.items():
            yield from _write_shard_batches(self._directory, label, by_shard)


def _load_shard_parts(shard_and_parts):
    shard, parts = shard_and_parts
    loaded = []
    for part in parts:
        loaded += [None] if part is None else read_part(part)  # None: an every-shard marker
    return shard, loaded


class GroupBatchesByShard(beam.PTransform):
    """GroupByKey for (shard, batch) pairs, through files when `directory` is set.

    In: (int shard, pa.RecordBatch), one PCollection or a tuple of them. Out: (shard,
    list of the shard's batches) for every shard in range(len(labels)), empty ones
    included. With a directory only file names cross the shuffle, each shard's
    batches are read back by the worker that writes that shard, and `labels[shard]`
    names the shard's spill files. `stored`: the producer wrote its parts itself
    (`write_shard_parts`) and gives (shard, SpillPart) pairs.
    """

    def __init__(self, directory: Optional[str], labels: Sequence[str], stored: bool = False):
        super().__init__()
        self._directory = directory
        self._labels = list(labels)
        self._stored = stored

    def expand(self, pairs) -> PCollection[tuple[int, list]]:
        inputs = list(pairs) if isinstance(pairs, tuple) else [pairs]
        if self._directory is not None and not self._stored:
            # Before the Flatten below: the FnApiRunner materialises a Flatten's
            # inputs, and these should be file names, not batches.
            inputs = [
                part
                | f"SpillShardParts{'' if i == 0 else i}"
                >> beam.ParDo(_SpillShardPartsFn(self._directory, self._labels))
                for i, part in enumerate(inputs)
            ]
        # One (shard, None) per shard, so that empty shards are written too.
        markers = inputs[0].pipeline | "EveryShard" >> beam.Create(
            [(shard, None) for shard in range(len(self._labels))]
        )
        grouped = (*inputs, markers) | "WithEveryShard" >> beam.Flatten() | "GroupShards" >> beam.GroupByKey()
        if self._directory is not None:
            grouped = grouped | "LoadShardParts" >> beam.Map(_load_shard_parts)
        return grouped | "DropMarkers" >> beam.Map(
            lambda shard_parts: (shard_parts[0], [p for p in shard_parts[1] if p is not None])
        )


def write_shard_parts(
    directory: str, label: str, ordered: pa.RecordBatch, shards: Sequence[int], bounds: Sequence[int]
):
    """(shard, SpillPart) per shard of `ordered`, a batch sorted by shard whose rows
    bounds[i]:bounds[i+1] belong to shards[i]: the slices written to one file (the writer
    keeps a slice's own bytes only). For producers that cut their output by shard anyway:
    no element per part crosses the runner (GroupBatchesByShard(stored=True))."""
    by_shard = {shard: [ordered.slice(a, b - a)] for shard, a, b in zip(shards, bounds[:-1], bounds[1:], strict=True)}
    return _write_shard_batches(directory, label, by_shard)


class StorePairs(beam.PTransform):
    """(key, batch) pairs kept for a side input: on disk under `directory`, or as they are.

    In: (key, pa.RecordBatch). Out: (key, SpillPart) when `directory` is set, else
    the pairs themselves; `load_pair_values` turns a key's values back into batches.
    Only names then cross the runner, and a side input's reader loads what it looks up.
    """

    def __init__(self, directory: Optional[str], label: str):
        super().__init__()
        self._directory = directory
        self._label = label

    def expand(self, pairs: PCollection) -> PCollection:
        if self._directory is None:
            return pairs
        return pairs | "SpillPairs" >> beam.ParDo(_SpillShardPartsFn(self._directory, self._label))


def load_pair_values(values: Iterable) -> list[pa.RecordBatch]:
    """One key's values of a StorePairs output (SpillParts or batches) as batches."""
    loaded: list[pa.RecordBatch] = []
    for value in values:
        loaded += read_part(value) if isinstance(value, SpillPart) else [value]
    return loaded
