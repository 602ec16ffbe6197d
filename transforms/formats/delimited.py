"""The TSV and CSV reader: TSV without quoting (CC3M style), CSV with RFC 4180 quoting.

No Beam import; transforms.formats.readers dispatches to it. Importing this module raises
the csv module's field size limit for the whole process (see below).
"""

from __future__ import annotations

import csv
import io
from typing import IO, Iterator

from transforms.formats.batches import BatchBuilder, Item, unescape, unescape_one
from transforms.formats.layout import InputLayout, text_problem
from transforms.formats.rejections import (
    BAD_COLUMN_COUNT,
    INVALID_UTF8,
    SCHEMA_MISMATCH,
    TEXT_TOO_LONG,
    Rejection,
    encodable,
)

# Python's csv module refuses fields over 128 KiB by default, which would make one long
# caption end its whole file; such a caption is a record-level text_too_long instead.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))


def read_delimited(fileobj: IO[bytes], path: str, layout: InputLayout, builder: BatchBuilder) -> Iterator[Item]:
    """TSV (no quoting, CC3M style) or CSV (RFC 4180 quoting); rows count data rows."""
    text_stream = io.TextIOWrapper(fileobj, encoding="utf-8", errors="surrogateescape", newline="")
    if layout.format == "tsv":
        reader = csv.reader(text_stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(text_stream)
    names = list(layout.column_names) if layout.column_names else next(reader, None)
    if names is None:
        return  # an empty file holds no records
    position = {name: i for i, name in enumerate(names)}
    if layout.text_field not in position:
        yield Rejection(
            path,
            None,
            SCHEMA_MISMATCH,
            {"columns": unescape(names), "missing": layout.text_field},
            records=sum(1 for _ in reader),
        )
        return
    text_at = position[layout.text_field]
    key_at = position.get(layout.key_column)
    extra_at = [
        position.get(layout.url_field if name == "url" and layout.url_field else name) for name, _ in layout.passthrough
    ]
    for row, values in enumerate(reader):
        if len(values) != len(names):
            yield Rejection(path, row, BAD_COLUMN_COUNT, unescape(values))
            continue
        text = values[text_at]
        if not encodable(text):  # undecodable bytes, kept as surrogates by surrogateescape
            yield Rejection(path, row, INVALID_UTF8, unescape(values))
            continue
        problem = text_problem(text, layout.max_text_bytes)
        if problem:
            yield Rejection(path, row, problem, unescape(values) if problem != TEXT_TOO_LONG else None)
            continue
        key = unescape_one(values[key_at]) if key_at is not None else None
        builder.add(key, text, row, [None if i is None else unescape_one(values[i]) for i in extra_at])
        if builder.full():
            yield from builder.flush()
