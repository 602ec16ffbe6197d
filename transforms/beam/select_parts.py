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

The d x d sums go the same way on local engines (`SumRef`): a class sum is made on one
worker from its blocks' files (`sum_blocks`), and it and each part's picked sum wait in a
spill file. The runner holds every grouping's input in the launcher's memory, decoded, and
a sum is 4.7 MB at d = 768: one per class per worker bundle, per part and per figure made
the launcher's peak grow with the classes (2.5-2.7 GB at 40 classes, BENCHMARKS.md section 9).
"""

from __future__ import annotations

import pickle
from typing import NamedTuple, Optional

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.beam.spill import spill_name
from transforms.beam.spill_blocks import FLUSH_BYTES, BlockRef, PartRef, read_blocks, write_blocks
from transforms.selection.budgets import num_parts, split_parts
from transforms.selection.covariance import CrossCovSum
from transforms.selection.parts import block_from_table, block_table, split_block
from transforms.selection.stage import MemberBlock

__all__ = [
    "BlockRef",
    "BlockSpill",
    "PartRef",
    "SumRef",
    "load_members",
    "load_sum",
    "member_rows",
    "read_block",
    "split_member",
    "spill_sum",
    "sum_blocks",
]


class SumRef(NamedTuple):
    """A CrossCovSum in a spill file, and its row count."""

    path: str
    count: int


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
        # the progress line (beam_pipeline/progress.py) counts the rows in the files' names
        refs = write_blocks(self._directory, "SelectMembers", [block_table(block) for _, block in buffer])
        return [(cls, ref) for (cls, _), ref in zip(buffer, refs, strict=True)]


def read_block(ref: BlockRef) -> MemberBlock:
    return block_from_table(read_blocks(ref.path, [ref.index])[ref.index])


def split_member(member, class_size: int, max_class_size: Optional[int]) -> list:
    """(part, what goes to that part) of a MemberBlock or a BlockRef: the block's rows in the
    part, or a PartRef (only the tie keys are read) with the part's row count."""
    if isinstance(member, MemberBlock):
        return split_block(member, class_size, max_class_size)
    ties = read_blocks(member.path, [member.index], "ties")[member.index].to_numpy(zero_copy_only=False)
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
        tables = read_blocks(path, [r.block.index for r in of_path])
        for ref in sorted(of_path, key=lambda r: r.block.index):
            block = block_from_table(tables[ref.block.index])
            rows = np.flatnonzero((block.ties % np.uint64(ref.parts)) == np.uint64(ref.part))
            blocks.append(block.take(rows))
    return MemberBlock.concat(blocks)


def mark_progress(directory: Optional[str], label: str, count: int) -> None:
    """An empty file named as a spill file of `count` rows: the progress line adds them up."""
    if directory is not None:
        FileSystems.create(spill_name(FileSystems.join(directory, "progress"), label, count)).close()


def spill_sum(directory: Optional[str], label: str, total: CrossCovSum):
    """`total` written to a spill file under `directory`, as a SumRef; `total` itself without one."""
    if directory is None:
        return total
    path = spill_name(directory, label, total.count, ".sum")
    with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
        # Its state (the 32-bit limbs), not the object: only sums that cross a stage pickle whole.
        handle.write(pickle.dumps(total.__getstate__(), protocol=pickle.HIGHEST_PROTOCOL))
    return SumRef(path, total.count)


def load_sum(total) -> CrossCovSum:
    """A CrossCovSum as it is, or read back from its SumRef."""
    if not isinstance(total, SumRef):
        return total
    with FileSystems.open(total.path, compression_type="uncompressed") as handle:
        state = pickle.loads(handle.read())
    loaded = CrossCovSum()
    loaded.__setstate__(state)
    if loaded.count != total.count:
        raise ValueError(f"{total.path}: a sum of {loaded.count} rows where {total.count} were written")
    return loaded


def sum_blocks(refs) -> CrossCovSum:
    """The exact CrossCovSum of spilled blocks, read one file at a time: a worker holds one
    file's blocks of the class (at most FLUSH_BYTES) and the sum, never the class."""
    by_path: dict = {}
    for ref in refs:
        by_path.setdefault(ref.path, []).append(ref.index)
    total = CrossCovSum()
    for path, indices in sorted(by_path.items()):
        for batch in read_blocks(path, indices).values():
            block = block_from_table(batch)
            total.add_batch(block.x.astype(np.float64), block.y.astype(np.float64))
    return total
