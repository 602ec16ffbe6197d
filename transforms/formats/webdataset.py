"""The webdataset reader: tar shards, one record per sample.

No Beam import; transforms.formats.readers dispatches to it. The tar format itself (samples,
members) is transforms.formats.tar.
"""

from __future__ import annotations

import json
from typing import IO, Iterator, Optional, Union

import pyarrow as pa

from transforms.core.columns import SHARD, WDS_KEY
from transforms.formats.batches import (
    BatchBuilder,
    Item,
    json_scalar_as_text,
    unescape_one,
)
from transforms.formats.layout import InputLayout, text_problem
from transforms.formats.rejections import (
    INVALID_UTF8,
    MALFORMED_JSON,
    MISSING_TEXT,
    NO_CAPTION_MEMBER,
    NOT_AN_OBJECT,
    TEXT_TOO_LONG,
    Rejection,
)
from transforms.formats.tar import iter_tar_samples
from transforms.images.extra_texts import field_texts


def _parse_json(text: Union[str, bytes]) -> object:
    """json.loads, with nesting too deep for Python's parser as a ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def webdataset_text_member(layout: InputLayout) -> Optional[str]:
    """The extension of the caption member ("txt"), or None when the caption is a .json field."""
    return layout.text_field[1:].lower() if layout.text_field.startswith(".") else None


def read_webdataset(fileobj: IO[bytes], path: str, layout: InputLayout, builder: BatchBuilder) -> Iterator[Item]:
    """Webdataset tar shards: one record per sample, rows are sample positions in the tar.

    The caption is the member named by `--text_field` when it starts with a dot (`.txt`,
    the default), else that field of the sample's `.json` member. The key is the
    sample's `__key__`, or `--key_field` of the `.json`; the url is `--url_field` of the
    `.json`. Only the caption and `.json` members are read; images are skipped unread.
    A sample without its caption member is rejected as `no_caption_member`. A truncated
    or corrupt tar raises after the samples before the fault (readers.read_caption_file keeps them).
    """
    text_member = webdataset_text_member(layout)
    needs_json = text_member is None or bool(layout.key_field) or bool(layout.url_field) or bool(layout.extra_fields)
    wanted = {text_member, "json" if needs_json else None} - {None}
    for sample in iter_tar_samples(fileobj, lambda _, ext: ext in wanted):
        row = sample.index
        about = {"__key__": unescape_one(sample.key), "members": sample.extensions()}
        record: dict = {}
        json_member = sample.member("json") if needs_json else None
        if json_member is not None:
            try:
                record = _parse_json(json_member.data)
            except ValueError:  # UnicodeDecodeError included
                yield Rejection(
                    path, row, MALFORMED_JSON, {**about, "json": json_member.data.decode("utf-8", "replace")}
                )
                continue
            if not isinstance(record, dict):
                yield Rejection(path, row, NOT_AN_OBJECT, {**about, "json": record})
                continue
        if text_member is not None:
            caption = sample.member(text_member)
            if caption is None:
                yield Rejection(path, row, NO_CAPTION_MEMBER, about)
                continue
            try:
                text = caption.data.decode("utf-8")
            except UnicodeDecodeError:
                yield Rejection(path, row, INVALID_UTF8, {**about, "text": caption.data.decode("utf-8", "replace")})
                continue
        else:
            if json_member is None:
                yield Rejection(path, row, NO_CAPTION_MEMBER, about)
                continue
            if layout.text_field not in record:
                yield Rejection(path, row, MISSING_TEXT, {**about, "json": record})
                continue
            text = record[layout.text_field]
        problem = text_problem(text, layout.max_text_bytes)
        if problem:
            yield Rejection(path, row, problem, None if problem == TEXT_TOO_LONG else {**about, "text": text})
            continue
        try:
            if layout.key_field:
                key = record.get(layout.key_field)
                key = None if key is None else json_scalar_as_text(key)
            else:
                key = sample.key
            url = json_scalar_as_text(record.get(layout.url_field)) if layout.url_field else None
        except RecursionError:  # a .json value nested too deeply to encode again
            yield Rejection(path, row, MALFORMED_JSON, about)
            continue
        extras = {SHARD: path, WDS_KEY: sample.key, "url": url}
        extras.update({name: field_texts(record.get(name)) for name in layout.extra_fields})
        builder.add(key, text, row, [extras[name] for name, _ in layout.passthrough])
        if builder.full():
            yield from builder.flush()


def webdataset_passthrough(url_field: Optional[str], extra_fields=()) -> tuple[tuple[str, pa.DataType], ...]:
    columns = [(SHARD, pa.string()), (WDS_KEY, pa.string())]
    if url_field:
        columns.append(("url", pa.string()))
    columns += [(name, pa.list_(pa.string())) for name in extra_fields]
    return tuple(columns)
