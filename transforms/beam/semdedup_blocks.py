"""SemDeDup's member blocks and kept batches between steps: moderate elements, spilled on local engines.

As the selection's members (transforms/beam/select_parts.py, docs/beam-notes.md): Beam's
Python FnApiRunner holds every element that crosses a stage boundary in the launcher's
memory, so with a spill directory (local engines) the blocks go to Arrow IPC files where
they are made and only refs (path, record batch index, rows) cross stages. Without one
(Dataflow, Flink, Spark: their shuffle spills by itself) the blocks travel as they are.

A bundle's members are buffered per cluster and cut, at each flush, into one block per
cluster (all the bundle's members of that cluster so far): the number of blocks grows with
flushes x clusters, not with input batches x clusters, and no block exceeds a flush
(FLUSH_BYTES). The split into parts reads a spilled block's order bits alone, and only for
clusters over max_cluster_size.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.beam.spill import spill_name
from transforms.dedup.semdedup import cluster_parts, parts_count
from transforms.dedup.semdedup_stage import BITS, split_block

FLUSH_BYTES = 64 << 20
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


class BlockRef(NamedTuple):
    """One record batch of a spill file: the file, its index there, its rows."""

    path: str
    index: int
    rows: int


class PartRef(NamedTuple):
    """The rows of a spilled member block in one part: those whose order bits % parts == part."""

    block: BlockRef
    parts: int
    part: int
    rows: int


def _write(directory: str, label: str, batches: list) -> list:
    """One IPC file per schema among `batches`; a BlockRef for each batch, in order."""
    refs: list = [None] * len(batches)
    by_schema: dict = {}
    for i, batch in enumerate(batches):
        by_schema.setdefault(batch.schema, []).append(i)
    for schema, indices in by_schema.items():
        path = spill_name(directory, label, sum(batches[i].num_rows for i in indices))
        with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
            with pa.ipc.new_file(handle, schema, options=_WRITE_OPTIONS) as writer:
                for position, i in enumerate(indices):
                    writer.write_batch(batches[i])
                    refs[i] = BlockRef(path, position, batches[i].num_rows)
    return refs


def _read(path: str, indices, column: Optional[str] = None) -> dict:
    """{index: record batch (or one of its columns)} of a spill file, opened once."""
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))  # reads only the batches asked for
        batches = {i: reader.get_batch(i) for i in sorted(set(indices))}
    return {i: (b.column(column) if column else b) for i, b in batches.items()}


class MemberBuffer:
    """A bundle's member blocks by cluster, cut into one block per cluster at each flush.

    `add` and `flush` return (cluster, block) pairs, or (cluster, BlockRef) with a spill directory.
    """

    def __init__(self, directory: Optional[str], label: str):
        self._directory = directory
        self._label = label
        self._pieces: dict = {}
        self._bytes = 0

    def add(self, cluster: int, block: pa.RecordBatch) -> list:
        self._pieces.setdefault(cluster, []).append(block)
        self._bytes += block.nbytes
        return self.flush() if self._bytes >= FLUSH_BYTES else []

    def flush(self) -> list:
        pieces, self._pieces, self._bytes = self._pieces, {}, 0
        clusters = sorted(pieces)
        blocks = [pa.Table.from_batches(pieces[c]).combine_chunks().to_batches()[0] for c in clusters]
        if self._directory is None or not blocks:
            return list(zip(clusters, blocks, strict=True))
        return list(zip(clusters, _write(self._directory, self._label, blocks), strict=True))


class BatchBuffer:
    """A bundle's kept batches by join key: (key, batch), or (key, BlockRef) with a spill directory."""

    def __init__(self, directory: Optional[str], label: str, flush_bytes: int = FLUSH_BYTES):
        self._directory = directory
        self._label = label
        self._flush_bytes = flush_bytes
        self._items: list = []
        self._bytes = 0

    def add(self, key: int, batch: pa.RecordBatch) -> list:
        if self._directory is None:
            return [(key, batch)]
        self._items.append((key, batch))
        self._bytes += batch.nbytes
        return self.flush() if self._bytes >= self._flush_bytes else []

    def flush(self) -> list:
        items, self._items, self._bytes = self._items, [], 0
        if not items:
            return []
        refs = _write(self._directory, self._label, [batch for _, batch in items])
        return [(key, ref) for (key, _), ref in zip(items, refs, strict=True)]


def rows_of(member) -> int:
    return member.rows if isinstance(member, (BlockRef, PartRef)) else member.num_rows


def split_member(member, cluster_size: int, max_cluster_size: Optional[int]) -> list:
    """(part, what goes to that part) of a block or a BlockRef: the block's rows in the part,
    or a PartRef (only the order bits are read, and only when the cluster is split)."""
    if not isinstance(member, BlockRef):
        return split_block(member, cluster_size, max_cluster_size)
    parts = parts_count(cluster_size, max_cluster_size)
    if parts == 1:
        return [(0, PartRef(member, 1, 0, member.rows))]
    bits = _read(member.path, [member.index], BITS)[member.index].to_numpy()
    counts = np.bincount(cluster_parts(bits, cluster_size, max_cluster_size), minlength=parts)
    return [(p, PartRef(member, parts, p, int(n))) for p, n in enumerate(counts.tolist()) if n]


def load_members(members: list) -> pa.RecordBatch:
    """One part's members as one record batch: blocks as they are, PartRefs read back (each file
    once) and filtered to their part."""
    blocks = [m for m in members if isinstance(m, pa.RecordBatch)]
    by_path: dict = {}
    for ref in (m for m in members if isinstance(m, PartRef)):
        by_path.setdefault(ref.block.path, []).append(ref)
    for path, refs in sorted(by_path.items()):
        tables = _read(path, [r.block.index for r in refs])
        for ref in sorted(refs, key=lambda r: r.block.index):
            block = tables[ref.block.index]
            if ref.parts > 1:
                bits = block.column(BITS).to_numpy()
                block = block.filter(pa.array((bits % np.uint64(ref.parts)) == np.uint64(ref.part)))
            blocks.append(block)
    return pa.Table.from_batches(blocks).combine_chunks().to_batches()[0]


def load_batch(item) -> pa.RecordBatch:
    """A kept batch, or the one a BlockRef names."""
    return _read(item.path, [item.index])[item.index] if isinstance(item, BlockRef) else item
