"""The report's inputs as the pipeline writes them, report.html from a real run, and --target_size."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from beam_pipeline.demo import make_demo_data


def _rows(out, subdir):
    return [row for path in sorted((out / subdir).glob("part-*.parquet")) for row in pq.read_table(path).to_pylist()]


@pytest.fixture(scope="module")
def demo_pool(tmp_path_factory):
    """A 100k-caption pool with a Zipf head and a long tail (the demo's generator)."""
    return make_demo_data(tmp_path_factory.mktemp("pool"), captions=100_000, shards=4)


def test_report_files_equal_the_run_figures(demo_pool, tmp_path):
    metadata_path, pool = demo_pool
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(pool / "*.jsonl"),
                "--metadata",
                str(metadata_path),
                "--threshold",
                "500",
                "--output_dir",
                str(out),
                "--progress",
                "0",
            ]
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    figures = json.loads((out / "figures.json").read_text())
    counts = json.loads((out / "entry_counts.json").read_text())
    kept_counts = json.loads((out / "entry_counts_kept.json").read_text())
    entries = json.loads(metadata_path.read_text())
    # Kept counts per entry: recount them from matches/ joined with subset/.
    kept_keys = {row["key"] for row in _rows(out, "subset")}
    recount = dict.fromkeys(entries, 0)
    for row in _rows(out, "matches"):
        if row["key"] in kept_keys:
            for entry_id in row["entry_ids"]:
                recount[entries[entry_id]] += 1
    assert kept_counts == recount and list(kept_counts) == list(counts)
    # Histograms add up to stats.json.
    assert sum(figures["matches_per_caption"]["captions"]) == stats["records_accepted"]
    assert sum(figures["matches_per_caption"]["kept"]) == stats["records_kept"]
    assert sum(figures["caption_length"]["captions"]) == stats["records_accepted"]
    assert figures["matches_per_caption"]["captions"][0] == stats["records_accepted"] - stats["records_matched"]
    # E(t) at the run's t is stats.json's expected_kept; E is nondecreasing.
    table = {row["threshold"]: row["expected_kept"] for row in figures["size_vs_threshold"]}
    assert table[500] == pytest.approx(stats["expected_kept"], abs=1e-3)
    sizes = [row["expected_kept"] for row in figures["size_vs_threshold"]]
    assert sizes == sorted(sizes) and len(sizes) > 20
    # The report and its plots are there, self-contained, and show stats.json's figures.
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", page.replace("https://img.example/", ""))
    assert f"{stats['records_read']:,}" in page and f"{stats['records_kept']:,}" in page
    top = max(counts, key=counts.get)
    assert f">{top}<" in page and f"{counts[top]:,}" in page and f"{kept_counts[top]:,}" in page
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "entry_counts.png" in plots and "size_vs_threshold.png" in plots
    assert all((out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in plots)
    csv = (out / "size_vs_threshold.csv").read_text().splitlines()
    assert csv[0] == "threshold,expected_kept" and len(csv) == len(sizes) + 1


def test_target_size_picks_t_and_lands_on_the_target(demo_pool, tmp_path, capsys):
    metadata_path, pool = demo_pool
    out = tmp_path / "out"
    target = 40_000
    assert (
        curate.run(
            [
                "--input",
                str(pool / "*.jsonl"),
                "--metadata",
                str(metadata_path),
                "--target_size",
                str(target),
                "--output_dir",
                str(out),
                "--progress",
                "0",
                "--report",
                "false",
                "--seed",
                "11",
            ]
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    figures = json.loads((out / "figures.json").read_text())
    t = stats["threshold"]
    assert stats["target_size"] == target and figures["chosen"]["threshold"] == t
    assert re.search(rf"t chosen for --target_size {target:,} +{t:,} \(expected size", capsys.readouterr().out)
    table = {row["threshold"]: row["expected_kept"] for row in figures["size_vs_threshold"]}
    assert abs(stats["expected_kept"] - target) < 0.002 * target
    # The realised subset: within 1% of the target or 3 sigma of the Bernoulli sum, whichever is larger.
    keep_prob = np.array([row["keep_prob"] for row in _rows(out, "matches")])
    sigma = math.sqrt(float((keep_prob * (1 - keep_prob)).sum()))
    assert abs(stats["records_kept"] - target) <= max(0.01 * target, 3 * sigma), (stats["records_kept"], sigma)
    assert table[t] == pytest.approx(stats["expected_kept"], abs=1e-3)


def test_beam_metrics_carry_the_run_figures(demo_pool, tmp_path):
    """The counters any runner shows (Dataflow's UI, Flink's) equal stats.json."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from beam_pipeline.curation.graph import build_curation
    from helpers import local_runner, prepared_config

    metadata_path, pool = demo_pool
    out = tmp_path / "out"
    config, _ = prepared_config(
        [
            "--input",
            str(pool / "part-00000.jsonl"),
            "--metadata",
            str(metadata_path),
            "--threshold",
            "300",
            "--output_dir",
            str(out),
            "--report",
            "false",
        ]
    )
    pipeline = beam.Pipeline(runner=local_runner())
    build_curation(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    stats = json.loads((out / "stats.json").read_text())

    def counter(name):
        found = result.metrics().query(MetricsFilter().with_namespace("curation").with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert counter("records_read") == stats["records_read"]
    assert counter("records_matched") == stats["records_matched"]
    assert counter("records_kept") == stats["records_kept"]
    assert counter("records_rejected") == stats["records_rejected"] == 3
