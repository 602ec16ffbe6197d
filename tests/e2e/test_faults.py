"""Fault injection end to end: bad records and bad files mixed into good ones.

For each input format a pool holds good records among every kind of bad record
(malformed JSON, invalid UTF-8, lone surrogates, missing/null/non-string text,
wrong column types, over-long and blank captions) and bad files (truncated
Parquet, a Parquet file with a corrupt row group, 0-byte files, a truncated
.jsonl.gz, a file that is not gzip, a truncated tar, a file that is not a tar).
The command line must finish, put every bad record in rejected/ with its reason
and source row, account for every record in stats.json, and curate the good
records exactly as a clean run over only them does. Then: determinism with
faults, --strict, a finished run left alone. The pools are in tests/faulty_pools.py;
ReadCaptions' metrics and --strict on them are tests/pipeline/test_read_faults.py.
docs/fault-policy.md is the policy these tests pin down.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from faulty_pools import MAX_TEXT_BYTES, METADATA, NUM_SHARDS, POOLS, SEED, THRESHOLD, Pool, write_files

# --- running them ------------------------------------------------------------------------


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
        faulty_dir = write_files(root / fmt / "faulty", pool.files)
        clean_dir = write_files(root / fmt / "clean", pool.clean)
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


# --- a finished run is not overwritten by mistake -------------------------------------------


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
