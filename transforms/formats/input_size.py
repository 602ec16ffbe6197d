"""How many bytes of caption data an input holds: what output sharding is sized by.

No Beam import: files come through an `open_file(path)` callable. A shard
writer holds its whole shard while it sorts it, so shards are sized by the
data they hold in memory, not by the bytes on disk: a Parquet pool's text
compresses 3x or more (the replicated LAION benchmark pool ~7x), and a
DataComp Parquet file holds columns (embeddings, hashes) the curation never
reads. The footers of a few files give the ratio; the rest is extrapolated.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterable, Mapping, Sequence

import pyarrow.parquet as pq

# Files whose footer or trailer is read: spread over the list, a handful of small reads.
SAMPLE_FILES = 4


def sample_paths(paths: Sequence[str], count: int = SAMPLE_FILES) -> list[str]:
    """Up to `count` paths spread evenly over `paths` (the first always among them)."""
    if len(paths) <= count:
        return list(paths)
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def parquet_column_bytes(handle, columns: Iterable[str], sample_rows: int = 4096) -> int:
    """The in-memory (Arrow) bytes of the named columns of one Parquet file, estimated.

    The footer's row count times the bytes per row of the first `sample_rows`
    rows. Not the footer's column sizes: those are of the encoded pages, and a
    dictionary-encoded text column there can be 30x smaller than in memory.
    """
    parquet = pq.ParquetFile(handle)
    rows = parquet.metadata.num_rows
    if not rows:
        return 0
    present = [name for name in dict.fromkeys(columns) if name in parquet.schema_arrow.names]
    if not present:
        return 0
    batch = next(parquet.iter_batches(batch_size=sample_rows, columns=present), None)
    if batch is None or not batch.num_rows:
        return 0
    return round(rows * batch.nbytes / batch.num_rows)


def gzip_uncompressed_bytes(handle, size: int) -> int:
    """A .gz file's uncompressed size from its trailer (mod 2**32, last member only: an estimate)."""
    if size < 18:
        return size
    handle.seek(size - 4)
    return struct.unpack("<I", handle.read(4))[0]


def data_bytes(
    paths: Sequence[str], sizes: Mapping[str, int], fmt: str, columns: Iterable[str], open_file: Callable[[str], object]
) -> int:
    """The input's bytes of caption data: file sizes times the sampled files' expansion.

    Parquet: in-memory bytes of the `columns` read, per byte of file.
    Gzip-compressed text files: uncompressed bytes per byte of file. Other files:
    their size. A sampled file that cannot be read is skipped; with none
    readable, file sizes are used as they are.
    """
    total = sum(sizes[path] for path in paths)
    if fmt == "parquet":
        measure = lambda path, handle: parquet_column_bytes(handle, columns)  # noqa: E731
    elif all(path.endswith(".gz") for path in paths):
        measure = lambda path, handle: gzip_uncompressed_bytes(handle, sizes[path])  # noqa: E731
    else:
        return total
    measured = on_disk = 0
    for path in sample_paths(paths):
        try:
            with open_file(path) as handle:
                measured += measure(path, handle)
            on_disk += sizes[path]
        except Exception:  # noqa: BLE001 - a corrupt file: the run will reject it; skip it here
            continue
    if not on_disk or not measured:
        return total
    return round(total * measured / on_disk)
