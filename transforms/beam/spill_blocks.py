"""Blocks of rows in spill files, referenced across stages: the selection's and SemDeDup's members.

Beam's Python FnApiRunner holds every element that crosses a stage boundary in the
launcher's memory (docs/beam-notes.md), so on local engines a step that groups large blocks
writes them to Arrow IPC files where they are made and sends only references on: a
`BlockRef` (file, record batch index, rows), or a `PartRef` (the rows of a block in one
part of a class or cluster split over its size cap). transforms/beam/select_parts.py and
semdedup_blocks.py build on these.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.beam.spill import spill_name

# A bundle's blocks are written once this many bytes wait: few files, flat worker memory.
FLUSH_BYTES = 64 << 20
WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


class BlockRef(NamedTuple):
    """One block in a spill file: the file, its record batch index there, its rows."""

    path: str
    index: int
    rows: int


class PartRef(NamedTuple):
    """The rows of a spilled block in one part: those whose split key % parts == part."""

    block: BlockRef
    parts: int
    part: int
    rows: int


def write_blocks(directory: str, label: str, batches: list) -> list:
    """One IPC file per schema among `batches`; a BlockRef for each batch, in order.

    `label` and the rows are in the file's name (spill_name): the progress line counts them.
    """
    refs: list = [None] * len(batches)
    by_schema: dict = {}
    for i, batch in enumerate(batches):
        by_schema.setdefault(batch.schema, []).append(i)
    for schema, indices in by_schema.items():
        path = spill_name(directory, label, sum(batches[i].num_rows for i in indices))
        with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
            with pa.ipc.new_file(handle, schema, options=WRITE_OPTIONS) as writer:
                for position, i in enumerate(indices):
                    writer.write_batch(batches[i])
                    refs[i] = BlockRef(path, position, batches[i].num_rows)
    return refs


def read_blocks(path: str, indices, column: Optional[str] = None) -> dict:
    """{index: record batch (or one of its columns)} of a spill file, opened once."""
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))  # reads only the batches asked for
        batches = {i: reader.get_batch(i) for i in sorted(set(indices))}
    return {i: (b.column(column) if column else b) for i, b in batches.items()}
