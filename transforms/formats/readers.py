"""Parsing caption shards into Arrow record batches, with a reason for every reject.

No Beam import: it works on any binary file object, so the fuzz tests and the
benchmarks call the same code the pipeline's reader DoFn runs. This module holds
the dispatch (`read_caption_file`, one reader per format: jsonl, delimited,
parquet, webdataset) and the probing that fixes the run's `InputLayout`.

Every record of a file ends up in exactly one place: a row of a yielded
`pa.RecordBatch` (the accepted captions) or a yielded `Rejection`, whose
`records` says how many input records it stands for. Where a fault makes the
number of lost records unknowable (a file without a readable Parquet footer, a
truncated compressed stream or tar), the file-level rejection counts 0 records
and the rows read before the fault are kept. docs/fault-policy.md has the policy.
"""

from __future__ import annotations

import csv
import io
import json
from typing import IO, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.formats.batches import BatchBuilder, Item, describe
from transforms.formats.compression import buffered, is_empty
from transforms.formats.delimited import read_delimited
from transforms.formats.jsonl import read_jsonl
from transforms.formats.layout import FORMATS, InputError, InputLayout
from transforms.formats.parquet import read_parquet
from transforms.formats.rejections import EMPTY_FILE, UNREADABLE_FILE, Rejection
from transforms.formats.tar import WEBDATASET, open_tar_stream
from transforms.formats.webdataset import read_webdataset, webdataset_passthrough

_READERS = {
    "jsonl": read_jsonl,
    "tsv": read_delimited,
    "csv": read_delimited,
    "parquet": read_parquet,
    WEBDATASET: read_webdataset,
}


def read_caption_file(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
    """Every record of one file, as accepted batches and rejections.

    `fileobj` holds the file's content (see `compression.decompressed`). A file without a
    single byte is one `empty_file` rejection. A file that cannot be parsed past
    some point (truncated, corrupt) yields what it read so far, the rows accepted
    before the fault included, and one file-level `unreadable_file` rejection
    of 0 records: how many records the unreadable rest held is unknown.
    """
    builder = BatchBuilder(layout, path, file_index)
    try:
        if layout.format != "parquet":
            fileobj = buffered(fileobj)
        if is_empty(fileobj):
            yield Rejection(path, None, EMPTY_FILE, None, records=0)
            return
        yield from _READERS[layout.format](fileobj, path, layout, builder)
    except Exception as error:  # noqa: BLE001 - any parser failure is this file's fault
        yield from builder.flush()
        yield Rejection(path, None, UNREADABLE_FILE, describe(error), records=0)
        return
    yield from builder.flush()


def _probe_webdataset(fileobj: IO[bytes], layout: InputLayout, options: dict) -> Optional[InputLayout]:
    """Webdataset: fixed pass-through columns (shard, wds_key, url); checks the file is a tar."""
    if layout.column_names:
        raise InputError("--column_names names the columns of header-less TSV/CSV files; webdataset shards have none")
    if layout.text_field.startswith(".") and len(layout.text_field) < 2:
        raise InputError(
            "--text_field '.' names no member; use an extension such as .txt, or a field of the .json member"
        )
    tar = open_tar_stream(fileobj)  # raises on a file that is not a tar
    if tar.next() is None:
        return None  # an empty tar holds no samples
    return InputLayout(
        format=WEBDATASET, **options, passthrough=webdataset_passthrough(layout.url_field, layout.extra_fields)
    )


def _columns(fileobj: IO[bytes], fmt: str, column_names: Optional[Sequence[str]]) -> tuple[list, list]:
    """(column names, Arrow types) of a non-webdataset input file (buffered unless parquet)."""
    layout = InputLayout(format=fmt, column_names=tuple(column_names) if column_names else None)
    if fmt == "parquet":
        schema = pq.ParquetFile(fileobj).schema_arrow
        names, types = schema.names, [schema.field(n).type for n in schema.names]
    elif fmt in ("tsv", "csv"):
        if layout.column_names:
            names = list(layout.column_names)
        else:
            stream = io.TextIOWrapper(fileobj, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(stream)
            names = next(reader, None) or []
        types = [pa.string()] * len(names)
    elif fmt == "jsonl":
        names = []
        for raw in fileobj:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                names = list(record)
                break
        types = [pa.string()] * len(names)
    else:
        raise InputError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return names, types


def probe_columns(fileobj: IO[bytes], fmt: str, column_names: Optional[Sequence[str]] = None) -> list:
    """The column (or first JSON object's field) names of an input file; [] for webdataset."""
    if fmt == WEBDATASET:
        return []
    if fmt != "parquet":
        fileobj = buffered(fileobj)
    return _columns(fileobj, fmt, column_names)[0]


def probe_layout(fileobj: IO[bytes], fmt: str, **options) -> Optional[InputLayout]:
    """Fix the run's pass-through columns from its first input file.

    Parquet: every column but key and text, with its type. TSV/CSV: every
    header (or --column_names) column, as strings. JSONL: the fields of the
    first JSON object, as strings. The url field is renamed `url`. Webdataset:
    `shard` and `wds_key` (and `url`), strings; the file must be a tar.
    Raises InputError when the text field is not among the columns.
    """
    layout = InputLayout(format=fmt, **options)
    if fmt != "parquet":
        fileobj = buffered(fileobj)
    if fmt == WEBDATASET:
        return _probe_webdataset(fileobj, layout, options)
    names, types = _columns(fileobj, fmt, layout.column_names)
    if not names:
        return None
    if layout.text_field not in names:
        raise InputError(
            f"--text_field {layout.text_field!r} is not a column of the input (columns: {', '.join(map(str, names))})"
        )
    if layout.key_field and layout.key_field not in names:
        raise InputError(
            f"--key_field {layout.key_field!r} is not a column of the input (columns: {', '.join(map(str, names))})"
        )
    if layout.url_field and layout.url_field not in names:
        raise InputError(
            f"--url_field {layout.url_field!r} is not a column of the input (columns: {', '.join(map(str, names))})"
        )
    passthrough = []
    for name, dtype in zip(names, types, strict=True):
        if name in (layout.text_field, layout.key_column):
            continue
        out = "url" if layout.url_field and name == layout.url_field else name
        if out in (KEY, TEXT, SOURCE_FILE, SOURCE_ROW) or any(out == seen for seen, _ in passthrough):
            raise InputError(
                f"input column {name!r} would collide with the output column {out!r}; rename it or choose other fields"
            )
        passthrough.append((out, dtype))
    return InputLayout(format=fmt, **options, passthrough=tuple(passthrough))
