"""Caption file parsing: each format, field selection, every reject reason, and faults:
every record is counted exactly once, whatever is wrong with it or with its file."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import corrupt_row_group
from transforms.formats.compression import decompressed
from transforms.formats.layout import InputLayout, fallback_key, infer_format, key_root, listable_names
from transforms.formats.readers import probe_layout, read_caption_file
from transforms.formats.rejections import (
    Rejection,
    StrictRejectionError,
    strict_error,
    strict_failure,
)


def _read(data: bytes, fmt: str, path="f", **options):
    layout = probe_layout(io.BytesIO(data), fmt, **options) or InputLayout(format=fmt, **options)
    batches, rejections = [], []
    for item in read_caption_file(io.BytesIO(data), path, 3, layout):
        (rejections if isinstance(item, Rejection) else batches).append(item)
    rows = [row for batch in batches for row in pa.Table.from_batches([batch]).to_pylist()]
    return layout, rows, rejections


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_infer_format():
    assert [infer_format(p) for p in ["a.jsonl", "b.json.gz", "c.parquet", "gs://x/d.tsv", "e.csv.bz2", "f.txt"]] == [
        "jsonl",
        "jsonl",
        "parquet",
        "tsv",
        "csv",
        None,
    ]


def test_img2dataset_parquet_layout_with_field_choice():
    table = pa.table(
        {
            "url": ["u0", "u1", "u2"],
            "caption": ["a dog", None, "x" * 100],
            "key": ["000", "001", "002"],
            "width": pa.array([1, 2, 3], pa.int32()),
        }
    )
    layout, rows, rejected = _read(
        _parquet_bytes(table), "parquet", text_field="caption", url_field="url", max_text_bytes=50
    )
    assert layout.passthrough == (("url", pa.string()), ("width", pa.int32()))
    assert [(r["key"], r["text"], r["url"], r["width"], r["__source_file"], r["__source_row"]) for r in rows] == [
        ("000", "a dog", "u0", 1, 3, 0)
    ]
    assert [(r.row, r.reason) for r in rejected] == [(1, "null_text"), (2, "text_too_long")]


def test_datacomp_parquet_layout_uid_as_key():
    uid = "a" * 32
    table = pa.table({"uid": [uid], "url": ["u"], "text": ["a cat"], "original_width": [640]})
    _, rows, _ = _read(_parquet_bytes(table), "parquet", key_field="uid", url_field="url")
    assert rows[0]["key"] == uid and rows[0]["original_width"] == 640 and "uid" not in rows[0]


def test_parquet_without_key_column_uses_file_name_and_row():
    _, rows, _ = _read(_parquet_bytes(pa.table({"text": ["a", "b"]})), "parquet", path="gs://bucket/pool/00007.parquet")
    assert [r["key"] for r in rows] == ["00007.parquet:0", "00007.parquet:1"]


def test_parquet_text_column_of_wrong_type_rejects_each_row():
    layout = InputLayout(format="parquet")
    items = list(read_caption_file(io.BytesIO(_parquet_bytes(pa.table({"text": [1, 2]}))), "f", 0, layout))
    assert [(r.row, r.reason) for r in items] == [(0, "non_string_text"), (1, "non_string_text")]


def test_cc3m_tsv_without_header_selects_columns_by_name():
    data = 'a "quoted" dog\thttp://u/1\nsecond caption\thttp://u/2\nbroken row\n'.encode()
    layout, rows, rejected = _read(data, "tsv", column_names=("caption", "url"), text_field="caption", url_field="url")
    assert [(r["key"], r["text"], r["url"]) for r in rows] == [
        ("f:0", 'a "quoted" dog', "http://u/1"),
        ("f:1", "second caption", "http://u/2"),
    ]
    assert [(r.row, r.reason) for r in rejected] == [(2, "bad_column_count")]


def test_csv_with_header_quotes_and_embedded_newlines():
    data = b'key,text,url\nk1,"dog, cat",u1\nk2,"two\nlines",u2\n'
    _, rows, _ = _read(data, "csv")
    assert [(r["key"], r["text"], r["url"]) for r in rows] == [("k1", "dog, cat", "u1"), ("k2", "two\nlines", "u2")]


def test_invalid_utf8_is_rejected_not_fatal():
    jsonl = b'{"text": "ok"}\n{"text": "bad \xff"}\n'
    _, rows, rejected = _read(jsonl, "jsonl")
    assert [r["text"] for r in rows] == ["ok"] and [(r.row, r.reason) for r in rejected] == [(1, "invalid_utf8")]
    tsv = b"text\nfine\nbad \xfe\n"
    _, rows, rejected = _read(tsv, "tsv")
    assert [r["text"] for r in rows] == ["fine"] and [(r.row, r.reason) for r in rejected] == [(1, "invalid_utf8")]


def test_jsonl_non_object_and_non_string_pass_through_values():
    data = b'[1, 2]\n{"text": "a", "meta": {"w": 1}, "n": 5}\n\n'
    layout, rows, rejected = _read(data, "jsonl")
    assert [r.reason for r in rejected] == ["not_a_json_object"]
    assert rows[0]["meta"] == '{"w": 1}' and rows[0]["n"] == "5"


def test_truncated_parquet_keeps_what_it_read_and_rejects_the_file():
    data = _parquet_bytes(pa.table({"text": ["a"] * 10}))
    items = list(read_caption_file(io.BytesIO(data[: len(data) // 2]), "cut.parquet", 0, InputLayout(format="parquet")))
    assert [(r.file, r.row, r.reason) for r in items] == [("cut.parquet", None, "unreadable_file")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["jsonl", "tsv", "csv", "parquet"]))
def test_readers_never_raise_on_arbitrary_bytes(data, fmt):
    for item in read_caption_file(io.BytesIO(data), "fuzz", 0, InputLayout(format=fmt)):
        assert isinstance(item, (pa.RecordBatch, Rejection))


# --- faults: every record counted once, whatever is wrong with it or its file -------------


def _items(data: bytes, fmt: str, path="f", **options):
    """(accepted rows, rejections) of read_caption_file on `data`, with a default layout."""
    layout = InputLayout(format=fmt, **options)
    batches, rejections = [], []
    for item in read_caption_file(io.BytesIO(data), path, 0, layout):
        (rejections if isinstance(item, Rejection) else batches).append(item)
    return [row for batch in batches for row in pa.Table.from_batches([batch]).to_pylist()], rejections


def _accounted(rows, rejections) -> int:
    return len(rows) + sum(r.records for r in rejections)


def test_empty_files_are_rejected_as_empty_but_empty_tables_are_just_empty():
    for fmt in ["jsonl", "tsv", "csv", "parquet", "webdataset"]:
        rows, rejections = _items(b"", fmt, path="e")
        assert rows == [] and [(r.file, r.row, r.reason, r.records) for r in rejections] == [
            ("e", None, "empty_file", 0)
        ], fmt
    no_rows = _parquet_bytes(pa.table({"text": pa.array([], pa.string())}))
    assert _items(no_rows, "parquet") == ([], [])
    assert _items(b"text\n", "tsv") == ([], [])  # a header and no row


def test_corrupt_parquet_row_group_is_rejected_with_its_row_count_and_the_others_read():
    table = pa.table({"key": [f"k{i}" for i in range(30)], "text": [f"caption {i}" for i in range(30)]})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=10)
    rows, rejections = _items(corrupt_row_group(sink.getvalue(), 1), "parquet", batch_size=4)
    assert [r["key"] for r in rows] == [f"k{i}" for i in list(range(10)) + list(range(20, 30))]
    assert [(r.row, r.reason, r.records, r.raw["row_group"]) for r in rejections] == [(10, "unreadable_rows", 10, 1)]


def test_parquet_strings_that_are_not_utf8_reject_their_rows_only():
    bad = lambda values: pa.array(values, pa.binary()).view(pa.string())  # noqa: E731 - pyarrow does not check on read
    table = pa.table(
        {
            "key": bad([b"k0", b"k\xff1", b"k2", b"k3"]),
            "text": bad([b"ok", b"ok", b"caf\xe9", b"fine"]),
            "url": bad([b"u", b"u", b"u", b"\xc0"]),
        }
    )
    layout, rows, rejections = _read(_parquet_bytes(table), "parquet")
    assert [r["key"] for r in rows] == ["k0"]
    assert [(r.row, r.reason) for r in rejections] == [(1, "invalid_utf8"), (2, "invalid_utf8"), (3, "invalid_utf8")]
    assert rejections[1].raw["text"] == "caf\ufffd"  # shown with a replacement character
    json.loads(rejections[0].to_json())


def test_dictionary_encoded_parquet_text_is_text():
    table = pa.table({"text": pa.array(["a dog", "a cat", "a dog"]).dictionary_encode()})
    _, rows, rejections = _read(_parquet_bytes(table), "parquet")
    assert [r["text"] for r in rows] == ["a dog", "a cat", "a dog"] and rejections == []


def test_parquet_key_column_that_cannot_be_a_string_rejects_its_batch():
    table = pa.table({"key": pa.array([{"a": 1}, {"a": 2}]), "text": ["x", "y"]})
    rows, rejections = _items(_parquet_bytes(table), "parquet")
    assert rows == [] and [(r.row, r.reason, r.records, r.raw["column"]) for r in rejections] == [
        (0, "schema_mismatch", 2, "key")
    ]


def test_json_lone_surrogates_reject_the_record_not_the_file():
    data = (
        b'{"text": "ok", "url": "u"}\n{"text": "bad \\ud800"}\n{"text": "x", "key": "\\udfff"}\n'
        b'{"text": "y", "url": "\\ud83d"}\n{"text": "\\ud83d\\ude00"}\n'
    )
    _, rows, rejections = _read(data, "jsonl")
    assert [r["text"] for r in rows] == ["ok", "\U0001f600"]  # a surrogate pair is one character
    assert [(r.row, r.reason) for r in rejections] == [(1, "invalid_utf8"), (2, "invalid_utf8"), (3, "invalid_utf8")]
    for rejection in rejections:  # rejected/ stays valid UTF-8 JSON
        line = rejection.to_json()
        line.encode("utf-8")
        assert json.loads(line)["raw"] == rejection.raw


def test_json_nested_too_deeply_is_malformed_json():
    data = b'{"text": "a"}\n' + b"[" * 100_000 + b"\n" + b'{"text": "b", "meta": ' + b"[" * 990 + b"]" * 990 + b"}\n"
    rows, rejections = _items(data, "jsonl")
    assert [r.reason for r in rejections][:1] == ["malformed_json"] and _accounted(rows, rejections) == 3


def test_csv_field_over_the_module_limit_is_a_long_text_not_a_broken_file():
    data = b"text\nshort\n" + b"x" * 200_000 + b"\nafter\n"
    rows, rejections = _items(data, "csv", max_text_bytes=1000)
    assert [r["text"] for r in rows] == ["short", "after"] and [(r.row, r.reason) for r in rejections] == [
        (1, "text_too_long")
    ]


@pytest.mark.parametrize(
    "suffix, compress",
    [
        (".gz", lambda d: gzip.compress(d, mtime=0)),
        (".bz2", bz2.compress),
        (".xz", lzma.compress),
        (".deflate", zlib.compress),
        (".zst", lambda d: __import__("zstandard").ZstdCompressor().compress(d)),
    ],
)
def test_truncated_compressed_file_keeps_its_whole_lines_and_is_rejected(suffix, compress):
    data = b"".join(
        json.dumps({"key": f"k{i}", "text": f"caption {i} " + "w" * (i % 50)}).encode() + b"\n" for i in range(3000)
    )
    packed = compress(data)
    assert decompressed(io.BytesIO(packed + packed), "a" + suffix).read() == data + data  # concatenated members
    cut = packed[: len(packed) * 2 // 3]
    items = list(
        read_caption_file(
            decompressed(io.BytesIO(cut), "cut.jsonl" + suffix), "cut.jsonl" + suffix, 0, InputLayout(format="jsonl")
        )
    )
    rows = [row for item in items if isinstance(item, pa.RecordBatch) for row in item.column("key").to_pylist()]
    assert rows == [f"k{i}" for i in range(len(rows))]  # a prefix, no half line
    assert [(r.row, r.reason, r.records) for r in items if isinstance(r, Rejection)] == [(None, "unreadable_file", 0)]
    assert "truncated" in items[-1].raw


def test_rows_accepted_before_a_fault_are_emitted_not_lost():
    data = gzip.compress(b"".join(b'{"text": "t%d"}\n' % i for i in range(50)), mtime=0)
    items = list(
        read_caption_file(
            decompressed(io.BytesIO(data[:-8]), "x.gz"), "x.gz", 0, InputLayout(format="jsonl", batch_size=4096)
        )
    )
    assert sum(i.num_rows for i in items if isinstance(i, pa.RecordBatch)) == 50  # only the gzip trailer was cut
    assert items[-1].reason == "unreadable_file"


def test_strict_error_is_one_line_and_found_in_whatever_the_runner_raises():
    row = strict_error(Rejection("gs://b/pool/0.jsonl", 7, "malformed_json"))
    whole = strict_error(Rejection("odd\nname.tar", None, "unreadable_file"))
    assert isinstance(row, StrictRejectionError) and isinstance(row, ValueError)
    assert str(row) == "--strict: gs://b/pool/0.jsonl row 7: malformed_json"
    assert str(whole) == "--strict: odd\\x0aname.tar: unreadable_file"
    in_process = StrictRejectionError(str(row) + " [while running 'ReadCaptions/ParseFiles']")
    remote = RuntimeError(
        "Traceback (most recent call last):\\n  File ...\\ntransforms.formats.rejections.StrictRejectionError: "
        + str(whole)
        + " [while running 'X']\\n\\nDuring handling"
    )
    chained = RuntimeError("pipeline failed")
    chained.__cause__ = in_process
    assert strict_failure(in_process) == strict_failure(chained) == str(row)
    assert strict_failure(remote) == str(whole)
    assert strict_failure(RuntimeError("boom")) is None


# Arbitrary JSON values, text with any code point: lone surrogates, NULs, controls.
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
_RECORDS = st.lists(
    st.dictionaries(st.sampled_from(["key", "text", "url", "x"]), _JSON, max_size=4) | _JSON, min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(_RECORDS, st.integers(1, 5), st.integers(1, 40))
def test_jsonl_of_arbitrary_values_accounts_for_every_line(records, batch_size, max_text_bytes):
    data = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode()
    layout = InputLayout(
        format="jsonl",
        batch_size=batch_size,
        max_text_bytes=max_text_bytes,
        passthrough=(("url", pa.string()), ("x", pa.string())),
    )
    items = list(read_caption_file(io.BytesIO(data), "fuzz", 0, layout))
    rows = sum(i.num_rows for i in items if isinstance(i, pa.RecordBatch))
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert rows + sum(r.records for r in rejections) == len(records)
    assert not [r for r in rejections if r.row is None] and {r.row for r in rejections} <= set(range(len(records)))
    for rejection in rejections:
        json.loads(rejection.to_json().encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.sampled_from(["jsonl", "tsv", "csv"]),
    st.sampled_from([b"", b"text\n", b"key,text\n", b"key\ttext\n"]),
)
def test_line_formats_account_for_every_line_of_arbitrary_bytes(data, fmt, header):
    """JSONL: one item per non-blank line; TSV/CSV: one per row the csv module sees after the header."""
    data = header + data
    if fmt == "jsonl":
        expected = sum(1 for line in io.BytesIO(data) if line.strip())
    else:
        stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(stream)
        expected = max(0, sum(1 for _ in reader) - 1)
    rows, rejections = _items(data, fmt, column_names=None)
    assert not [r for r in rejections if r.reason in ("unreadable_file", "unreadable_rows")]
    if fmt != "jsonl" and rejections and rejections[0].reason == "schema_mismatch":
        return  # no "text" column in the header: one rejection for all rows
    assert _accounted(rows, rejections) == expected


_CELLS = st.one_of(st.none(), st.binary(max_size=12), st.sampled_from([b"a dog", b"   ", b"\xff\xfe", b"x" * 30]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_CELLS, _CELLS), max_size=25), st.integers(1, 8), st.booleans(), st.data())
def test_parquet_with_arbitrary_bytes_in_string_columns_and_corruption_accounts_exactly(
    cells, group_size, as_string, data
):
    texts = pa.array([c[0] for c in cells], pa.binary())
    keys = pa.array([c[1] for c in cells], pa.binary())
    table = pa.table({"key": keys.view(pa.string()), "text": texts.view(pa.string()) if as_string else texts})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=group_size)
    packed = sink.getvalue()
    if data.draw(st.booleans()):  # damage some bytes of the data, never the footer
        footer_start = len(packed) - 8 - int.from_bytes(packed[-8:-4], "little")
        start = data.draw(st.integers(4, max(4, footer_start - 1)))
        packed = packed[:start] + data.draw(st.binary(min_size=1, max_size=16)) + packed[start + 16 :]
    rows, rejections = _items(packed, "parquet", batch_size=3, max_text_bytes=20)
    try:
        footer_rows = pq.ParquetFile(io.BytesIO(packed)).metadata.num_rows
    except Exception:  # noqa: BLE001 - the damage reached the footer: how many rows the file held is unknown
        assert [(r.row, r.reason, r.records) for r in rejections] == [(None, "unreadable_file", 0)] and rows == []
        return
    assert footer_rows == len(cells) and not [r for r in rejections if r.reason == "unreadable_file"]
    assert _accounted(rows, rejections) == len(cells)


@pytest.mark.parametrize(
    "pattern, names",
    [
        ("*.parquet", ["./*.parquet"]),  # Beam lists the folder before the first wildcard: there is none
        ("*/part-0.parquet", ["./*/part-0.parquet"]),
        ("[ab].jsonl", ["./[ab].jsonl"]),
        ("laion/*.parquet", ["laion/*.parquet"]),
        ("{a,b}/part-0.parquet", ["a/part-0.parquet", "b/part-0.parquet"]),
        ("{a,b}*.tar", ["./a*.tar", "./b*.tar"]),
        ("./*.parquet", ["./*.parquet"]),
        ("../pool/*.parquet", ["../pool/*.parquet"]),
        ("/data/*.parquet", ["/data/*.parquet"]),
        ("gs://bucket/*.parquet", ["gs://bucket/*.parquet"]),
        ("part-0.parquet", ["part-0.parquet"]),
    ],
)
def test_listable_names_anchor_a_relative_glob_without_a_folder(pattern, names):
    assert listable_names(pattern) == names


def test_default_keys_of_relative_paths_in_different_folders_keep_their_folders():
    root = key_root(["a/part-0.parquet", "b/part-0.parquet"])
    assert [fallback_key(p, 3, root) for p in ("a/part-0.parquet", "b/part-0.parquet")] == [
        "a/part-0.parquet:3",
        "b/part-0.parquet:3",
    ]
    assert fallback_key("gs://bucket/pool/00007.parquet", 0) == "00007.parquet:0"  # no root known: the file name
    assert fallback_key("/data/a/x.parquet", 1, key_root(["/data/a/x.parquet", "/data/b/x.parquet"])) == "a/x.parquet:1"
