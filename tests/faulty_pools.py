"""Faulty pools for the fault tests: good records among every kind of bad record and bad file.

For each input format a pool holds good records among every kind of bad record
(malformed JSON, invalid UTF-8, lone surrogates, missing/null/non-string text,
wrong column types, over-long and blank captions) and bad files (truncated
Parquet, a Parquet file with a corrupt row group, 0-byte files, a truncated
.jsonl.gz, a file that is not gzip, a truncated tar, a file that is not a tar),
with a clean twin holding only the good records, and the rejections a run must
report (docs/fault-policy.md). Used by tests/e2e/test_faults.py (the command
line) and tests/pipeline/test_read_faults.py (ReadCaptions).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from helpers import corrupt_row_group

METADATA = ["dog", "cat", "bird", "car", "tree", "red car"]
THRESHOLD, SEED, MAX_TEXT_BYTES, NUM_SHARDS = 3, 7, 200, 2
LONG = "dog " * 60  # 240 UTF-8 bytes > MAX_TEXT_BYTES


def _caption(i: int) -> str:
    """A caption naming one or two entries; the head entries get more than t."""
    return f"a {METADATA[i % 5]} and a {METADATA[(i * 3) % 6]} number {i}"


@dataclass
class Pool:
    """The files of a faulty pool and of its clean twin, and what the run must reject."""

    files: dict[str, bytes] = field(default_factory=dict)
    clean: dict[str, bytes] = field(default_factory=dict)
    # (file name, row or None for a whole file, reason, records it stands for)
    rejections: list[tuple[str, Optional[int], str, int]] = field(default_factory=list)
    good: int = 0

    def expect(self, name: str, row: Optional[int], reason: str, records: int = 1) -> None:
        self.rejections.append((name, row, reason, records))


# --- the pools ---------------------------------------------------------------------------


def _interleave(goods: list, bads: list) -> list:
    """good, bad, good, bad, ..., then the remaining goods."""
    out = []
    for i, good in enumerate(goods):
        out.append((good, None))
        if i < len(bads):
            out.append(bads[i])
    return out


def _jsonl_line(key: str, text: str) -> bytes:
    return json.dumps({"key": key, "text": text, "url": f"https://img/{key}.jpg"}).encode()


def _gzip_survivors(cut: bytes) -> list[bytes]:
    """The whole lines a truncated gzip file still holds: zlib as an independent oracle."""
    return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut).split(b"\n")[:-1]


def jsonl_pool() -> Pool:
    pool = Pool()
    bads = [
        (b'{"key": "j-bad-json", "text": ', "malformed_json"),
        (b'{"key": "j-bytes", "text": "caf\xe9 au lait"}', "invalid_utf8"),
        (b'{"key": "j-surrogate", "text": "half \\ud800 a pair"}', "invalid_utf8"),
        (b'{"key": "j-no-text", "url": "u"}', "missing_text"),
        (b'{"key": "j-null", "text": null}', "null_text"),
        (b'{"key": "j-int", "text": 42}', "non_string_text"),
        (b'{"key": "j-list", "text": ["a dog"]}', "non_string_text"),
        (_jsonl_line("j-long", LONG), "text_too_long"),
        (b'{"key": "j-blank", "text": " \\t\\n "}', "empty_text"),
        (b'{"key": "j-empty", "text": ""}', "empty_text"),
        (b'["a dog"]', "not_a_json_object"),
    ]
    goods = [_jsonl_line(f"j-{i:03d}", _caption(i)) for i in range(14)]
    lines = _interleave(goods, bads)
    lines.insert(5, (b"   ", "blank"))  # a blank line is not a record: no row of its own in the counts
    for row, (_line, reason) in enumerate(lines):
        if reason not in (None, "blank"):
            pool.expect("00-mixed.jsonl", row, reason)
    pool.files["00-mixed.jsonl"] = b"\n".join(line for line, _ in lines) + b"\n"
    pool.clean["00-mixed.jsonl"] = b"\n".join(goods) + b"\n"
    pool.good += len(goods)

    # Truncated gzip: the whole lines before the cut are read, then the file is rejected.
    cut_lines = [_jsonl_line(f"j-cut-{i:03d}", _caption(i + 100) + " " + "x" * (i % 37)) for i in range(300)]
    packed = gzip.compress(b"\n".join(cut_lines) + b"\n", mtime=0)
    cut = packed[: len(packed) * 55 // 100]
    survivors = _gzip_survivors(cut)
    assert 0 < len(survivors) < 300
    pool.files["cut.jsonl.gz"] = cut
    pool.clean["cut.jsonl"] = b"\n".join(survivors) + b"\n"
    pool.good += len(survivors)
    pool.expect("cut.jsonl.gz", None, "unreadable_file", 0)

    pool.files["empty.jsonl"] = b""
    pool.expect("empty.jsonl", None, "empty_file", 0)
    pool.files["not-gzip.jsonl.gz"] = b"this was never gzip\n" * 10
    pool.expect("not-gzip.jsonl.gz", None, "unreadable_file", 0)
    return pool


def _parquet(columns: dict, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, **options)
    return sink.getvalue()


def _strings(values: list) -> pa.Array:
    """A string column from bytes, unchecked: Parquet files can hold invalid UTF-8."""
    return pa.array(values, pa.binary()).view(pa.string())


def _parquet_rows(rows: list[tuple[str, Optional[bytes]]], **options) -> bytes:
    return _parquet(
        {
            "key": [k for k, _ in rows],
            "text": _strings([t for _, t in rows]),
            "url": [f"https://img/{k}.jpg" for k, _ in rows],
        },
        **options,
    )


def parquet_pool() -> Pool:
    pool = Pool()
    goods = [(f"p-{i:03d}", _caption(i).encode()) for i in range(12)]
    bads = [
        (("p-null", None), "null_text"),
        (("p-blank", b" \t "), "empty_text"),
        (("p-empty", b""), "empty_text"),
        (("p-long", LONG.encode()), "text_too_long"),
        (("p-bytes", b"caf\xe9 noir"), "invalid_utf8"),
    ]
    rows = _interleave(goods, bads)
    for row, (_, reason) in enumerate(rows):
        if reason:
            pool.expect("00-mixed.parquet", row, reason)
    pool.files["00-mixed.parquet"] = _parquet_rows([r for r, _ in rows], row_group_size=4)
    pool.clean["00-mixed.parquet"] = _parquet_rows(goods)
    pool.good += len(goods)

    # Three row groups of five rows; the middle one is corrupt: its 5 rows are rejected
    # with the count from the footer, the other two groups are read.
    grouped = [(f"p-group-{i:02d}", _caption(i + 50).encode()) for i in range(15)]
    pool.files["10-corrupt-group.parquet"] = corrupt_row_group(_parquet_rows(grouped, row_group_size=5), 1)
    pool.clean["10-corrupt-group.parquet"] = _parquet_rows(grouped[:5] + grouped[10:])
    pool.good += 10
    pool.expect("10-corrupt-group.parquet", 5, "unreadable_rows", 5)

    # Wrong column types: an integer text column (each row), a struct url (each batch).
    pool.files["20-int-text.parquet"] = _parquet(
        {"key": ["p-int-0", "p-int-1", "p-int-2"], "text": [1, 2, 3], "url": ["u"] * 3}
    )
    for row in range(3):
        pool.expect("20-int-text.parquet", row, "non_string_text")
    pool.files["30-struct-url.parquet"] = _parquet(
        {"key": ["p-st-0", "p-st-1", "p-st-2"], "text": ["a dog"] * 3, "url": [{"href": "u"}] * 3}
    )
    pool.expect("30-struct-url.parquet", 0, "schema_mismatch", 3)

    whole = _parquet_rows([(f"p-cut-{i}", b"a cat") for i in range(10)])
    pool.files["40-cut.parquet"] = whole[: len(whole) // 2]  # no footer: how many rows it held is unknown
    pool.expect("40-cut.parquet", None, "unreadable_file", 0)
    pool.files["50-empty.parquet"] = b""
    pool.expect("50-empty.parquet", None, "empty_file", 0)
    pool.files["60-no-rows.parquet"] = _parquet_rows([])  # a valid file with no row: nothing to say
    pool.files["70-no-text.parquet"] = _parquet(
        {"key": ["a", "b", "c", "d"], "caption": ["a dog"] * 4, "url": ["u"] * 4}
    )
    pool.expect("70-no-text.parquet", None, "schema_mismatch", 4)
    return pool


def tsv_pool() -> Pool:
    pool = Pool()
    goods = [f"t-{i:03d}\t{_caption(i)}\thttps://img/t-{i}.jpg".encode() for i in range(10)]
    bads = [
        (b"t-columns\tonly two", "bad_column_count"),
        (b"t-bytes\tcaf\xe9 noir\tu", "invalid_utf8"),
        (b"t-blank\t   \tu", "empty_text"),
        (b"t-empty\t\tu", "empty_text"),
        (b"t-long\t" + LONG.encode() + b"\tu", "text_too_long"),
        (b"t-extra\ta dog\tu\tv", "bad_column_count"),
    ]
    rows = _interleave(goods, bads)
    for row, (_, reason) in enumerate(rows):
        if reason:
            pool.expect("00-mixed.tsv", row, reason)
    header = b"key\ttext\turl\n"
    pool.files["00-mixed.tsv"] = header + b"\n".join(line for line, _ in rows) + b"\n"
    pool.clean["00-mixed.tsv"] = header + b"\n".join(goods) + b"\n"
    pool.good += len(goods)
    pool.files["empty.tsv"] = b""
    pool.expect("empty.tsv", None, "empty_file", 0)
    pool.files["header-only.tsv"] = header
    pool.files["no-text.tsv"] = b"key\tcaption\turl\nx\ta dog\tu\ny\ta cat\tu\n"
    pool.expect("no-text.tsv", None, "schema_mismatch", 2)
    return pool


def _tar(samples: list[list[tuple[str, bytes]]]) -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for members in samples:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return sink.getvalue()


def _image(key: str) -> tuple[str, bytes]:
    return f"{key}.jpg", (key.encode() * 400)[:3000]


def webdataset_pool() -> Pool:
    pool = Pool()
    goods = [[_image(f"w-{i:03d}"), (f"w-{i:03d}.txt", _caption(i).encode())] for i in range(10)]
    bads = [
        ([_image("w-no-txt"), ("w-no-txt.json", b'{"url": "u"}')], "no_caption_member"),
        ([("w-bytes.txt", b"caf\xe9 noir")], "invalid_utf8"),
        ([_image("w-blank"), ("w-blank.txt", b"  \n ")], "empty_text"),
        ([("w-long.txt", LONG.encode())], "text_too_long"),
    ]
    samples = _interleave(goods, bads)
    for row, (_, reason) in enumerate(samples):
        if reason:
            pool.expect("00-mixed.tar", row, reason)
    pool.files["00-mixed.tar"] = _tar([s for s, _ in samples])
    pool.clean["00-mixed.tar"] = _tar(goods)
    pool.good += len(goods)

    # Cut inside the image of sample 12: samples 0..11 are read, then the file is rejected.
    cut_samples = [[_image(f"w-cut-{i:02d}"), (f"w-cut-{i:02d}.txt", _caption(i + 70).encode())] for i in range(20)]
    whole = _tar(cut_samples)
    image_12 = next(m for m in tarfile.open(fileobj=io.BytesIO(whole)) if m.name == "w-cut-12.jpg")
    pool.files["10-cut.tar"] = whole[: image_12.offset_data + 1000]
    pool.clean["10-cut.tar"] = _tar(cut_samples[:12])
    pool.good += 12
    pool.expect("10-cut.tar", None, "unreadable_file", 0)
    pool.files["20-not-a-tar.tar"] = b"these bytes are not a tar archive\n" * 40
    pool.expect("20-not-a-tar.tar", None, "unreadable_file", 0)
    pool.files["30-empty.tar"] = b""
    pool.expect("30-empty.tar", None, "empty_file", 0)
    return pool


POOLS = {"jsonl": jsonl_pool, "parquet": parquet_pool, "tsv": tsv_pool, "webdataset": webdataset_pool}


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory
