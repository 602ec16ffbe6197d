"""Parsing caption shards into Arrow record batches, with a reason for every reject.

No Beam import: it works on any binary file object, so the fuzz tests and the
benchmarks call the same code the pipeline's reader DoFn runs.

Every record of a file ends up in exactly one place: a row of a yielded
`pa.RecordBatch` (the accepted captions) or a yielded `Rejection`.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from dataclasses import dataclass
from typing import IO, Iterator, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.columns import KEY, SHARD, SOURCE_FILE, SOURCE_ROW, TEXT, WDS_KEY
from transforms.webdataset_files import TXT_MEMBER, WEBDATASET, iter_tar_samples, open_tar_stream

FORMATS = ("jsonl", "parquet", "tsv", "csv", WEBDATASET)
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".deflate", ".lzma", ".xz")
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


class InputError(ValueError):
    """A problem with the inputs that must stop the run before any work."""


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
        return json.dumps(
            {
                "source": {"file": self.file, "row": self.row},
                "reason": self.reason,
                "records": self.records,
                "raw": self.raw,
            },
            ensure_ascii=False,
            sort_keys=True,
            default=repr,
        )


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


def fallback_key(path: str, row: int) -> str:
    """The key of a record without one: `<file name>:<row number>`."""
    return f"{posixpath.basename(path)}:{row}"


class _BatchBuilder:
    """Collects accepted rows as Python values and emits fixed-schema batches."""

    def __init__(self, layout: InputLayout, path: str, file_index: int):
        self.layout = layout
        self.path = path
        self.file_index = file_index
        self.schema = layout.batch_schema()
        self._reset()

    def _reset(self):
        self.keys, self.texts, self.rows = [], [], []
        self.extra = [[] for _ in self.layout.passthrough]

    def add(self, key: Optional[str], text: str, row: int, extra_values: Sequence[object]):
        self.keys.append(key if key is not None else fallback_key(self.path, row))
        self.texts.append(text)
        self.rows.append(row)
        for column, value in zip(self.extra, extra_values):
            column.append(value)

    def full(self) -> bool:
        return len(self.rows) >= self.layout.batch_size

    def flush(self) -> Iterator[pa.RecordBatch]:
        if not self.rows:
            return
        arrays = [
            pa.array(self.keys, pa.string()),
            pa.array(self.texts, pa.string()),
            pa.array([self.file_index] * len(self.rows), pa.int32()),
            pa.array(self.rows, pa.int64()),
        ] + [pa.array(values, dtype) for values, (_, dtype) in zip(self.extra, self.layout.passthrough)]
        self._reset()
        yield pa.RecordBatch.from_arrays(arrays, schema=self.schema)


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


def read_jsonl(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
    """One JSON object a line. Blank lines are not records; rows are line numbers."""
    builder = _BatchBuilder(layout, path, file_index)
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
        except ValueError:
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
        key = record.get(layout.key_column)
        builder.add(
            None if key is None else _json_scalar_as_text(key),
            text,
            row,
            [_json_scalar_as_text(record.get(name)) for name in source_names],
        )
        if builder.full():
            yield from builder.flush()
    yield from builder.flush()


def _read_delimited(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
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
        yield Rejection(path, None, SCHEMA_MISMATCH, {"columns": names, "missing": layout.text_field}, records=sum(1 for _ in reader))
        return
    text_at = position[layout.text_field]
    key_at = position.get(layout.key_column)
    extra_at = [
        position.get(layout.url_field if name == "url" and layout.url_field else name) for name, _ in layout.passthrough
    ]
    builder = _BatchBuilder(layout, path, file_index)
    for row, values in enumerate(reader):
        if len(values) != len(names):
            yield Rejection(path, row, BAD_COLUMN_COUNT, _unescape(values))
            continue
        text = values[text_at]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            yield Rejection(path, row, INVALID_UTF8, _unescape(values))
            continue
        problem = text_problem(text, layout.max_text_bytes)
        if problem:
            yield Rejection(path, row, problem, _unescape(values) if problem != TEXT_TOO_LONG else None)
            continue
        builder.add(
            _unescape_one(values[key_at]) if key_at is not None else None,
            text,
            row,
            [None if i is None else _unescape_one(values[i]) for i in extra_at],
        )
        if builder.full():
            yield from builder.flush()
    yield from builder.flush()


def _unescape_one(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unescape(values: Sequence[str]) -> list[str]:
    return [_unescape_one(v) for v in values]


def read_parquet(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
    """Parquet, read a record batch at a time; pass-through columns cast to the layout."""
    parquet = pq.ParquetFile(fileobj)
    columns = parquet.schema_arrow.names
    if layout.text_field not in columns:
        yield Rejection(path, None, SCHEMA_MISMATCH, {"columns": columns, "missing": layout.text_field}, records=parquet.metadata.num_rows)
        return
    text_type = parquet.schema_arrow.field(layout.text_field).type
    text_is_binary = pa.types.is_binary(text_type) or pa.types.is_large_binary(text_type)
    text_is_string = pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
    source_names = [layout.url_field if name == "url" and layout.url_field else name for name, _ in layout.passthrough]
    builder = _BatchBuilder(layout, path, file_index)
    first_row = 0
    for batch in parquet.iter_batches(batch_size=layout.batch_size):
        texts = batch.column(layout.text_field).to_pylist()
        if layout.key_column in batch.schema.names:
            keys = batch.column(layout.key_column).cast(pa.string()).to_pylist()
        else:
            keys = [None] * batch.num_rows
        extras = []
        for name, (_, dtype) in zip(source_names, layout.passthrough):
            if name in batch.schema.names:
                try:
                    extras.append(batch.column(name).cast(dtype).to_pylist())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    yield Rejection(path, first_row, SCHEMA_MISMATCH, {"column": name, "error": str(error)}, records=batch.num_rows)
                    extras = None
                    break
            else:
                extras.append([None] * batch.num_rows)
        if extras is None:
            first_row += batch.num_rows
            continue
        for i, text in enumerate(texts):
            row = first_row + i
            if text_is_binary and text is not None:
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    yield Rejection(path, row, INVALID_UTF8, text.decode("utf-8", "replace"))
                    continue
            problem = text_problem(text, layout.max_text_bytes) if (text_is_string or text_is_binary or text is None) else NON_STRING_TEXT
            if problem:
                yield Rejection(path, row, problem, None if problem == TEXT_TOO_LONG else _row_dict(batch, i))
                continue
            builder.add(keys[i], text, row, [column[i] for column in extras])
            if builder.full():
                yield from builder.flush()
        first_row += batch.num_rows
    yield from builder.flush()


def _row_dict(batch: pa.RecordBatch, i: int) -> dict:
    return {name: batch.column(name)[i].as_py() for name in batch.schema.names}


def webdataset_text_member(layout: InputLayout) -> Optional[str]:
    """The extension of the caption member ("txt"), or None when the caption is a .json field."""
    return layout.text_field[1:].lower() if layout.text_field.startswith(".") else None


def read_webdataset(fileobj: IO[bytes], path: str, file_index: int, layout: InputLayout) -> Iterator[Item]:
    """Webdataset tar shards: one record per sample, rows are sample positions in the tar.

    The caption is the member named by `--text_field` when it starts with a dot (`.txt`,
    the default), else that field of the sample's `.json` member. The key is the
    sample's `__key__`, or `--key_field` of the `.json`; the url is `--url_field` of the
    `.json`. Only the caption and `.json` members are read; images are skipped unread.
    A sample without its caption member is rejected as `no_caption_member`.
    """
    text_member = webdataset_text_member(layout)
    needs_json = text_member is None or bool(layout.key_field) or bool(layout.url_field)
    wanted = {text_member, "json" if needs_json else None} - {None}
    builder = _BatchBuilder(layout, path, file_index)
    samples = iter_tar_samples(fileobj, lambda _, ext: ext in wanted)
    while True:
        try:
            sample = next(samples, None)
        except Exception as error:  # noqa: BLE001 - a truncated or corrupt tar (a failed download)
            # Keep the samples read before the fault, as read_caption_file promises.
            yield from builder.flush()
            yield Rejection(path, None, UNREADABLE_FILE, f"{type(error).__name__}: {error}", records=0)
            return
        if sample is None:
            break
        row = sample.index
        about = {"__key__": sample.key, "members": sample.extensions()}
        record: dict = {}
        json_member = sample.member("json") if needs_json else None
        if json_member is not None:
            try:
                record = json.loads(json_member.data)
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
        if layout.key_field:
            key = record.get(layout.key_field)
            key = None if key is None else _json_scalar_as_text(key)
        else:
            key = sample.key
        url = _json_scalar_as_text(record.get(layout.url_field)) if layout.url_field else None
        extras = {SHARD: path, WDS_KEY: sample.key, "url": url}
        builder.add(key, text, row, [extras[name] for name, _ in layout.passthrough])
        if builder.full():
            yield from builder.flush()
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

    A file that cannot be parsed past some point (truncated, corrupt) yields
    what it read so far and one file-level `unreadable_file` rejection.
    """
    try:
        if layout.format != "parquet":
            fileobj = buffered(fileobj)
        yield from _READERS[layout.format](fileobj, path, file_index, layout)
    except Exception as error:  # noqa: BLE001 - any parser failure is this file's fault
        yield Rejection(path, None, UNREADABLE_FILE, f"{type(error).__name__}: {error}", records=0)


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
