"""Fault injection end to end: bad records and bad files mixed into good ones.

For each input format a pool holds good records among every kind of bad record
(malformed JSON, invalid UTF-8, lone surrogates, missing/null/non-string text,
wrong column types, over-long and blank captions) and bad files (truncated
Parquet, a Parquet file with a corrupt row group, 0-byte files, a truncated
.jsonl.gz, a file that is not gzip, a truncated tar, a file that is not a tar).
The command line must finish, put every bad record in rejected/ with its reason
and source row, account for every record in stats.json, and curate the good
records exactly as a clean run over only them does. Then: --strict, Beam
metrics, determinism with faults, bad option values, and a fuzz test of the
matcher. docs/fault-policy.md is the policy these tests pin down.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline import curate
from helpers import beam_test_pipeline, corrupt_row_group
from transforms.beam.read import ReadCaptions
from transforms.core.matching import EntryMatcher, match_entries_brute_force
from transforms.formats.layout import InputLayout
from transforms.formats.rejections import strict_failure

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


# --- running them ------------------------------------------------------------------------


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def _args(inputs: list[str], metadata: Path, out: Path) -> list[str]:
    args = []
    for pattern in inputs:
        args += ["--input", pattern]
    return args + [
        "--metadata",
        str(metadata),
        "--threshold",
        str(THRESHOLD),
        "--seed",
        str(SEED),
        "--max_text_bytes",
        str(MAX_TEXT_BYTES),
        "--num_shards",
        str(NUM_SHARDS),
        "--output_dir",
        str(out),
    ]


@dataclass
class Runs:
    pool: Pool
    faulty_dir: Path
    faulty: Path
    clean: Path
    metadata: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Runs]:
    """Each format's faulty pool and its clean twin, curated through the command line."""
    root = tmp_path_factory.mktemp("faults")
    metadata = root / "metadata.json"
    metadata.write_text(json.dumps(METADATA))
    results = {}
    for fmt, make in POOLS.items():
        pool = make()
        faulty_dir = _write(root / fmt / "faulty", pool.files)
        clean_dir = _write(root / fmt / "clean", pool.clean)
        faulty, clean = root / fmt / "faulty-out", root / fmt / "clean-out"
        assert curate.run(_args([str(faulty_dir / "*")], metadata, faulty)) == 0, fmt
        assert curate.run(_args([str(clean_dir / "*")], metadata, clean)) == 0, fmt
        results[fmt] = Runs(pool, faulty_dir, faulty, clean, metadata)
    return results


def _rejected(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "rejected").glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
    ]


def _table(directory: Path) -> list[dict]:
    """The rows of a Parquet output, by key; a webdataset shard named by its file name only."""
    rows = pq.read_table(directory).sort_by("key").to_pylist()
    for row in rows:
        if "shard" in row:
            row["shard"] = Path(row["shard"]).name
    return rows


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


FORMATS = list(POOLS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_bad_record_and_file_is_rejected_with_its_reason_and_source(runs, fmt):
    run = runs[fmt]
    found = sorted(
        (Path(r["source"]["file"]).name, r["source"]["row"], r["reason"], r["records"]) for r in _rejected(run.faulty)
    )
    expected = sorted(run.pool.rejections, key=lambda r: (r[0], -1 if r[1] is None else r[1], r[2]))
    assert found == sorted(expected), fmt
    assert not [p for p in run.faulty.rglob(".*") if p.is_file()], "temporary files left behind"


@pytest.mark.parametrize("fmt", FORMATS)
def test_stats_account_for_every_record(runs, fmt):
    run = runs[fmt]
    stats = json.loads((run.faulty / "stats.json").read_text())
    rejected_records = sum(records for *_, records in run.pool.rejections)
    assert stats["records_accepted"] == run.pool.good
    assert stats["records_rejected"] == rejected_records
    assert (
        stats["records_read"]
        == run.pool.good + rejected_records
        == stats["records_accepted"] + stats["records_rejected"]
    )
    by_reason = Counter()
    for _, _, reason, records in run.pool.rejections:
        by_reason[reason] += records
    assert {k: v for k, v in stats["rejected_by_reason"].items() if v} == {k: v for k, v in by_reason.items() if v}
    assert stats["files_rejected"] == sum(1 for _, row, _, _ in run.pool.rejections if row is None)
    assert stats["duplicate_keys"] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_records_are_curated_exactly_as_in_a_clean_run(runs, fmt):
    run = runs[fmt]
    for output in ("matches", "subset"):
        assert _table(run.faulty / output) == _table(run.clean / output), (
            f"{fmt}: {output} differs from the clean run's"
        )
    assert (run.faulty / "entry_counts.json").read_bytes() == (run.clean / "entry_counts.json").read_bytes()
    faulty, clean = (json.loads((d / "stats.json").read_text()) for d in (run.faulty, run.clean))
    for figure in (
        "records_accepted",
        "records_matched",
        "records_kept",
        "expected_kept",
        "entry_matches",
        "entries_over_threshold",
    ):
        assert faulty[figure] == clean[figure], figure
    assert clean["records_rejected"] == 0 and faulty["entries_over_threshold"] > 0  # the head is really sampled


def test_faults_change_nothing_across_input_order_and_worker_count(runs, tmp_path):
    """The faulty JSONL pool again: files listed one by one in reverse order, on 2 worker processes."""
    run = runs["jsonl"]
    reversed_inputs = [str(p) for p in sorted(run.faulty_dir.iterdir(), reverse=True)]
    out = tmp_path / "again"
    argv = _args(reversed_inputs, run.metadata, out) + [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]
    assert curate.run(argv) == 0
    assert _tree(out) == _tree(run.faulty)


# --- through ReadCaptions: Beam metrics, --strict -----------------------------------------


def _jsonl_layout() -> InputLayout:
    return InputLayout(format="jsonl", max_text_bytes=MAX_TEXT_BYTES, passthrough=(("url", pa.string()),))


def test_rejections_are_counted_in_beam_metrics_per_reason(runs):
    run = runs["jsonl"]
    paths = [str(p) for p in sorted(run.faulty_dir.iterdir())]
    pipeline = beam_test_pipeline()
    _ = pipeline | ReadCaptions(paths, _jsonl_layout())
    result = pipeline.run()
    result.wait_until_finish()

    def counters(namespace: str) -> dict:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
        return {c.key.metric.name: c.committed for c in found if c.committed}

    records, files = Counter(), Counter()
    for _, row, reason, count in run.pool.rejections:
        records[reason] += count
        files[reason] += row is None
    assert counters("rejected") == {k: v for k, v in records.items() if v}
    assert counters("rejected_files") == {k: v for k, v in files.items() if v}
    totals = counters("curation")
    assert totals["records_read"] == run.pool.good + sum(records.values())
    assert totals["records_rejected"] == sum(records.values()) and totals["files_rejected"] == sum(files.values())


def test_strict_fails_at_the_first_rejection_with_one_line(runs):
    run = runs["jsonl"]
    paths = [str(p) for p in sorted(run.faulty_dir.iterdir())]
    pipeline = beam_test_pipeline()
    _ = pipeline | ReadCaptions(paths, _jsonl_layout(), strict=True)
    with pytest.raises(Exception) as failure:
        pipeline.run().wait_until_finish()
    message = strict_failure(failure.value)
    allowed = {
        f"--strict: {run.faulty_dir / name}" + ("" if row is None else f" row {row}") + f": {reason}"
        for name, row, reason, _ in run.pool.rejections
    }
    assert message in allowed and "\n" not in message


def test_strict_passes_a_clean_pool(runs):
    run = runs["jsonl"]
    pipeline = beam_test_pipeline()
    read = pipeline | ReadCaptions(
        [str(p) for p in sorted((run.faulty_dir.parent / "clean").iterdir())], _jsonl_layout(), strict=True
    )
    _ = read.batches | beam.Map(lambda batch: batch.num_rows)
    pipeline.run().wait_until_finish()


# --- bad option values: one line, exit status 2, no work ---------------------------------

# What tests/test_curate_cli.py does not check already (threshold, seed, unknown format,
# missing metadata, glob without match, unknown flags are there).
BAD_OPTIONS = [
    (["--batch_size", "x"], "--batch_size"),
    (["--batch_size", "0"], "--batch_size"),
    (["--max_text_bytes", "0"], "--max_text_bytes"),
    (["--num_shards", "-1"], "--num_shards"),
    (["--seed", str(2**64)], "--seed"),
    (["--mode", "bogus"], "--mode"),
    (["--progress", "-1"], "--progress"),
    (["--progress", "nan"], "--progress"),
    (["--target_size", "0"], "--target_size"),
    (["--samples_per_shard", "0"], "--samples_per_shard"),
    (["--handoff", "bogus"], "--handoff"),
    (["--strict", "maybe"], "--strict"),
    (["--overwrite", "maybe"], "--overwrite"),
    (["--report", "perhaps"], "--report"),
    (["--column_names", "a,,b"], "--column_names"),
    (["--input_preset", "bogus"], "--input_preset"),
    (["--lang_field", "lang"], "--lang_field"),
    (["--key_field", "uid"], "--key_field"),
    (["--url_field", "link"], "--url_field"),
    (["--handoff", "webdataset"], "--handoff"),
]


@pytest.mark.parametrize("extra, option", BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS])
def test_bad_option_value_fails_before_any_work_with_one_line(tmp_path, capsys, extra, option):
    (tmp_path / "pool.jsonl").write_text('{"text": "a dog"}\n')
    (tmp_path / "md.json").write_text('["dog"]')
    out = tmp_path / "out"
    argv = [
        "--input",
        str(tmp_path / "pool.jsonl"),
        "--metadata",
        str(tmp_path / "md.json"),
        "--output_dir",
        str(out),
    ] + extra
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and option in err and "Traceback" not in err, err
    assert not out.exists()


def test_finished_run_without_overwrite_fails_with_one_line_and_touches_nothing(tmp_path, capsys):
    (tmp_path / "pool.jsonl").write_text('{"text": "a dog"}\n')
    (tmp_path / "md.json").write_text('["dog"]')
    out = tmp_path / "out"
    (out / "matches").mkdir(parents=True)
    (out / "stats.json").write_text("{}")
    (out / "matches" / "part-00000-of-00001.parquet").write_bytes(b"earlier run")
    before = _tree(out)
    assert (
        curate.run(
            ["--input", str(tmp_path / "pool.jsonl"), "--metadata", str(tmp_path / "md.json"), "--output_dir", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: --output_dir") and err.count("\n") == 1 and "--overwrite" in err, err
    assert _tree(out) == before


# --- fuzz: the matcher on any text ---------------------------------------------------------

# Pieces that stress the spacing and the automaton: separators, white space str.strip()
# removes (NEL, U+2028, U+3000, U+001C), NUL, lone surrogates (JSON can carry "\ud800"),
# astral characters, and entry-like words.
_PIECES = [
    "dog",
    "hot dog",
    "a",
    " ",
    "  ",
    ",",
    ".",
    "!",
    "`",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\ud800",
    "\udfff",
    "\U0001f642",
    "é",
    "東京",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x85",
    "\x1c",
    "C++",
    "'",
]
_ANY_CHAR = st.characters(codec=None, exclude_categories=())
_PIECE_TEXT = st.lists(st.sampled_from(_PIECES) | st.text(_ANY_CHAR, max_size=3), max_size=12).map("".join)
_ENTRIES = st.lists(_PIECE_TEXT.filter(lambda e: len(e) <= 12), max_size=20, unique=True)
_HUGE = st.builds(lambda piece, n: piece * n, st.sampled_from(_PIECES + ["dog ", "a, "]), st.integers(500, 20_000))
_TEXTS = st.lists(_PIECE_TEXT | st.text(_ANY_CHAR, max_size=40) | _HUGE, min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=_ENTRIES, texts=_TEXTS)
def test_matcher_on_any_text_equals_the_brute_force_oracle(entries, texts):
    matcher = EntryMatcher(entries)
    offsets, flat = matcher.match_batch(texts)
    assert len(offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        expected = match_entries_brute_force(text, entries)
        assert matcher.match(text) == expected
        assert flat[offsets[i] : offsets[i + 1]].tolist() == expected


def test_strict_run_stops_at_the_first_rejection_with_one_line(tmp_path, capsys):
    """--strict through the command line: exit 1, one line naming file, row and reason, no stats.json."""
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jsonl").write_text('{"key": "k0", "text": "a dog"}\n{"key": "k1", "text": 7}\n', encoding="utf-8")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog"]), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--input", str(pool / "*.jsonl"), "--metadata", str(metadata), "--output_dir", str(out)]
    status = curate.run(argv + ["--strict", "--progress", "0", "--report", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == [f"error: --strict: {pool / 'a.jsonl'} row 1: non_string_text"]
    assert not (out / "stats.json").exists()
    # Without --strict the same pool finishes and rejects the record.
    assert curate.run(argv + ["--progress", "0", "--report", "false"]) == 0
    assert json.loads((out / "stats.json").read_text())["rejected_by_reason"] == {"non_string_text": 1}
