"""Progress lines: figures read from the spill files' names, and printed during a local run."""

from __future__ import annotations

import io
import json
import time

import apache_beam as beam
import pyarrow as pa

from beam_pipeline import curate
from beam_pipeline.progress import ProgressReporter, progress_line, spill_totals
from helpers import beam_test_pipeline, write_jsonl
from transforms.beam.spill import StoreBatches
from transforms.core.columns import ENTRY_IDS, KEY


def _matched_batch(n: int, with_entries: int) -> pa.RecordBatch:
    ids = [[1]] * with_entries + [[]] * (n - with_entries)
    return pa.RecordBatch.from_arrays(
        [pa.array([f"k{i}" for i in range(n)]), pa.array(ids, pa.list_(pa.int32()))], names=[KEY, ENTRY_IDS]
    )


def test_totals_come_from_the_spill_file_names(tmp_path):
    with beam_test_pipeline() as p:
        _ = (
            p
            | beam.Create([_matched_batch(10, 4), _matched_batch(7, 7)])
            | StoreBatches(str(tmp_path / "matched"), "matched")
        )
    totals = spill_totals(str(tmp_path))
    assert totals == {"matched": 17, "matched_with_entries": 11}
    line = progress_line(totals, 2.0)
    assert "read and matched 17 (8/s), 11 with entries" in line
    assert "starting" in progress_line({}, 1.0)
    assert "finishing" in progress_line({}, 9.0, started=True)  # spill files deleted at the end


def test_the_reporter_says_finishing_once_the_spill_files_are_gone(tmp_path):
    stream = io.StringIO()
    spill = tmp_path / "spill"
    spill.mkdir()
    with ProgressReporter(str(tmp_path), 0.05, stream):
        time.sleep(0.12)
        (spill / "matched-0123456789abcdef-5r-2m.arrow").write_bytes(b"")
        time.sleep(0.12)
        (spill / "matched-0123456789abcdef-5r-2m.arrow").unlink()
        time.sleep(0.12)
    lines = stream.getvalue().splitlines()
    kinds = [("starting" in line, "read and matched 5" in line, "finishing" in line) for line in lines]
    first_read = kinds.index((False, True, False))
    assert all(kind == (True, False, False) for kind in kinds[:first_read]), lines
    assert kinds[-1] == (False, False, True) and (True, False, False) not in kinds[first_read:], lines


def test_reporter_prints_at_its_pace_and_stops(tmp_path):
    stream = io.StringIO()
    with ProgressReporter(str(tmp_path), 0.05, stream):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert 3 <= len(lines) <= 7, lines  # every 0.05 s for 0.3 s, give or take the scheduler
    with ProgressReporter(str(tmp_path), 0, stream):  # 0: off
        time.sleep(0.1)
    assert len(stream.getvalue().splitlines()) == len(lines)


def test_a_local_run_shows_progress_on_stderr(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [{"key": f"k{i}", "text": "a dog" if i % 2 else "a cat"} for i in range(3000)])
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog", "cat"]))
    assert (
        curate.run(
            [
                "--input",
                str(pool),
                "--metadata",
                str(metadata),
                "--output_dir",
                str(tmp_path / "out"),
                "--threshold",
                "100",
                "--report",
                "false",
                "--progress",
                "0.05",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert progress, captured.err
    assert "records read" in captured.out and not any(line.startswith("[") for line in captured.out.splitlines())


def test_without_balancing_the_reporter_does_not_promise_an_automaton(tmp_path):
    """--balance none leaves no counted spill files: the line says the run goes on, nothing more."""
    stream = io.StringIO()
    with ProgressReporter(str(tmp_path), 0.05, stream, balancing=False):
        time.sleep(0.16)
    lines = stream.getvalue().splitlines()
    assert lines and all("running: no per-pass figures without MetaCLIP balancing" in line for line in lines)
    assert "automaton" in progress_line({}, 1.0) and "automaton" not in progress_line({}, 1.0, balancing=False)


def test_dedup_read_rows_follow_the_line():
    """--dedup url,text: the exact kinds' stored batches (DedupExact spill files) say how many records they read."""
    from beam_pipeline.progress import progress_line

    line = progress_line({"matched": 5000, "DedupExact": 12000, "DedupFound": 40}, 10.0)
    assert line.endswith("; exact dedup read 12,000")
    assert "dedup" not in progress_line({"matched": 5000}, 10.0)
    assert progress_line({"DedupExact": 7}, 3.0, balancing=False).endswith("; exact dedup read 7")
