"""Caption file parsing: each format, field selection, and every reject reason."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline import curate
from transforms.caption_files import InputLayout, Rejection, infer_format, probe_layout, read_caption_file


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
        "jsonl", "jsonl", "parquet", "tsv", "csv", None]


def test_img2dataset_parquet_layout_with_field_choice():
    table = pa.table({"url": ["u0", "u1", "u2"], "caption": ["a dog", None, "x" * 100], "key": ["000", "001", "002"],
                      "width": pa.array([1, 2, 3], pa.int32())})
    layout, rows, rejected = _read(_parquet_bytes(table), "parquet", text_field="caption", url_field="url", max_text_bytes=50)
    assert layout.passthrough == (("url", pa.string()), ("width", pa.int32()))
    assert [(r["key"], r["text"], r["url"], r["width"], r["__source_file"], r["__source_row"]) for r in rows] == [("000", "a dog", "u0", 1, 3, 0)]
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
    assert [(r["key"], r["text"], r["url"]) for r in rows] == [("f:0", 'a "quoted" dog', "http://u/1"), ("f:1", "second caption", "http://u/2")]
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


def test_gzipped_jsonl_and_several_globs_through_the_command_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with gzip.open(tmp_path / "a" / "0.jsonl.gz", "wt") as f:
        f.write(json.dumps({"key": "x", "text": "a dog"}) + "\n")
    (tmp_path / "b" / "1.jsonl").write_text(json.dumps({"key": "y", "text": "a cat"}) + "\n")
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    out = tmp_path / "out"
    assert curate.run(["--input", str(tmp_path / "a" / "*.jsonl.gz"), "--input", str(tmp_path / "b" / "*"),
                       "--metadata", str(tmp_path / "md.json"), "--threshold", "5", "--output_dir", str(out)]) == 0
    assert json.loads((out / "entry_counts.json").read_text()) == {"dog": 1, "cat": 1}
    assert sorted(pq.read_table(out / "subset").column("key").to_pylist()) == ["x", "y"]
