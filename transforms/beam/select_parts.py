"""The selection's member blocks as spill files on local engines: written where they are made.

Beam's Python FnApiRunner (the DirectRunner's engine) holds every element that crosses a
stage boundary in the launcher's memory and sends a stage's input to each worker through
its data stream, so a pool's embeddings there grow the launcher with the pool and expose
the runner's data stream to large inputs (docs/beam-notes.md). With a spill directory
(local engines), _MembersFn writes a bundle's blocks to Arrow IPC files, one record batch
per block, and only BlockRefs (path, batch index, rows) cross stages; the split into parts
reads the tie keys alone, and the greedy's worker reads back its part's rows alone.
Without one (Dataflow, Flink, Spark: their shuffle spills by itself) the blocks travel as
they are, each at most one input batch's members of one class.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.beam.spill import spill_name
from transforms.selection.budgets import num_parts, split_parts
from transforms.selection.parts import block_from_table, block_table, split_block
from transforms.selection.stage import MemberBlock

__all__ = ["BlockRef", "BlockSpill", "PartRef", "load_members", "member_rows", "read_block", "split_member"]

# A bundle's blocks are written once this many bytes wait: few files, flat worker memory.
FLUSH_BYTES = 64 << 20
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


class BlockRef(NamedTuple):
    """One member block in a spill file: the file, its record batch index, its rows."""

    path: str
    index: int
    rows: int


class PartRef(NamedTuple):
    """The rows of a spilled block in one part: those whose tie key % parts == part."""

    block: BlockRef
    parts: int
    part: int
    rows: int


class BlockSpill:
    """Buffers (class, MemberBlock) of a bundle and writes them, FLUSH_BYTES at a time, to one file each."""

    def __init__(self, directory: str):
        self._directory = directory
        self._buffer: list = []
        self._bytes = 0

    def add(self, cls: int, block: MemberBlock) -> list:
        """(class, BlockRef) of the blocks written now (none until FLUSH_BYTES wait)."""
        self._buffer.append((cls, block))
        self._bytes += block.x.nbytes + block.y.nbytes
        return self.flush() if self._bytes >= FLUSH_BYTES else []

    def flush(self) -> list:
        buffer, self._buffer, self._bytes = self._buffer, [], 0
        if not buffer:
            return []
        # spill_name's form: the progress line (beam_pipeline/progress.py) counts these rows.
        path = spill_name(self._directory, "SelectMembers", sum(len(block) for _, block in buffer))
        tables = [block_table(block) for _, block in buffer]
        with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
            with pa.ipc.new_file(handle, tables[0].schema, options=_WRITE_OPTIONS) as writer:
                for table in tables:
                    writer.write_batch(table)
        return [(cls, BlockRef(path, index, len(block))) for index, (cls, block) in enumerate(buffer)]


def _read(path: str, indices, column: Optional[str] = None) -> dict:
    """{index: record batch (or one of its columns)} of a spill file, opened once."""
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))
        batches = {i: reader.get_batch(i) for i in sorted(set(indices))}
    return {i: (b.column(column) if column else b) for i, b in batches.items()}


def read_block(ref: BlockRef) -> MemberBlock:
    return block_from_table(_read(ref.path, [ref.index])[ref.index])


def split_member(member, class_size: int, max_class_size: Optional[int]) -> list:
    """(part, what goes to that part) of a MemberBlock or a BlockRef: the block's rows in the
    part, or a PartRef (only the tie keys are read) with the part's row count."""
    if isinstance(member, MemberBlock):
        return split_block(member, class_size, max_class_size)
    ties = _read(member.path, [member.index], "ties")[member.index].to_numpy(zero_copy_only=False)
    parts = num_parts(class_size, max_class_size)
    counts = np.bincount(split_parts(ties, class_size, max_class_size), minlength=parts)
    return [(p, PartRef(member, parts, p, int(n))) for p, n in enumerate(counts.tolist()) if n]


def member_rows(member) -> int:
    return member.rows if isinstance(member, (BlockRef, PartRef)) else len(member)


def load_members(members: list) -> MemberBlock:
    """One part's members: MemberBlocks as they are, PartRefs read back (each file once) and filtered."""
    blocks = [m for m in members if isinstance(m, MemberBlock)]
    refs = [m for m in members if isinstance(m, PartRef)]
    by_path: dict = {}
    for ref in refs:
        by_path.setdefault(ref.block.path, []).append(ref)
    for path, of_path in sorted(by_path.items()):
        tables = _read(path, [r.block.index for r in of_path])
        for ref in sorted(of_path, key=lambda r: r.block.index):
            block = block_from_table(tables[ref.block.index])
            rows = np.flatnonzero((block.ties % np.uint64(ref.parts)) == np.uint64(ref.part))
            blocks.append(block.take(rows))
    return MemberBlock.concat(blocks)


def mark_progress(directory: Optional[str], label: str, count: int) -> None:
    """An empty file named as a spill file of `count` rows: the progress line adds them up."""
    if directory is not None:
        FileSystems.create(spill_name(FileSystems.join(directory, "progress"), label, count)).close()
