"""The selection's member blocks through the (class, part) grouping: as elements, or as spill files.

Beam's Python FnApiRunner (the DirectRunner's engine) holds every grouped element in the
launcher's memory and hands each worker its share of a grouping as one buffer, so a pool's
embeddings grouped there grow the launcher with the pool (docs/beam-notes.md). With a spill
directory (local engines), a bundle's blocks are written to Arrow IPC files, one record
batch per block, and only (path, batch index, rows) crosses the grouping; the greedy's
worker reads back its part's batches alone. Without one (Dataflow, Flink, Spark: their
shuffle spills by itself), the blocks travel as they are, each at most one input batch.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.spill import _in_global_window
from transforms.selection.parts import block_from_table, block_table

__all__ = ["BlockRef", "LoadParts", "StoreParts"]

# A bundle's blocks are written once this many bytes wait: few files, flat worker memory.
FLUSH_BYTES = 64 << 20
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


class BlockRef(NamedTuple):
    """One member block in a spill file: the file, its record batch index, its rows."""

    path: str
    index: int
    rows: int


class _SpillPartsFn(beam.DoFn):
    """((class, part), MemberBlock) -> ((class, part), BlockRef), a file per FLUSH_BYTES of a bundle."""

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self):
        self._buffer: list = []
        self._bytes = 0

    def process(self, element):
        key, block = element
        if len(block) == 0:
            return
        self._buffer.append((key, block))
        self._bytes += block.x.nbytes + block.y.nbytes
        if self._bytes >= FLUSH_BYTES:
            yield from self._flush()

    def finish_bundle(self):
        for item in self._flush():
            yield _in_global_window(item)

    def _flush(self):
        buffer, self._buffer, self._bytes = self._buffer, [], 0
        if not buffer:
            return
        path = FileSystems.join(self._directory, f"parts-{uuid.uuid4().hex[:16]}.arrow")
        tables = [block_table(block) for _, block in buffer]
        with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
            with pa.ipc.new_file(handle, tables[0].schema, options=_WRITE_OPTIONS) as writer:
                for table in tables:
                    writer.write_batch(table)
        for index, (key, block) in enumerate(buffer):
            yield key, BlockRef(path, index, len(block))


def _read_blocks(refs: list) -> list:
    """The MemberBlocks of `refs`, each spill file opened once."""
    by_path: dict = {}
    for ref in refs:
        by_path.setdefault(ref.path, []).append(ref.index)
    blocks = []
    for path, indices in sorted(by_path.items()):
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))
            blocks += [block_from_table(reader.get_batch(i)) for i in sorted(indices)]
    return blocks


def _load_members(element):
    key, grouped = element
    return key, {**grouped, "members": _read_blocks(list(grouped["members"]))}


class StoreParts(beam.PTransform):
    """((class, part), MemberBlock) -> the same keys with BlockRefs (spill directory) or the blocks."""

    def __init__(self, directory: Optional[str]):
        super().__init__()
        self._directory = directory

    def expand(self, parts: PCollection) -> PCollection:
        if self._directory is None:
            return parts
        directory = FileSystems.join(self._directory, "parts")
        return parts | "SpillParts" >> beam.ParDo(_SpillPartsFn(directory))


class LoadParts(beam.PTransform):
    """A (class, part) grouping's result with its `members` read back as MemberBlocks."""

    def __init__(self, directory: Optional[str]):
        super().__init__()
        self._directory = directory

    def expand(self, grouped: PCollection) -> PCollection:
        if self._directory is None:
            return grouped
        return grouped | "ReadParts" >> beam.Map(_load_members)
