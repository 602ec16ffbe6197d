"""Checks the stages share, of their flags against the input and the user's files: one line each.

Reads headers and small files only; writes nothing. Each raises UsageError naming the flag.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.option_checks import UsageError
from transforms.beam.io import open_input
from transforms.core.columns import KEY
from transforms.formats.embeddings import npz_path
from transforms.formats.layout import InputLayout
from transforms.formats.npy import NpyHeader, read_npy_header
from transforms.formats.npz import NpzError, NpzRows
from transforms.formats.readers import read_caption_file

RAW = CompressionTypes.UNCOMPRESSED


def open_asset(path: str, flag: str):
    """`path` opened for reading, as bytes; UsageError naming `flag` when it cannot be."""
    try:
        return FileSystems.open(path, compression_type=RAW)
    except Exception as error:  # noqa: BLE001 - missing, unreadable, no credentials
        raise UsageError(f"{flag} {path} cannot be opened: {error}") from None


def column_type(layout: InputLayout, name: str, flag: str) -> pa.DataType:
    """The type of input column `name`; UsageError naming `flag` and the columns when there is none."""
    for column, dtype in layout.passthrough:
        if column == name:
            return dtype
    columns = ", ".join(column for column, _ in layout.passthrough)
    raise UsageError(f"{flag} {name!r} is not a column of the input (columns: {columns})")


def check_numeric(layout: InputLayout, name: str, flag: str, kinds) -> None:
    """Column `name` is one of `kinds` (pyarrow.types predicates: integer, floating)."""
    dtype = column_type(layout, name, flag)
    if not any(kind(dtype) for kind in kinds):
        raise UsageError(f"{flag} {name!r} must be a {'float' if len(kinds) == 1 else 'numeric'} column; it is {dtype}")


def npy_header(handle, name: str) -> NpyHeader:
    try:
        return read_npy_header(handle, name)
    except ValueError as error:
        raise UsageError(str(error)) from None


def embedding_width(kind: str, layout: InputLayout, paths: Sequence[str], name: str) -> int:
    """The width d of embedding `name` (-1 when a variable-size list column does not tell):
    from the first shard's npz header, or the column's type."""
    if kind == "columns":
        dtype = column_type(layout, name, "--image_embedding_key")
        if not (pa.types.is_fixed_size_list(dtype) or pa.types.is_list(dtype) or pa.types.is_large_list(dtype)):
            raise UsageError(f"--embeddings columns: column {name!r} must be a list of floats; it is {dtype}")
        return dtype.list_size if pa.types.is_fixed_size_list(dtype) else -1
    npz = npz_path(paths[0])
    with open_asset(npz, "--embeddings npz: the npz beside the first shard,") as handle:
        try:
            members = NpzRows(handle).members()
        except NpzError as error:
            raise UsageError(f"--embeddings npz: {npz}: {error}") from None
    if name not in members or len(members[name].shape) != 2:
        raise UsageError(
            f"--image_embedding_key {name!r} is not a 2-D array of {npz} (members: {', '.join(sorted(members))})"
        )
    return members[name].shape[1]


def first_keys(paths: Sequence[str], layout: InputLayout) -> tuple[str, list]:
    """The keys of the input's first batch of records and its file, from the first 3 files
    ("", [] if none can be read now: the run reports an unreadable file as usual)."""
    for path in paths[:3]:
        try:
            handle = open_input(path, layout.format)
        except Exception:  # noqa: BLE001 - the run will report it as unreadable_file
            continue
        with handle:
            for item in read_caption_file(handle, path, 0, layout):
                if isinstance(item, pa.RecordBatch):
                    return path, item.column(KEY).to_pylist()
    return "", []


def read_asset(path: str, flag: str) -> bytes:
    """The bytes of a small file a flag names (read before the run, to check it)."""
    with open_asset(path, flag) as handle:
        return handle.read()
