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

from typing import Optional

import numpy as np
import pyarrow as pa

from transforms.beam.spill_blocks import FLUSH_BYTES, BlockRef, PartRef, read_blocks, write_blocks
from transforms.dedup.semdedup import cluster_parts, parts_count
from transforms.dedup.semdedup_stage import BITS, split_block


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
        return list(zip(clusters, write_blocks(self._directory, self._label, blocks), strict=True))


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
        refs = write_blocks(self._directory, self._label, [batch for _, batch in items])
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
    bits = read_blocks(member.path, [member.index], BITS)[member.index].to_numpy()
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
        tables = read_blocks(path, [r.block.index for r in refs])
        for ref in sorted(refs, key=lambda r: r.block.index):
            block = tables[ref.block.index]
            if ref.parts > 1:
                bits = block.column(BITS).to_numpy()
                block = block.filter(pa.array((bits % np.uint64(ref.parts)) == np.uint64(ref.part)))
            blocks.append(block)
    return pa.Table.from_batches(blocks).combine_chunks().to_batches()[0]


def load_batch(item) -> pa.RecordBatch:
    """A kept batch, or the one a BlockRef names."""
    return read_blocks(item.path, [item.index])[item.index] if isinstance(item, BlockRef) else item
