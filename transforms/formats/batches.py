"""The shared base every reader fills: `BatchBuilder`, and the small helpers the readers share.

No Beam import. A reader adds the rows it accepts to the file's `BatchBuilder`, which
emits fixed-schema `pa.RecordBatch`es of the layout (rejecting the rows Arrow refuses);
an `Item` is such a batch or a `Rejection`.
"""

from __future__ import annotations

import json
from typing import Iterator, Optional, Sequence, Union

import pyarrow as pa

from transforms.core.columns import KEY, TEXT
from transforms.formats.layout import InputLayout, fallback_key
from transforms.formats.rejections import (
    INVALID_UTF8,
    UNREADABLE_ROWS,
    Rejection,
    encodable,
)


class BatchBuilder:
    """Collects accepted rows as Python values and emits fixed-schema batches.

    One builder serves a whole file (`readers.read_caption_file` owns it), so that rows
    accepted before a fault are still emitted when the reader stops there.
    Strings are checked for lone surrogates (which Arrow refuses) only when a
    batch fails to convert, so that the common case costs nothing per row.
    """

    def __init__(self, layout: InputLayout, path: str, file_index: int):
        self.layout = layout
        self.path = path
        self.file_index = file_index
        self.schema = layout.batch_schema()
        self._reset()

    def _reset(self):
        self.keys, self.texts, self.rows = [], [], []
        self.extra = [[] for _ in self.layout.passthrough]

    def add(self, key: Optional[str], text: str, row: int, extra_values: Sequence[object]) -> None:
        self.keys.append(key if key is not None else fallback_key(self.path, row, self.layout.key_root))
        self.texts.append(text)
        self.rows.append(row)
        for column, value in zip(self.extra, extra_values, strict=True):
            column.append(value)

    def add_columns(
        self, positions: Sequence[int], first_row: int, keys: list, texts: list, extras: list
    ) -> Iterator[pa.RecordBatch]:
        """Add the rows at `positions` of whole columns (row = first_row + position),
        emitting each batch as it fills: the bulk form of `add`, for columnar inputs."""
        start = 0
        while start < len(positions):
            chunk = positions[start : start + self.layout.batch_size - len(self.rows)]
            self.keys.extend(
                [
                    keys[i] if keys[i] is not None else fallback_key(self.path, first_row + i, self.layout.key_root)
                    for i in chunk
                ]
            )
            self.texts.extend([texts[i] for i in chunk])
            self.rows.extend([first_row + i for i in chunk])
            for column, values in zip(self.extra, extras, strict=True):
                column.extend([values[i] for i in chunk])
            start += len(chunk)
            if self.full():
                yield from self.flush()

    def full(self) -> bool:
        return len(self.rows) >= self.layout.batch_size

    def flush(self) -> Iterator[Item]:
        """The pending rows as one batch.

        A row holding a string that is not valid Unicode (a lone surrogate: JSON's
        "\\ud800", a tar member name that is not UTF-8) is rejected as invalid_utf8.
        Rows that still do not convert to the layout's types are rejected together
        as unreadable_rows, so that none goes uncounted.
        """
        if not self.rows:
            return
        keys, texts, rows, extra = self.keys, self.texts, self.rows, self.extra
        self._reset()
        try:
            yield self._batch(keys, texts, rows, extra)
            return
        except UnicodeEncodeError:
            pass
        except Exception as error:  # noqa: BLE001 - a value the layout's type cannot hold
            yield Rejection(
                self.path,
                rows[0],
                UNREADABLE_ROWS,
                {"rows": [rows[0], rows[-1]], "error": describe(error)},
                records=len(rows),
            )
            return
        good = []
        for i, row in enumerate(rows):
            values = [keys[i], texts[i]] + [column[i] for column in extra]
            if all(encodable(value) for value in values if isinstance(value, str)):
                good.append(i)
            else:
                raw = dict(zip([KEY, TEXT] + [name for name, _ in self.layout.passthrough], values, strict=True))
                yield Rejection(self.path, row, INVALID_UTF8, raw)
        if good:
            pick = lambda values: [values[i] for i in good]  # noqa: E731
            yield from self._flush_rows(pick(keys), pick(texts), pick(rows), [pick(column) for column in extra])

    def _flush_rows(self, keys, texts, rows, extra) -> Iterator[Item]:
        try:
            yield self._batch(keys, texts, rows, extra)
        except Exception as error:  # noqa: BLE001 - a value the layout's type cannot hold
            yield Rejection(
                self.path,
                rows[0],
                UNREADABLE_ROWS,
                {"rows": [rows[0], rows[-1]], "error": describe(error)},
                records=len(rows),
            )

    def _batch(self, keys, texts, rows, extra) -> pa.RecordBatch:
        arrays = [
            pa.array(keys, pa.string()),
            pa.array(texts, pa.string()),
            pa.array([self.file_index] * len(rows), pa.int32()),
            pa.array(rows, pa.int64()),
        ] + [pa.array(values, dtype) for values, (_, dtype) in zip(extra, self.layout.passthrough, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def json_scalar_as_text(value: object) -> Optional[str]:
    """Pass-through JSONL values become strings: strings as they are, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def unescape_one(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unescape(values: Sequence[str]) -> list[str]:
    return [unescape_one(v) for v in values]


Item = Union[pa.RecordBatch, Rejection]
