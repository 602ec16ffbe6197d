"""Parsing caption shards into Arrow record batches, with a reason for every reject.

No Beam import: it works on any binary file object, so the fuzz tests and the
benchmarks call the same code the pipeline's reader DoFn runs.

Every record of a file ends up in exactly one place: a row of a yielded
`pa.RecordBatch` (the accepted captions) or a yielded `Rejection`, whose
`records` says how many input records it stands for. Where a fault makes the
number of lost records unknowable (a file without a readable Parquet footer, a
truncated compressed stream or tar), the file-level rejection counts 0 records
and the rows read before the fault are kept. docs/fault-policy.md has the policy.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import lzma
import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import IO, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.core.columns import KEY, SHARD, SOURCE_FILE, SOURCE_ROW, TEXT, WDS_KEY
from transforms.formats.tar import (
    TXT_MEMBER,
    WEBDATASET,
    iter_tar_samples,
    open_tar_stream,
)

FORMATS = ("jsonl", "parquet", "tsv", "csv", WEBDATASET)
# The suffixes Beam's CompressionTypes.AUTO decompresses.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")
_FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".tsv": "tsv",
    ".csv": "csv",
    ".tar": WEBDATASET,
}
# Input presets: the column names of well-known pools, so users need not spell them.
PRESETS = ("datacomp", "img2dataset")

# Rejection reasons, as written to rejected/ and counted in stats.json.
MISSING_TEXT = "missing_text"
NULL_TEXT = "null_text"
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_a_json_object"
BAD_COLUMN_COUNT = "bad_column_count"
UNREADABLE_FILE = "unreadable_file"
SCHEMA_MISMATCH = "schema_mismatch"
NO_CAPTION_MEMBER = "no_caption_member"  # a webdataset sample without its caption member (.txt, or .json)
EMPTY_FILE = "empty_file"  # a file without a single byte (after decompression)
# Rows of a readable file that cannot be decoded, e.g. a corrupt Parquet row group: the
# rejection's row is the first lost row and `records` the count from the file's footer.
UNREADABLE_ROWS = "unreadable_rows"
REASONS = (
    MISSING_TEXT, NULL_TEXT, NON_STRING_TEXT, EMPTY_TEXT, TEXT_TOO_LONG, INVALID_UTF8, MALFORMED_JSON, NOT_AN_OBJECT,
    BAD_COLUMN_COUNT, NO_CAPTION_MEMBER, SCHEMA_MISMATCH, UNREADABLE_ROWS, UNREADABLE_FILE, EMPTY_FILE,
)

# Python's csv module refuses fields over 128 KiB by default, which would make one long
# caption end its whole file; such a caption is a record-level text_too_long instead.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))


class InputError(ValueError):
    """A problem with the inputs that must stop the run before any work."""


STRICT_PREFIX = "--strict: "
# The one-line message inside whatever text a runner wraps the worker's error in: Beam
# appends " [while running 'STEP']", and a remote runner quotes it with the traceback.
_STRICT_MESSAGE = re.compile(re.escape(STRICT_PREFIX) + r"(?:(?!\\n)[^\n])*?: (?:" + "|".join(REASONS) + r")\b")


class StrictRejectionError(ValueError):
    """--strict: the run stops at the first rejected record or file.

    The message is one line, `--strict: <file> row <n>: <reason>`, or
    `--strict: <file>: <reason>` for a whole file (see `strict_error`).
    """


def _one_line(text: str) -> str:
    """`text` with control characters (a newline in a file name) escaped as \\xNN or \\uNNNN
    (never as \\n, which `strict_failure` takes for the end of a quoted line)."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def strict_error(rejection: "Rejection") -> StrictRejectionError:
    """The error --strict raises for a rejection."""
    where = _one_line(rejection.file) if rejection.row is None else f"{_one_line(rejection.file)} row {rejection.row}"
    return StrictRejectionError(f"{STRICT_PREFIX}{where}: {rejection.reason}")


def strict_failure(error: BaseException) -> Optional[str]:
    """The one-line --strict message carried by `error`, or None when it is another failure.

    Runners wrap a worker's exception: in-process Beam re-raises it with
    " [while running 'STEP']" appended, a multi-process or remote runner raises a
    RuntimeError whose text holds the worker's traceback. The message is found in the
    text of `error` and of its causes, whatever the wrapping.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _STRICT_MESSAGE.search(str(error))
        if found:
            return found.group(0)
        error = error.__cause__ or error.__context__
    return None


def infer_format(path: str) -> Optional[str]:
    """Format from the file name ("a.jsonl.gz" -> "jsonl"); None when unknown."""
    name = posixpath.basename(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix, fmt in _FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class Rejection:
    """One input record (or a whole file, row None) that could not be used."""

    file: str
    row: Optional[int]
    reason: str
    raw: object = None
    records: int = 1  # how many input records this rejection stands for

    def to_json(self) -> str:
        """One line of rejected/*.jsonl; always valid UTF-8."""
        document = {
            "source": {"file": self.file, "row": self.row},
            "reason": self.reason,
            "records": self.records,
            "raw": self.raw,
        }
        line = json.dumps(document, ensure_ascii=False, sort_keys=True, default=repr)
        if not _encodable(line):
            # A lone surrogate (JSON can spell "\ud800"): escaped, the line stays valid UTF-8.
            line = json.dumps(document, ensure_ascii=True, sort_keys=True, default=repr)
        return line


@dataclass(frozen=True)
class InputLayout:
    """How to turn any input file into batches: fixed once, before the run.

    `passthrough` lists the (name, Arrow type) of the columns carried to the
    subset besides key and text, identical for every batch of the run.
    """

    format: str
    # Webdataset: a name starting with "." is a member extension (".txt"), any other a
    # field of the sample's .json member.
    text_field: str = TEXT
    key_field: Optional[str] = None  # None: "key" if present, else file:row (webdataset: __key__)
    url_field: Optional[str] = None
    column_names: Optional[tuple[str, ...]] = None  # header-less TSV/CSV
    passthrough: tuple[tuple[str, pa.DataType], ...] = ()
    max_text_bytes: int = 65536
    batch_size: int = 4096

    @property
    def key_column(self) -> str:
        return self.key_field or KEY

    def batch_schema(self) -> pa.Schema:
        return pa.schema(
            [(KEY, pa.string()), (TEXT, pa.string()), (SOURCE_FILE, pa.int32()), (SOURCE_ROW, pa.int64())]
            + [pa.field(name, dtype) for name, dtype in self.passthrough]
        )


def text_problem(value: object, max_text_bytes: int) -> Optional[str]:
    """The rejection reason for a caption value, or None when it is usable."""
    if value is None:
        return NULL_TEXT
    if not isinstance(value, str):
        return NON_STRING_TEXT
    if not value or value.isspace():  # isspace() is exactly what str.strip() strips
        return EMPTY_TEXT
    # Cheap character test first: a str of n characters has at most 4n UTF-8 bytes.
    if len(value) * 4 > max_text_bytes and len(value.encode("utf-8", "surrogatepass")) > max_text_bytes:
        return TEXT_TOO_LONG
    return None


def _encodable(value: str) -> bool:
    """Whether a str is valid Unicode for UTF-8: no lone surrogate (JSON's "\\ud800",
    a tar member name that was not UTF-8). Arrow refuses such strings."""
    if value.isascii():  # O(1) in CPython: the common case costs nothing
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fallback_key(path: str, row: int) -> str:
    """The key of a record without one: `<file name>:<row number>`."""
    return f"{posixpath.basename(path)}:{row}"


class _BatchBuilder:
    """Collects accepted rows as Python values and emits fixed-schema batches.

    One builder serves a whole file (`read_caption_file` owns it), so that rows
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
        self.keys.append(key if key is not None else fallback_key(self.path, row))
        self.texts.append(text)
        self.rows.append(row)
        for column, value in zip(self.extra, extra_values):
            column.append(value)

    def add_columns(self, positions: Sequence[int], first_row: int, keys: list, texts: list, extras: list) -> Iterator[pa.RecordBatch]:
        """Add the rows at `positions` of whole columns (row = first_row + position),
        emitting each batch as it fills: the bulk form of `add`, for columnar inputs."""
        start = 0
        while start < len(positions):
            chunk = positions[start : start + self.layout.batch_size - len(self.rows)]
            self.keys.extend([keys[i] if keys[i] is not None else fallback_key(self.path, first_row + i) for i in chunk])
            self.texts.extend([texts[i] for i in chunk])
            self.rows.extend([first_row + i for i in chunk])
            for column, values in zip(self.extra, extras):
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
            yield Rejection(self.path, rows[0], UNREADABLE_ROWS, {"rows": [rows[0], rows[-1]], "error": _describe(error)}, records=len(rows))
            return
        good = []
        for i, row in enumerate(rows):
            values = [keys[i], texts[i]] + [column[i] for column in extra]
            if all(_encodable(value) for value in values if isinstance(value, str)):
                good.append(i)
            else:
                raw = dict(zip([KEY, TEXT] + [name for name, _ in self.layout.passthrough], values))
                yield Rejection(self.path, row, INVALID_UTF8, raw)
        if good:
            pick = lambda values: [values[i] for i in good]  # noqa: E731
            yield from self._flush_rows(pick(keys), pick(texts), pick(rows), [pick(column) for column in extra])

    def _flush_rows(self, keys, texts, rows, extra) -> Iterator[Item]:
        try:
            yield self._batch(keys, texts, rows, extra)
        except Exception as error:  # noqa: BLE001 - a value the layout's type cannot hold
            yield Rejection(self.path, rows[0], UNREADABLE_ROWS, {"rows": [rows[0], rows[-1]], "error": _describe(error)}, records=len(rows))

    def _batch(self, keys, texts, rows, extra) -> pa.RecordBatch:
        arrays = [
            pa.array(keys, pa.string()),
            pa.array(texts, pa.string()),
            pa.array([self.file_index] * len(rows), pa.int32()),
            pa.array(rows, pa.int64()),
        ] + [pa.array(values, dtype) for values, (_, dtype) in zip(extra, self.layout.passthrough)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _json_scalar_as_text(value: object) -> Optional[str]:
    """Pass-through JSONL values become strings: strings as they are, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


Item = Union[pa.RecordBatch, Rejection]


class _RawReader(io.RawIOBase):
    """Adapts a file object with only read() (Beam's CompressedFile) to io's stack."""

    def __init__(self, fileobj):
        self._fileobj = fileobj

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._fileobj.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def buffered(fileobj) -> IO[bytes]:
    """A buffered, line-iterable binary stream over any readable file object."""
    if isinstance(fileobj, (io.BufferedIOBase, io.BytesIO)):
        return fileobj
    return io.BufferedReader(_RawReader(fileobj), buffer_size=1 << 20)


def _decompressor_factory(path: str):
    """A function making a fresh decompressor for the file's suffix, or None (not compressed).

    The suffixes and codecs are those of Beam's CompressionTypes.AUTO.
    """
    name = path.lower()
    if name.endswith(".gz"):
        return lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)
    if name.endswith(".bz2"):
        return bz2.BZ2Decompressor
    if name.endswith((".xz", ".lzma")):
        return lzma.LZMADecompressor
    if name.endswith(".deflate"):
        return zlib.decompressobj
    if name.endswith((".zst", ".zstd")):
        import zstandard  # Beam's own dependency; imported here so that importing this module stays light

        return lambda: zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
    return None


class _CheckedDecompressor(io.RawIOBase):
    """Decompresses a stream as Beam's CompressedFile does (concatenated members too),
    but raises EOFError when the file ends inside a compressed stream.

    Beam's CompressedFile returns a truncated .gz/.bz2/.zst as if it were whole: the cut
    would pass unnoticed, its last line a malformed record at best.
    """

    _CHUNK = 1 << 20

    def __init__(self, raw, make_decompressor):
        self._raw = raw
        self._make = make_decompressor
        self._decompressor = make_decompressor()
        self._fed = False  # whether the current decompressor has seen any input
        self._pending = memoryview(b"")
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._finished:
            self._pending = memoryview(self._decompress_more())
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _decompress_more(self) -> bytes:
        decompressor = self._decompressor
        if decompressor.eof and decompressor.unused_data:
            data = decompressor.unused_data  # another member (gzip) or frame (zstd) follows
        else:
            data = self._raw.read(self._CHUNK)
            if not data:
                self._finished = True
                if self._fed and not decompressor.eof:
                    raise EOFError("compressed stream ends before its end marker: the file is truncated")
                return b""
        if decompressor.eof:
            self._decompressor = decompressor = self._make()
            self._fed = False
        self._fed = True
        return decompressor.decompress(data)


def decompressed(fileobj, path: str) -> IO[bytes]:
    """The file's content, decompressed by the suffix of `path` (.gz, .bz2, .xz, .lzma,
    .zst, .zstd, .deflate) like Beam's CompressionTypes.AUTO; a truncated compressed
    stream raises EOFError when its end is read. Other files are returned as they are."""
    make = _decompressor_factory(path)
    if make is None:
        return fileobj
    return io.BufferedReader(_CheckedDecompressor(fileobj, make), buffer_size=1 << 20)


def _is_empty(fileobj) -> bool:
    """Whether the stream holds no byte at all, without consuming any."""
    if hasattr(fileobj, "peek"):
        return not fileobj.peek(1)
    position = fileobj.tell()
    first = fileobj.read(1)
    fileobj.seek(position)
    return not first


def _parse_json(text: Union[str, bytes]) -> object:
    """json.loads, with nesting too deep for Python's parser as a ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_jsonl(fileobj: IO[bytes], path: str, layout: InputLayout, builder: _BatchBuilder) -> Iterator[Item]:
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
            key = None if key is None else _json_scalar_as_text(key)
            extras = [_json_scalar_as_text(record.get(name)) for name in source_names]
        except RecursionError:  # a pass-through value nested too deeply to encode again
            yield Rejection(path, row, MALFORMED_JSON, None)
            continue
        builder.add(key, text, row, extras)  # a lone surrogate ("\ud800") is rejected at flush
        if builder.full():
            yield from builder.flush()


def _read_delimited(fileobj: IO[bytes], path: str, layout: InputLayout, builder: _BatchBuilder) -> Iterator[Item]:
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
        yield Rejection(path, None, SCHEMA_MISMATCH, {"columns": _unescape(names), "missing": layout.text_field}, records=sum(1 for _ in reader))
        return
    text_at = position[layout.text_field]
    key_at = position.get(layout.key_column)
    extra_at = [
        position.get(layout.url_field if name == "url" and layout.url_field else name) for name, _ in layout.passthrough
    ]
    for row, values in enumerate(reader):
        if len(values) != len(names):
            yield Rejection(path, row, BAD_COLUMN_COUNT, _unescape(values))
            continue
        text = values[text_at]
        if not _encodable(text):  # undecodable bytes, kept as surrogates by surrogateescape
            yield Rejection(path, row, INVALID_UTF8, _unescape(values))
            continue
        problem = text_problem(text, layout.max_text_bytes)
        if problem:
            yield Rejection(path, row, problem, _unescape(values) if problem != TEXT_TOO_LONG else None)
            continue
        key = _unescape_one(values[key_at]) if key_at is not None else None
        builder.add(key, text, row, [None if i is None else _unescape_one(values[i]) for i in extra_at])
        if builder.full():
            yield from builder.flush()


def _unescape_one(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unescape(values: Sequence[str]) -> list[str]:
    return [_unescape_one(v) for v in values]


def _text_kind(dtype: pa.DataType) -> Optional[str]:
    """"string" or "binary" for a column that can hold captions (dictionary-encoded ones
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
    wanted = [(layout.key_column, pa.string())] + list(zip(source_names, (dtype for _, dtype in layout.passthrough)))
    columns, bad_rows = [], set()
    for name, dtype in wanted:
        if name not in batch.schema.names:
            columns.append([None] * batch.num_rows)
            continue
        try:
            values, bad = _python_values(batch.column(name).cast(dtype))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:  # a column of a type that does not cast
            rejection = Rejection(path, first_row, SCHEMA_MISMATCH, {"column": name, "error": str(error)}, records=batch.num_rows)
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
            rejections.append(Rejection(path, first_row + i, problem, None if problem == TEXT_TOO_LONG else _row_dict(batch, i)))
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


def _parquet_batch_columnar(batch: pa.RecordBatch, first_row: int, path: str, layout: InputLayout, text_kind: Optional[str],
                            file_index: int, schema: pa.Schema) -> tuple[list, Optional[pa.RecordBatch]]:
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
            rejections.append(Rejection(path, first_row + i, problem, None if problem == TEXT_TOO_LONG else _row_dict(batch, i)))
    if keys.null_count:
        values = keys.to_pylist()
        keys = pa.array([key if key is not None else fallback_key(path, first_row + i) for i, key in enumerate(values)], pa.string())
    columns = [keys, texts, pa.array(np.full(n, file_index, dtype=np.int32)), pa.array(np.arange(first_row, first_row + n, dtype=np.int64))] + extras
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


def read_parquet(fileobj: IO[bytes], path: str, layout: InputLayout, builder: _BatchBuilder) -> Iterator[Item]:
    """Parquet, a row group at a time, a record batch at a time; pass-through columns
    cast to the layout.

    The footer gives every row group's row count, so a row group that cannot be
    decoded is rejected exactly: its rows not yet read, as one unreadable_rows
    rejection; the other row groups are read as usual.
    """
    parquet = pq.ParquetFile(fileobj)
    columns = parquet.schema_arrow.names
    if layout.text_field not in columns:
        yield Rejection(path, None, SCHEMA_MISMATCH, {"columns": columns, "missing": layout.text_field}, records=parquet.metadata.num_rows)
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
                batch, fault = None, _describe(error)
            else:
                fault = None if batch is not None else "fewer rows than the footer says"
            if batch is None:
                lost = {"row_group": group, "error": fault}
                yield Rejection(path, first_row + done, UNREADABLE_ROWS, lost, records=group_rows - done)
                break
            try:
                rejections, columnar = _parquet_batch_columnar(batch, first_row + done, path, layout, text_kind, builder.file_index, builder.schema)
            except Exception:  # noqa: BLE001 - invalid UTF-8, a column that does not cast: row by row below
                pass
            else:
                yield from rejections
                if columnar is not None:
                    yield columnar
                done += batch.num_rows
                continue
            try:
                rejections, accepted, keys, texts, extras = _parquet_batch(batch, first_row + done, path, layout, text_kind)
            except Exception as error:  # noqa: BLE001 - values that do not convert: this batch's rows
                lost = {"row_group": group, "error": _describe(error)}
                rejections, accepted = [Rejection(path, first_row + done, UNREADABLE_ROWS, lost, records=batch.num_rows)], []
            yield from rejections
            if accepted:
                yield from builder.add_columns(accepted, first_row + done, keys, texts, extras)
            done += batch.num_rows
        first_row += group_rows


def webdataset_text_member(layout: InputLayout) -> Optional[str]:
    """The extension of the caption member ("txt"), or None when the caption is a .json field."""
    return layout.text_field[1:].lower() if layout.text_field.startswith(".") else None


def read_webdataset(fileobj: IO[bytes], path: str, layout: InputLayout, builder: _BatchBuilder) -> Iterator[Item]:
    """Webdataset tar shards: one record per sample, rows are sample positions in the tar.

    The caption is the member named by `--text_field` when it starts with a dot (`.txt`,
    the default), else that field of the sample's `.json` member. The key is the
    sample's `__key__`, or `--key_field` of the `.json`; the url is `--url_field` of the
    `.json`. Only the caption and `.json` members are read; images are skipped unread.
    A sample without its caption member is rejected as `no_caption_member`. A truncated
    or corrupt tar raises after the samples before the fault (read_caption_file keeps them).
    """
    text_member = webdataset_text_member(layout)
    needs_json = text_member is None or bool(layout.key_field) or bool(layout.url_field)
    wanted = {text_member, "json" if needs_json else None} - {None}
    for sample in iter_tar_samples(fileobj, lambda _, ext: ext in wanted):
        row = sample.index
        about = {"__key__": _unescape_one(sample.key), "members": sample.extensions()}
        record: dict = {}
        json_member = sample.member("json") if needs_json else None
        if json_member is not None:
            try:
                record = _parse_json(json_member.data)
            except ValueError:  # UnicodeDecodeError included
                yield Rejection(path, row, MALFORMED_JSON, {**about, "json": json_member.data.decode("utf-8", "replace")})
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
                key = None if key is None else _json_scalar_as_text(key)
            else:
                key = sample.key
            url = _json_scalar_as_text(record.get(layout.url_field)) if layout.url_field else None
        except RecursionError:  # a .json value nested too deeply to encode again
            yield Rejection(path, row, MALFORMED_JSON, about)
            continue
        extras = {SHARD: path, WDS_KEY: sample.key, "url": url}
        builder.add(key, text, row, [extras[name] for name, _ in layout.passthrough])
        if builder.full():
            yield from builder.flush()


def webdataset_passthrough(url_field: Optional[str]) -> tuple[tuple[str, pa.DataType], ...]:
    columns = [(SHARD, pa.string()), (WDS_KEY, pa.string())]
    if url_field:
        columns.append(("url", pa.string()))
    return tuple(columns)


_READERS = {
    "jsonl": read_jsonl,
    "tsv": _read_delimited,
    "csv": _read_delimited,
    "parquet": read_parquet,
    WEBDATASET: read_webdataset,
}


def preset_fields(preset: str, fmt: str, columns: Optional[Sequence[str]]) -> dict:
    """The text, key and url fields of an input preset, for this format and these columns.

    datacomp: DataComp's pool metadata (`uid`, `url`, `text`), or its webdataset shards
    (caption in `.txt`, `uid` and `url` in `.json`). img2dataset: its input parquet
    (`url`/`caption`, or LAION's `URL`/`TEXT`), or its webdataset output (`.txt`, `url` in
    `.json`). Raises InputError when the columns are not there.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown --input_preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if fmt == WEBDATASET:
        return {"text_field": TXT_MEMBER, "key_field": "uid" if preset == "datacomp" else None, "url_field": "url"}
    names = list(columns or [])
    if preset == "datacomp":
        missing = [name for name in ("uid", "url", "text") if name not in names]
        if missing:
            raise InputError(f"--input_preset datacomp needs the columns uid, url and text; {', '.join(missing)} missing (columns: {', '.join(map(str, names))})")
        return {"text_field": "text", "key_field": "uid", "url_field": "url"}
    for url, caption in (("url", "caption"), ("URL", "TEXT")):
        if url in names and caption in names:
            return {"text_field": caption, "key_field": None, "url_field": url}
    raise InputError(f"--input_preset img2dataset needs the columns url and caption (or URL and TEXT); columns: {', '.join(map(str, names))}")


def read_caption_file(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
    """Every record of one file, as accepted batches and rejections.

    `fileobj` holds the file's content (see `decompressed`). A file without a
    single byte is one `empty_file` rejection. A file that cannot be parsed past
    some point (truncated, corrupt) yields what it read so far, the rows accepted
    before the fault included, and one file-level `unreadable_file` rejection
    of 0 records: how many records the unreadable rest held is unknown.
    """
    builder = _BatchBuilder(layout, path, file_index)
    try:
        if layout.format != "parquet":
            fileobj = buffered(fileobj)
        if _is_empty(fileobj):
            yield Rejection(path, None, EMPTY_FILE, None, records=0)
            return
        yield from _READERS[layout.format](fileobj, path, layout, builder)
    except Exception as error:  # noqa: BLE001 - any parser failure is this file's fault
        yield from builder.flush()
        yield Rejection(path, None, UNREADABLE_FILE, _describe(error), records=0)
        return
    yield from builder.flush()


def _probe_webdataset(fileobj: IO[bytes], layout: InputLayout, options: dict) -> Optional[InputLayout]:
    """Webdataset: fixed pass-through columns (shard, wds_key, url); checks the file is a tar."""
    if layout.column_names:
        raise InputError("--column_names names the columns of header-less TSV/CSV files; webdataset shards have none")
    if layout.text_field.startswith(".") and len(layout.text_field) < 2:
        raise InputError("--text_field '.' names no member; use an extension such as .txt, or a field of the .json member")
    tar = open_tar_stream(fileobj)  # raises on a file that is not a tar
    if tar.next() is None:
        return None  # an empty tar holds no samples
    return InputLayout(format=WEBDATASET, **options, passthrough=webdataset_passthrough(layout.url_field))


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
        raise InputError(f"--text_field {layout.text_field!r} is not a column of the input (columns: {', '.join(map(str, names))})")
    if layout.key_field and layout.key_field not in names:
        raise InputError(f"--key_field {layout.key_field!r} is not a column of the input (columns: {', '.join(map(str, names))})")
    if layout.url_field and layout.url_field not in names:
        raise InputError(f"--url_field {layout.url_field!r} is not a column of the input (columns: {', '.join(map(str, names))})")
    passthrough = []
    for name, dtype in zip(names, types):
        if name in (layout.text_field, layout.key_column):
            continue
        out = "url" if layout.url_field and name == layout.url_field else name
        if out in (KEY, TEXT, SOURCE_FILE, SOURCE_ROW) or any(out == seen for seen, _ in passthrough):
            raise InputError(f"input column {name!r} would collide with the output column {out!r}; rename it or choose other fields")
        passthrough.append((out, dtype))
    return InputLayout(format=fmt, **options, passthrough=tuple(passthrough))
