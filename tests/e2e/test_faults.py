"""Fault injection end to end: bad records and bad files mixed into good ones.

For each input format a pool holds good records among every kind of bad record
(malformed JSON, invalid UTF-8, lone surrogates, missing/null/non-string text,
wrong column types, over-long and blank captions) and bad files (truncated
Parquet, a Parquet file with a corrupt row group, 0-byte files, a truncated
.jsonl.gz, a file that is not gzip, a truncated tar, a file that is not a tar).
The command line must finish, put every bad record in rejected/ with its reason
and source row, account for every record in stats.json, and curate the good
records exactly as a clean run over only them does. Then: determinism with
faults, --strict, a finished run left alone; then the stages' edge cases (an empty pool,
every record filtered, --select_fraction 0 and 1, bad class embeddings, bad vectors under
--filter image). The pools are in tests/faulty_pools.py;
ReadCaptions' metrics and --strict on them are tests/pipeline/test_read_faults.py.
docs/fault-policy.md is the policy these tests pin down.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from covariance_pool import write_covariance_pool
from datacomp_pool import write_pool
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
    # Counted at the reader, per file: the records of a truncated file's unreadable rest are not known.
    accounting = stats["accounting"]
    assert accounting["read"] == run.pool.good + rejected_records
    assert accounting["rejected"] == rejected_records
    assert accounting["kept"] == stats["records_kept"]
    assert accounting["kept"] + accounting["balanced_out"] == run.pool.good


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


# --- the stages' edge cases ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_pool(tmp_path_factory):
    """600 DataComp-style records with npz embeddings, an empty shard pool beside, and list files."""
    root = tmp_path_factory.mktemp("stage-faults")
    pool = write_covariance_pool(root / "pool", rows=600, dim=8)
    empty = root / "empty"
    empty.mkdir()
    strings = pa.array([], pa.string())
    pq.write_table(pa.table({"uid": strings, "url": strings, "text": strings}), empty / "00000000.parquet")
    np.savez(empty / "00000000.npz", l14_img=np.zeros((0, 8), np.float32), l14_txt=np.zeros((0, 8), np.float32))
    (root / "half.txt").write_text("\n".join(pool.keys[::2]) + "\n")
    (root / "none.txt").write_text("f" * 32 + "\n")
    np.save(root / "wide.npy", np.ones((5, 7), np.float32))
    np.save(root / "ints.npy", np.ones((5, 8), np.int64))
    return root


SELECT_HALF = ["--select", "covariance", "--select_fraction", "0.5"]
STAGE_CASES = {
    "empty pool, filter and select": ("empty", ["--allow_uids", "half.txt", *SELECT_HALF], (0, 0, 0, 0)),
    "every record filtered, select": ("pool", ["--allow_uids", "none.txt", *SELECT_HALF], (600, 600, 0, 0)),
    "--select_fraction 0": ("pool", ["--select", "covariance", "--select_fraction", "0"], (600, 0, 600, 0)),
    "--select_fraction 1": ("pool", ["--select", "covariance", "--select_fraction", "1"], (600, 0, 0, 600)),
}


def _stage_run(root: Path, pool: str, flags: list[str]) -> list[str]:
    files = {"half.txt", "none.txt", "wide.npy", "ints.npy"}
    flags = [str(root / flag) if flag in files else flag for flag in flags]
    argv = ["--input", str(root / pool / "*.parquet"), "--input_preset", "datacomp", "--balance", "none"]
    return [*argv, "--output_dir", str(root / "out"), "--overwrite", *flags]


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_stage_edge_cases_finish_with_their_figures(embedded_pool, case):
    """Each finishes (the summary included) with its outputs, and zeros where nothing was left."""
    pool, flags, (read, filtered, not_selected, kept) = STAGE_CASES[case]
    assert curate.run(_stage_run(embedded_pool, pool, flags)) == 0
    out = embedded_pool / "out"
    stats = json.loads((out / "stats.json").read_text())
    accounting = {"read": read, "rejected": 0, "filtered": filtered, "not_selected": not_selected, "kept": kept}
    assert stats["accounting"] == {k: v for k, v in accounting.items() if k != "filtered" or "--allow_uids" in flags}
    assert stats["records_kept"] == kept == pq.read_table(out / "subset").num_rows
    assert stats["selection"]["records_selected"] == kept


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--class_embeddings", "wide.npy"], "class embeddings are 7-d but the image embeddings are 8-d"),
        (["--class_embeddings", "ints.npy"], "must hold a K x d float array; it holds int64 (5, 8)"),
    ],
)
def test_class_embeddings_of_another_width_or_dtype_fail_before_any_work(embedded_pool, flags, message, capsys):
    (embedded_pool / "refused").mkdir(exist_ok=True)
    argv = _stage_run(embedded_pool, "pool", [*SELECT_HALF, *flags])
    argv[argv.index("--output_dir") + 1] = str(embedded_pool / "refused")
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --class_embeddings") and message in err and err.count("\n") == 1, err
    assert not list((embedded_pool / "refused").iterdir())


def test_bad_image_vectors_under_filter_image_are_rejected_not_filtered(tmp_path):
    """A NaN, an infinite and a zero image vector: rejected with the embedding named, not in filtered/."""
    pool = write_pool(tmp_path / "pool", shards=2, rows_per_shard=200)
    members = dict(np.load(pool.npz_paths[0]))
    members["l14_img"][[5, 6, 7]] = np.float16(0)
    members["l14_img"][5, 0], members["l14_img"][6, 3] = np.nan, np.inf
    np.savez(pool.npz_paths[0], **members)
    out = tmp_path / "out"
    flags = ["--centroids", str(pool.centroids_path), "--target_clusters", str(pool.target_clusters_path)]
    argv = ["--input", str(pool.directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out)]
    argv += ["--balance", "none"]
    assert curate.run([*argv, "--filter", "image", *flags]) == 0
    bad = {pool.uids[0][5]: "bad_embedding_vector", pool.uids[0][6]: "bad_embedding_vector"}
    bad[pool.uids[0][7]] = "zero_embedding_vector"
    found = {r["raw"]["key"]: (r["reason"], r["raw"]["embedding"]) for r in _rejected(out)}
    assert found == {key: (reason, "l14_img") for key, reason in bad.items()}
    assert not set(bad) & set(pq.read_table(out / "filtered").column("key").to_pylist())
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounting"]["rejected"] == stats["records_rejected"] == 3
    assert sum(v for k, v in stats["accounting"].items() if k != "read") == stats["accounting"]["read"] == 400
