"""The command line end to end: outputs, contracts, determinism, and errors."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from helpers import REPO, matching_cases, prepared_config, write_jsonl


def _output_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def cases_run(tmp_path):
    """The reference matching cases curated as a JSONL pool with t = 2."""
    metadata, cases = matching_cases()
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    records = [{"key": f"case-{i:03d}", "text": c["text"], "url": f"https://x/{i}.jpg"} for i, c in enumerate(cases)]
    write_jsonl(tmp_path / "pool.jsonl", records + [{"key": "no-text"}, {"key": "int-text", "text": 7}])
    out = tmp_path / "out"
    argv = [
        "--input",
        str(tmp_path / "pool.jsonl"),
        "--metadata",
        str(tmp_path / "metadata.json"),
        "--threshold",
        "2",
        "--seed",
        "5",
        "--output_dir",
        str(out),
    ]
    assert curate.run(argv) == 0
    return metadata, cases, out, argv


def test_pipeline_reproduces_every_reference_case(cases_run):
    metadata, cases, out, _ = cases_run
    matches = pq.read_table(out / "matches").to_pylist()
    by_key = {row["key"]: row["entry_ids"] for row in matches}
    for i, case in enumerate(cases):
        key = f"case-{i:03d}"
        if case["text"].strip():
            assert by_key[key] == case["metaclip1"], case["text"]
        else:  # empty after stripping: rejected, and it could match nothing anyway
            assert key not in by_key and case["metaclip1"] == []


def test_outputs_follow_the_contract(cases_run):
    metadata, cases, out, _ = cases_run
    counts = json.loads((out / "entry_counts.json").read_text())
    assert list(counts) == metadata  # every entry, in metadata order
    expected = Counter(i for c in cases for i in c["metaclip1"])
    assert [counts[e] for e in metadata] == [expected[i] for i in range(len(metadata))]

    matches = pq.read_table(out / "matches")
    assert matches.schema == pa.schema(
        [("key", pa.string()), ("entry_ids", pa.list_(pa.int32())), ("keep_prob", pa.float64())]
    )
    subset = pq.read_table(out / "subset")
    assert subset.schema.names == ["key", "text", "url"]
    rejected = [
        json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    blank = [(f"case-{i:03d}", "empty_text") for i, c in enumerate(cases) if not c["text"].strip()]
    assert len(blank) == 2
    assert sorted((r["raw"].get("key"), r["reason"]) for r in rejected) == sorted(
        blank + [("int-text", "non_string_text"), ("no-text", "missing_text")]
    )
    assert all(r["source"]["file"].endswith("pool.jsonl") and isinstance(r["source"]["row"], int) for r in rejected)

    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_read"] == len(cases) + 2 == stats["records_accepted"] + stats["records_rejected"]
    assert stats["records_accepted"] == matches.num_rows
    assert stats["records_kept"] == subset.num_rows
    assert stats["records_matched"] == sum(1 for ids in matches.column("entry_ids").to_pylist() if ids)
    assert stats["entries_over_threshold"] == sum(1 for v in counts.values() if v > 2)
    assert stats["threshold"] == 2 and stats["seed"] == 5
    assert stats["rejected_by_reason"] == {"empty_text": 2, "missing_text": 1, "non_string_text": 1}
    assert stats["duplicate_keys"] == 0 and stats["duplicate_key_examples"] == []
    # Every caption with a tail entry (count <= t) is kept; unmatched ones never are.
    kept = set(subset.column("key").to_pylist())
    for row in matches.to_pylist():
        if not row["entry_ids"]:
            assert row["keep_prob"] == 0 and row["key"] not in kept
        elif any(counts[metadata[i]] <= 2 for i in row["entry_ids"]):
            assert row["keep_prob"] == 1 and row["key"] in kept


def test_rerun_is_byte_identical_and_needs_overwrite(cases_run, tmp_path, capsys):
    _, _, out, argv = cases_run
    first = _output_files(out)
    assert curate.run(argv) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert curate.run(argv + ["--overwrite"]) == 0
    assert _output_files(out) == first
    other = tmp_path / "other"
    assert curate.run([a if a != str(out) else str(other) for a in argv] + ["--num_shards", "3"]) == 0
    assert len(list((other / "matches").glob("part-*-of-00003.parquet"))) == 3
    assert pq.read_table(other / "matches").sort_by("key").equals(pq.read_table(out / "matches").sort_by("key"))


def test_other_seed_other_subset(cases_run, tmp_path):
    _, _, out, argv = cases_run
    other = tmp_path / "seed6"
    argv = [a if a != str(out) else str(other) for a in argv]
    argv[argv.index("--seed") + 1] = "6"
    assert curate.run(argv) == 0
    assert pq.read_table(other / "matches").equals(pq.read_table(out / "matches"))  # same probabilities
    keys = lambda d: set(pq.read_table(d / "subset").column("key").to_pylist())  # noqa: E731
    assert keys(other) != keys(out)


# Every bad option value, input or flag: one line naming it, exit status 2, no work done.
BAD_OPTIONS = [
    ({"--threshold": "0"}, "--threshold must be >= 1, got 0"),
    ({"--threshold": "lots"}, "--threshold must be an integer, got 'lots'"),
    ({"--seed": "-1"}, "--seed must be >= 0"),
    ({"--seed": str(2**64)}, f"--seed must be below 2**64, got {2**64}"),
    ({"--batch_size": "x"}, "--batch_size must be an integer, got 'x'"),
    ({"--batch_size": "0"}, "--batch_size must be >= 1, got 0"),
    ({"--max_text_bytes": "0"}, "--max_text_bytes must be >= 1, got 0"),
    ({"--num_shards": "-1"}, "--num_shards must be >= 0, got -1"),
    ({"--target_size": "0"}, "--target_size must be >= 1, got 0"),
    ({"--samples_per_shard": "0"}, "--samples_per_shard must be >= 1, got 0"),
    ({"--progress": "-1"}, "--progress must be a finite number of seconds >= 0, got '-1'"),
    ({"--progress": "nan"}, "--progress must be a finite number of seconds >= 0, got 'nan'"),
    ({"--strict": "maybe"}, "--strict must be true or false, got 'maybe'"),
    ({"--overwrite": "maybe"}, "--overwrite must be true or false, got 'maybe'"),
    ({"--report": "perhaps"}, "--report must be true or false, got 'perhaps'"),
    ({"--handoff": "bogus"}, "--handoff takes auto, none, or a comma-separated list of"),
    ({"--handoff": "webdataset"}, "--handoff webdataset lists kept keys per input tar shard; the input is jsonl"),
    ({"--column_names": "a,,b"}, "--column_names must be distinct non-empty names separated by commas, got 'a,,b'"),
    ({"--mode": "bogus"}, "argument --mode: invalid choice: 'bogus'"),
    ({"--input_format": "xml"}, "invalid choice: 'xml'"),
    ({"--input_preset": "bogus"}, "argument --input_preset: invalid choice: 'bogus'"),
    ({"--lang_field": "lang"}, "--lang_field is for --mode metaclip2"),
    ({"--input": "/nonexistent/*.jsonl"}, "matches no file"),
    ({"--metadata": "/nonexistent/metadata.json"}, "cannot read metadata file /nonexistent/metadata.json"),
    ({"--text_field": "caption"}, "--text_field 'caption' is not a column of the input"),
    ({"--key_field": "uid"}, "--key_field 'uid' is not a column of the input"),
    ({"--url_field": "link"}, "--url_field 'link' is not a column of the input"),
    ({"--thresold": "5"}, "unrecognised option --thresold (did you mean --threshold?)"),
]


@pytest.mark.parametrize("change, message", BAD_OPTIONS, ids=[" ".join(next(iter(c.items()))) for c, _ in BAD_OPTIONS])
def test_bad_options_fail_before_any_work_with_one_line(tmp_path, capsys, change, message):
    write_jsonl(tmp_path / "pool.jsonl", [{"text": "dog"}])
    (tmp_path / "md.json").write_text('["dog"]')
    args = {
        "--input": str(tmp_path / "pool.jsonl"),
        "--metadata": str(tmp_path / "md.json"),
        "--output_dir": str(tmp_path / "out"),
    }
    args.update(change)
    argv = [x for pair in args.items() for x in pair]
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ('["dog", "cat", "dog"]', "1 duplicate entries (e.g. 'dog')"),
        ('["dog", 3]', "1 non-string entries (e.g. index 1: 3)"),
        ('{"dog": 1}', "must hold a JSON list of strings"),
        ('["dog"', "is not valid JSON"),
    ],
)
def test_metadata_that_would_corrupt_ids_is_refused(tmp_path, capsys, content, message):
    write_jsonl(tmp_path / "pool.jsonl", [{"text": "dog"}])
    (tmp_path / "md.json").write_text(content)
    argv = [
        "--input",
        str(tmp_path / "pool.jsonl"),
        "--metadata",
        str(tmp_path / "md.json"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_command_line_on_parquet_in_a_subprocess(tmp_path):
    """`python -m beam_pipeline.curate` on img2dataset-style Parquet shards, as a user runs it."""
    for shard in range(3):
        pq.write_table(
            pa.table(
                {
                    "URL": [f"https://img/{shard}-{i}.jpg" for i in range(100)],
                    "TEXT": [f"a photo of a {'dog' if i % 2 else 'cat'} number {i}" for i in range(100)],
                    "width": list(range(100)),
                }
            ),
            tmp_path / f"{shard:05d}.parquet",
        )
    (tmp_path / "md.json").write_text('["dog", "cat", "photo", "a photo"]')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline.curate",
            "--input",
            str(tmp_path / "*.parquet"),
            "--text_field",
            "TEXT",
            "--url_field",
            "URL",
            "--metadata",
            str(tmp_path / "md.json"),
            "--threshold",
            "50",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "records read" in result.stdout and "Traceback" not in result.stderr
    counts = json.loads((tmp_path / "out" / "entry_counts.json").read_text())
    assert counts == {"dog": 150, "cat": 150, "photo": 300, "a photo": 300}
    subset = pq.read_table(tmp_path / "out" / "subset")
    assert subset.schema == pa.schema(
        [("key", pa.string()), ("text", pa.string()), ("url", pa.string()), ("width", pa.int64())]
    )
    assert subset.column("key").to_pylist()[0].endswith(".parquet:" + subset.column("key").to_pylist()[0].split(":")[1])
    # Every caption matches 'photo' (count 300 > t): ~ 1-(1-50/300)^2(1-50/150) kept per caption.
    assert 0.3 * 300 < subset.num_rows < 0.7 * 300


def test_duplicate_keys_are_reported_and_each_record_curated(tmp_path):
    records = [
        {"key": "dup", "text": "a dog"},
        {"key": "dup", "text": "a cat"},
        {"key": "solo", "text": "a dog"},
        {"key": "dup", "text": "a dog"},
        {"key": "twice", "text": "x"},
        {"key": "twice", "text": "y"},
    ]
    write_jsonl(tmp_path / "pool.jsonl", records)
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(tmp_path / "pool.jsonl"),
                "--metadata",
                str(tmp_path / "md.json"),
                "--threshold",
                "1",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["duplicate_keys"] == 3 and stats["duplicate_key_examples"] == ["dup", "twice"]
    matches = pq.read_table(out / "matches").to_pylist()
    # Each record is matched and counted as its own caption, in source order within a key.
    assert [(m["key"], m["entry_ids"]) for m in matches] == [
        ("dup", [0]),
        ("dup", [1]),
        ("dup", [0]),
        ("solo", [0]),
        ("twice", []),
        ("twice", []),
    ]
    assert json.loads((out / "entry_counts.json").read_text()) == {"dog": 3, "cat": 1}


def test_input_order_and_glob_spelling_do_not_change_a_byte(tmp_path):
    for name, words in [("a.jsonl", ["dog", "cat"]), ("b.jsonl", ["dog dog", "hot dog"]), ("c.jsonl", ["cat", "x"])]:
        write_jsonl(tmp_path / name, [{"text": f"a {w} {i}"} for i, w in enumerate(words * 20)])
    (tmp_path / "md.json").write_text('["dog", "cat", "hot dog", "a"]')
    common = ["--metadata", str(tmp_path / "md.json"), "--threshold", "10", "--num_shards", "2"]
    one = [
        "--input",
        str(tmp_path / "c.jsonl"),
        "--input",
        str(tmp_path / "a.jsonl"),
        "--input",
        str(tmp_path / "b.jsonl"),
    ]
    other = ["--input", str(tmp_path / "[ab].jsonl"), "--input", str(tmp_path / "*.jsonl")]
    assert curate.run(one + common + ["--output_dir", str(tmp_path / "one")]) == 0
    assert curate.run(other + common + ["--output_dir", str(tmp_path / "other")]) == 0
    assert _output_files(tmp_path / "one") == _output_files(tmp_path / "other")


def test_gzipped_jsonl_and_several_globs_through_the_command_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with gzip.open(tmp_path / "a" / "0.jsonl.gz", "wt") as f:
        f.write(json.dumps({"key": "x", "text": "a dog"}) + "\n")
    (tmp_path / "b" / "1.jsonl").write_text(json.dumps({"key": "y", "text": "a cat"}) + "\n")
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(tmp_path / "a" / "*.jsonl.gz"),
                "--input",
                str(tmp_path / "b" / "*"),
                "--metadata",
                str(tmp_path / "md.json"),
                "--threshold",
                "5",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "entry_counts.json").read_text()) == {"dog": 1, "cat": 1}
    assert sorted(pq.read_table(out / "subset").column("key").to_pylist()) == ["x", "y"]


def test_checking_a_run_deletes_nothing_and_the_run_clears_an_unfinished_ones_leftovers(tmp_path):
    """config.prepare only reads; outputs.clear_outputs, called by run, is what deletes."""
    write_jsonl(tmp_path / "pool.jsonl", [{"key": "a", "text": "a dog"}])
    (tmp_path / "md.json").write_text('["dog"]')
    out = tmp_path / "out"
    leftovers = [out / "matches" / "part-00003-of-00009.parquet", out / ".stats.json.tmp-0f0f", out / "figures.json"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"from a killed run")
    argv = ["--input", str(tmp_path / "pool.jsonl"), "--metadata", str(tmp_path / "md.json"), "--output_dir", str(out)]
    config, _ = prepared_config(argv)
    assert config.num_shards == 1 and all(path.read_bytes() == b"from a killed run" for path in leftovers)
    assert curate.run(argv + ["--report", "false"]) == 0
    assert not leftovers[0].exists() and not leftovers[1].exists()
    assert (out / "stats.json").exists() and leftovers[2].read_bytes() != b"from a killed run"


def _keyless_parquet(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path)


def test_default_keys_name_the_file_below_the_inputs_common_folder(tmp_path, capsys):
    """Two download folders that both start at part-00000: their rows must not share keys (or keep draws)."""
    texts = [f"a dog number {i}" for i in range(20)]
    for folder in ("a", "b"):
        _keyless_parquet(tmp_path / "pool" / folder / "part-00000.parquet", texts)
    _keyless_parquet(tmp_path / "single" / "part-00000.parquet", texts)
    (tmp_path / "md.json").write_text('["dog"]')
    common = ["--metadata", str(tmp_path / "md.json"), "--threshold", "1000", "--report", "false"]
    two = tmp_path / "two"
    assert curate.run(["--input", str(tmp_path / "pool" / "*" / "*.parquet"), "--output_dir", str(two)] + common) == 0
    keys = sorted(pq.read_table(two / "matches").column("key").to_pylist())
    expected = sorted(f"{folder}/part-00000.parquet:{i}" for folder in ("a", "b") for i in range(20))
    assert keys == expected and json.loads((two / "stats.json").read_text())["duplicate_keys"] == 0
    # Inputs in one folder keep the keys they always had: the file name.
    one = tmp_path / "one"
    assert curate.run(["--input", str(tmp_path / "single" / "*.parquet"), "--output_dir", str(one)] + common) == 0
    keys = sorted(pq.read_table(one / "matches").column("key").to_pylist())
    assert keys == sorted(f"part-00000.parquet:{i}" for i in range(20))
    assert "warning" not in capsys.readouterr().err


def test_duplicate_keys_are_a_warning_in_the_summary(tmp_path, capsys):
    write_jsonl(tmp_path / "pool.jsonl", [{"key": "twice", "text": "a dog"}, {"key": "twice", "text": "a cat"}])
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    argv = ["--input", str(tmp_path / "pool.jsonl"), "--metadata", str(tmp_path / "md.json")]
    assert curate.run(argv + ["--output_dir", str(tmp_path / "out"), "--report", "false"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: 1 records have the key of an earlier record (e.g. 'twice')")
    assert "WARNING" in captured.out and "--key_field" in captured.out


@pytest.mark.parametrize(
    "patterns, expected_files",
    [
        (["a/*.parquet", "b/*.parquet"], ["a/part-00000.parquet", "b/part-00000.parquet"]),
        (["{a,b}/part-00000.parquet"], ["a/part-00000.parquet", "b/part-00000.parquet"]),
        (["*/part-00000.parquet"], ["a/part-00000.parquet", "b/part-00000.parquet"]),  # no folder before the glob
        (["*.parquet"], ["part-00000.parquet"]),  # from inside the pool's folder
    ],
)
def test_relative_patterns_match_and_key_files_below_their_common_folder(
    tmp_path, monkeypatch, patterns, expected_files
):
    """Relative --input patterns, as a user types them in the pool's folder (issue 34, items 2 and 3)."""
    for folder in ("a", "b"):
        _keyless_parquet(tmp_path / "pool" / folder / "part-00000.parquet", ["a dog", "a dog too"])
    (tmp_path / "md.json").write_text('["dog"]')
    monkeypatch.chdir(tmp_path / "pool" / ("a" if patterns == ["*.parquet"] else ""))
    argv = [arg for pattern in patterns for arg in ("--input", pattern)]
    common = ["--metadata", str(tmp_path / "md.json"), "--report", "false", "--output_dir", str(tmp_path / "out")]
    assert curate.run(argv + common) == 0
    keys = sorted(pq.read_table(tmp_path / "out" / "matches").column("key").to_pylist())
    assert keys == sorted(f"{name}:{row}" for name in expected_files for row in (0, 1))
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["duplicate_keys"] == 0


@pytest.mark.parametrize("warm", ["1", "0"])
def test_multi_process_workers_log_no_beam_warning(tmp_path, warm):
    """Each worker, warm or cold, used to log "Discarding unparseable args" and "No
    semi_persistent_directory found": warnings the pipeline caused, indistinguishable from real ones."""
    write_jsonl(tmp_path / "pool.jsonl", [{"key": str(i), "text": f"a dog {i}"} for i in range(40)])
    (tmp_path / "md.json").write_text('["dog"]')
    argv = ["--input", "pool.jsonl", "--metadata", "md.json", "--output_dir", "out", "--report", "false"]
    argv += ["--progress", "0", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    env = {**os.environ, "BALANCEBEAM_WARM_WORKERS": warm, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "beam_pipeline.curate", *argv]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
