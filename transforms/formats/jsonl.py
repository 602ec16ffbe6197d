"""The JSONL reader: one JSON object a line.

No Beam import; transforms.formats.readers dispatches to it.
"""

from __future__ import annotations

import json
from typing import IO, Iterator

from transforms.formats.batches import BatchBuilder, Item, json_scalar_as_text
from transforms.formats.layout import InputLayout, text_problem
from transforms.formats.rejections import (
    INVALID_UTF8,
    MALFORMED_JSON,
    MISSING_TEXT,
    NOT_AN_OBJECT,
    TEXT_TOO_LONG,
    Rejection,
)


def read_jsonl(fileobj: IO[bytes], path: str, layout: InputLayout, builder: BatchBuilder) -> Iterator[Item]:
    """One JSON object a line. Blank lines are not records; rows are line numbers."""
    extra_names = [name for name, _ in layout.passthrough]
    source_names = [layout.url_field if name == "url" and layout.url_field else name for name in extra_names]
    for row, raw in enumerate(fileobj):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Rejection(path, row, INVALID_UTF8, raw.decode("utf-8", "replace").rstrip("\r\n"))
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply for Python's parser
            yield Rejection(path, row, MALFORMED_JSON, line.rstrip("\r\n"))
            continue
        if not isinstance(record, dict):
            yield Rejection(path, row, NOT_AN_OBJECT, record)
            continue
        if layout.text_field not in record:
            yield Rejection(path, row, MISSING_TEXT, record)
            continue
        text = record[layout.text_field]
        problem = text_problem(text, layout.max_text_bytes)
        if problem:
            yield Rejection(path, row, problem, record if problem != TEXT_TOO_LONG else None)
            continue
        try:
            key = record.get(layout.key_column)
            key = None if key is None else json_scalar_as_text(key)
            extras = [json_scalar_as_text(record.get(name)) for name in source_names]
        except RecursionError:  # a pass-through value nested too deeply to encode again
            yield Rejection(path, row, MALFORMED_JSON, None)
            continue
        builder.add(key, text, row, extras)  # a lone surrogate ("\ud800") is rejected at flush
        if builder.full():
            yield from builder.flush()
