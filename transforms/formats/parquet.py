"""The Parquet reader: a row group at a time, a record batch at a time.

No Beam import; transforms.formats.readers dispatches to it. A batch goes through Arrow
compute (`_parquet_batch_columnar`) unless it needs the row-by-row path (`_parquet_batch`).
"""

from __future__ import annotations

from typing import IO, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.formats.batches import BatchBuilder, Item, describe
from transforms.formats.layout import InputLayout, fallback_key, text_problem
from transforms.formats.rejections import (
    INVALID_UTF8,
    NON_STRING_TEXT,
    SCHEMA_MISMATCH,
    TEXT_TOO_LONG,
    UNREADABLE_ROWS,
    Rejection,
)


def _text_kind(dtype: pa.DataType) -> Optional[str]:
    """ "string" or "binary" for a column that can hold captions (dictionary-encoded ones
    too, as pandas categoricals are stored), None for any other type."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return "binary"
    return None


def _python_values(array: pa.Array) -> tuple[list, set]:
    """The column's Python values, and the rows whose strings are not valid UTF-8.

    Parquet readers do not check string columns, and one bad value makes
    to_pylist() fail for the whole batch: then the rows are converted one by one
    and the bad ones come back as None, listed in the set.
    """
    try:
        return array.to_pylist(), set()
    except UnicodeDecodeError:
        values, bad = [], set()
        for i in range(len(array)):
            try:
                values.append(array[i].as_py())
            except UnicodeDecodeError:
                values.append(None)
                bad.add(i)
        return values, bad


def _safe_value(scalar: pa.Scalar) -> object:
    """A value for a rejection's `raw`: invalid UTF-8 shown with replacement characters."""
    try:
        return scalar.as_py()
    except UnicodeDecodeError:
        return scalar.cast(_binary_of(scalar.type)).as_py().decode("utf-8", "replace")


def _binary_of(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.large_binary() if pa.types.is_large_string(dtype) else pa.binary()


def _row_dict(batch: pa.RecordBatch, i: int) -> dict:
    return {name: _safe_value(batch.column(name)[i]) for name in batch.schema.names}


def _parquet_batch(batch: pa.RecordBatch, first_row: int, path: str, layout: InputLayout, text_kind: Optional[str]):
    """Sort one Parquet batch: (rejections, accepted positions, keys, texts, pass-through columns).

    Everything is decided before anything is emitted, so that a batch that fails
    halfway can be rejected whole, without counting a row twice.
    """
    source_names = [layout.url_field if name == "url" and layout.url_field else name for name, _ in layout.passthrough]
    # The key as a string, then the pass-through columns as the layout's types.
    wanted = [(layout.key_column, pa.string())] + list(
        zip(source_names, (dtype for _, dtype in layout.passthrough), strict=True)
    )
    columns, bad_rows = [], set()
    for name, dtype in wanted:
        if name not in batch.schema.names:
            columns.append([None] * batch.num_rows)
            continue
        try:
            values, bad = _python_values(batch.column(name).cast(dtype))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:  # a column of a type that does not cast
            rejection = Rejection(
                path, first_row, SCHEMA_MISMATCH, {"column": name, "error": str(error)}, records=batch.num_rows
            )
            return [rejection], [], [], [], []
        columns.append(values)
        bad_rows |= bad
    keys, extras = columns[0], columns[1:]
    texts, bad_texts = _python_values(batch.column(layout.text_field))
    if text_kind == "binary":
        texts, bad_texts = _decoded(texts, bad_texts)
    bad_rows |= bad_texts
    rejections, accepted = [], []
    max_text_bytes = layout.max_text_bytes
    for i, text in enumerate(texts):
        if bad_rows and i in bad_rows:
            rejections.append(Rejection(path, first_row + i, INVALID_UTF8, _row_dict(batch, i)))
            continue
        problem = text_problem(text, max_text_bytes) if (text_kind or text is None) else NON_STRING_TEXT
        if problem:
            rejections.append(
                Rejection(path, first_row + i, problem, None if problem == TEXT_TOO_LONG else _row_dict(batch, i))
            )
            continue
        accepted.append(i)
    return rejections, accepted, keys, texts, extras


# A printable ASCII character other than the space: str.isspace() is never true
# of a string holding one, so only captions without one need the exact test.
_SURELY_NOT_BLANK = "[!-~]"


def _valid_strings(array: pa.Array, dtype: pa.DataType) -> pa.Array:
    """`array` cast to `dtype`; raises when a string in it is not valid UTF-8."""
    array = array.cast(dtype)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        array.validate(full=True)  # Parquet readers do not check UTF-8; this does
    return array


def _parquet_batch_columnar(
    batch: pa.RecordBatch,
    first_row: int,
    path: str,
    layout: InputLayout,
    text_kind: Optional[str],
    file_index: int,
    schema: pa.Schema,
) -> tuple[list, Optional[pa.RecordBatch]]:
    """`_parquet_batch` in Arrow compute: (rejections, the accepted rows as one batch of `schema`).

    The fast path for the common batch. Every caption is screened with vector
    operations (null, longer than max_text_bytes, no printable ASCII character)
    and only the ones screened out go through `text_problem`, so the reasons
    are the same. Raises (and the caller takes the row-by-row path) when a
    string is not valid UTF-8 or a column does not cast.
    """
    if text_kind is None:
        raise ValueError("the text column holds neither strings nor bytes")
    n = batch.num_rows
    names = batch.schema.names
    texts = _valid_strings(batch.column(layout.text_field), pa.string())
    key_column = layout.key_column
    keys = _valid_strings(batch.column(key_column), pa.string()) if key_column in names else pa.nulls(n, pa.string())
    extras = []
    for name, dtype in layout.passthrough:
        source = layout.url_field if name == "url" and layout.url_field else name
        extras.append(_valid_strings(batch.column(source), dtype) if source in names else pa.nulls(n, dtype))
    screened = pc.or_(
        pc.greater(pc.binary_length(texts), layout.max_text_bytes),
        pc.invert(pc.match_substring_regex(texts, _SURELY_NOT_BLANK)),
    ).fill_null(True)
    rejections, rejected = [], np.zeros(n, dtype=bool)
    for i in np.flatnonzero(screened.to_numpy(zero_copy_only=False)).tolist():
        problem = text_problem(texts[i].as_py(), layout.max_text_bytes)
        if problem:
            rejected[i] = True
            rejections.append(
                Rejection(path, first_row + i, problem, None if problem == TEXT_TOO_LONG else _row_dict(batch, i))
            )
    if keys.null_count:
        values = keys.to_pylist()
        keys = pa.array(
            [
                key if key is not None else fallback_key(path, first_row + i, layout.key_root)
                for i, key in enumerate(values)
            ],
            pa.string(),
        )
    columns = [
        keys,
        texts,
        pa.array(np.full(n, file_index, dtype=np.int32)),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
    ] + extras
    accepted = pa.RecordBatch.from_arrays(columns, schema=schema)
    if rejections:
        accepted = accepted.filter(pa.array(~rejected))
    return rejections, accepted if accepted.num_rows else None


def _decoded(values: list, bad: set) -> tuple[list, set]:
    """UTF-8 binary captions as str; the rows that do not decode come back as None, in the set."""
    texts, bad = [], set(bad)
    for i, value in enumerate(values):
        if value is not None:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = None
                bad.add(i)
        texts.append(value)
    return texts, bad


def read_parquet(fileobj: IO[bytes], path: str, layout: InputLayout, builder: BatchBuilder) -> Iterator[Item]:
    """Parquet, a row group at a time, a record batch at a time; pass-through columns
    cast to the layout.

    The footer gives every row group's row count, so a row group that cannot be
    decoded is rejected exactly: its rows not yet read, as one unreadable_rows
    rejection; the other row groups are read as usual.
    """
    parquet = pq.ParquetFile(fileobj)
    columns = parquet.schema_arrow.names
    if layout.text_field not in columns:
        yield Rejection(
            path,
            None,
            SCHEMA_MISMATCH,
            {"columns": columns, "missing": layout.text_field},
            records=parquet.metadata.num_rows,
        )
        return
    text_kind = _text_kind(parquet.schema_arrow.field(layout.text_field).type)
    first_row = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        done = 0
        batches = parquet.iter_batches(batch_size=layout.batch_size, row_groups=[group])
        while done < group_rows:
            try:
                batch = next(batches, None)
            except Exception as error:  # noqa: BLE001 - a corrupt page, a bad decompression: this row group's fault
                batch, fault = None, describe(error)
            else:
                fault = None if batch is not None else "fewer rows than the footer says"
            if batch is None:
                lost = {"row_group": group, "error": fault}
                yield Rejection(path, first_row + done, UNREADABLE_ROWS, lost, records=group_rows - done)
                break
            try:
                rejections, columnar = _parquet_batch_columnar(
                    batch, first_row + done, path, layout, text_kind, builder.file_index, builder.schema
                )
            except Exception:  # noqa: BLE001 - invalid UTF-8, a column that does not cast: row by row below
                pass
            else:
                yield from rejections
                if columnar is not None:
                    yield columnar
                done += batch.num_rows
                continue
            try:
                rejections, accepted, keys, texts, extras = _parquet_batch(
                    batch, first_row + done, path, layout, text_kind
                )
            except Exception as error:  # noqa: BLE001 - values that do not convert: this batch's rows
                lost = {"row_group": group, "error": describe(error)}
                rejections, accepted = (
                    [Rejection(path, first_row + done, UNREADABLE_ROWS, lost, records=batch.num_rows)],
                    [],
                )
            yield from rejections
            if accepted:
                yield from builder.add_columns(accepted, first_row + done, keys, texts, extras)
            done += batch.num_rows
        first_row += group_rows
