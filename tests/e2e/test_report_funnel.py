"""The report's top follows the chain: its funnel against stats.json on real runs, and
the run-figures table formatted by each stage (no Python reprs, no raw stats keys)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from beam_pipeline.demo import make_demo_data
from covariance_pool import write_covariance_pool
from helpers import number, parse


def _curate(*argv) -> tuple[dict, dict]:
    out = argv[argv.index("--output_dir") + 1]
    assert curate.run([*argv, "--overwrite"]) == 0
    with open(f"{out}/stats.json") as handle:
        stats = json.load(handle)
    with open(f"{out}/report.html", encoding="utf-8") as handle:
        return stats, parse(handle.read()).tables


@pytest.fixture(scope="module")
def scored_pool(tmp_path_factory):
    """A DataComp-style pool (uid, url, text; npz embeddings) with a CLIP score and an aesthetic score."""
    pool = write_covariance_pool(tmp_path_factory.mktemp("pool"), rows=1200)
    rng = np.random.default_rng(3)
    for path in pool.parquet_paths:
        table = pq.read_table(path)
        table = table.append_column("clip_l14_similarity_score", pa.array(rng.uniform(0.1, 0.4, table.num_rows)))
        pq.write_table(table.append_column("aesthetic", pa.array(rng.uniform(0, 10, table.num_rows))), path)
    return pool


def _check_funnel(stats: dict, tables: dict) -> dict:
    """The funnel's rows against stats.json's accounting; returns {label: records taken}."""
    rows = tables["funnel"][1:]
    accounting = stats["accounting"]
    assert rows[0][:3] == ["read", "", f"{accounting['read']:,}"]
    assert rows[-1][0] == "kept" and number(rows[-1][2]) == accounting["kept"] == stats["records_kept"]
    taken = {row[0]: int(number(row[1])) if row[1] else 0 for row in rows}
    left = accounting["read"]
    for row in rows[1:-1]:  # each step leaves what the one before left, less what it took
        left -= taken[row[0]]
        assert number(row[2]) == left
    assert left == accounting["kept"]
    assert taken["rejected (bad input)"] == accounting["rejected"]
    return taken


def test_metaclip_funnel_equals_the_accounting(tmp_path):
    metadata, pool = make_demo_data(tmp_path / "data", 3000, shards=2)
    out = tmp_path / "out"
    stats, tables = _curate(
        "--input", str(pool / "*.jsonl"), "--metadata", str(metadata), "--threshold", "100", "--output_dir", str(out)
    )
    taken = _check_funnel(stats, tables)
    assert taken["balancing (MetaCLIP draw)"] == stats["accounting"]["balanced_out"] > 0
    assert stats["accounting"]["rejected"] == 3 and (out / "plots" / "funnel.png").read_bytes()[:4] == b"\x89PNG"


def test_filter_no_balancing_selection_funnel(tmp_path, scored_pool):
    out = tmp_path / "out"
    stats, tables = _curate(
        "--input", str(scored_pool.directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out),
        "--filter", "clip_score", "--clip_score_fraction", "0.7", "--balance", "none",
        "--select", "covariance", "--select_fraction", "0.3",
        "--class_embeddings", str(scored_pool.class_embeddings_path),
    )  # fmt: skip
    taken = _check_funnel(stats, tables)
    assert taken["filter: clip_score"] == stats["filtered_by_filter"]["clip_score"] == stats["accounting"]["filtered"]
    assert taken["balancing: none"] == 0
    assert taken["selection (not selected)"] == stats["accounting"]["not_selected"] > 0
    labels = [row[0] for row in tables["funnel"][1:]]
    assert labels == [
        "read",
        "rejected (bad input)",
        "filter: clip_score",
        "balancing: none",
        "selection (not selected)",
        "kept",
    ]
    _check_run_figures(stats, tables)


def test_where_funnel_splits_the_filtered_records_by_filter(tmp_path, scored_pool):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["photo", "number"]))
    stats, tables = _curate(
        "--input", str(scored_pool.directory / "*.parquet"), "--input_preset", "datacomp",
        "--output_dir", str(tmp_path / "out"), "--where", "aesthetic > 3", "--where", "aesthetic < 9",
        "--filter", "clip_score", "--clip_score_fraction", "0.8",
        "--metadata", str(metadata), "--threshold", "200",
    )  # fmt: skip
    taken = _check_funnel(stats, tables)
    by_filter = stats["filtered_by_filter"]
    assert len(by_filter) == 3 and all(count > 0 for count in by_filter.values())
    assert {name: taken[f"filter: {name}"] for name in by_filter} == by_filter
    assert sum(by_filter.values()) == stats["accounting"]["filtered"]
    assert taken["balancing (MetaCLIP draw)"] == stats["accounting"]["balanced_out"] > 0
    _check_run_figures(stats, tables)


def _check_run_figures(stats: dict, tables: dict) -> None:
    """Each stage's rows, formatted: no dict, list or bool reprs and no stats.json key as a label."""
    for label, value in tables["run-figures"]:
        assert not any(mark in value for mark in "{}[]'") and value not in ("True", "False"), (label, value)
        assert not ("_" in label and label in stats), label  # a raw key, as records_filtered was


def test_demo_runs_the_datacomp_scene_through_every_stage_and_prints_its_accounting(tmp_path, capsys):
    from beam_pipeline import demo

    assert demo.main(["--output_dir", str(tmp_path), "--captions", "3000", "--threshold", "100"]) == 0
    printed = capsys.readouterr().out
    curated = tmp_path / "datacomp_scene" / "curated"
    stats = json.loads((curated / "stats.json").read_text())
    accounting = stats["accounting"]
    lines = printed[printed.index("where the records went") :].splitlines()[1:]
    shown = {line[:34].strip(): line[34:].split() for line in lines if line.endswith(" left")}
    assert shown["read"] == [f"{accounting['read']:,}", "left"]
    for name, count in stats["filtered_by_filter"].items():  # the where and the CLIP-score filter
        assert shown[f"filter: {name}"][0] == f"-{count:,}"
    assert len(stats["filtered_by_filter"]) == 2
    assert shown["balancing (MetaCLIP draw)"][0] == f"-{accounting['balanced_out']:,}"
    assert shown["selection (not selected)"][0] == f"-{accounting['not_selected']:,}"
    assert shown["kept"] == [f"{accounting['kept']:,}", "left"] and accounting["kept"] > 0
    assert f"report: {curated / 'report.html'}" in printed and (curated / "report.html").exists()
    page = (curated / "report.html").read_text(encoding="utf-8")
    headings = [page.index(f"<h2{tag}>{title}") for tag, title in (
        (' id="where-records-went"', "Where the records went"), ("", "Run figures"), ("", "Filters"),
        ("", "Balancing"), ("", "Selection"),
    )]  # fmt: skip
    assert headings == sorted(headings)  # the funnel first, then each stage's section in the chain's order
