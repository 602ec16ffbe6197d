"""benchmarks/bench_semdedup.py on a small pool (two shards): it runs the command line and writes its JSON."""

from __future__ import annotations

import json

from benchmarks import bench_semdedup


def test_bench_semdedup_runs_a_small_pool_and_writes_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--rows", "20000", "--dim", "32", "--clusters", "12", "--workers", "0", "--assign_shards", "1"]
    assert bench_semdedup.main(argv + ["--pool", str(tmp_path / "pool"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["semdedup"]["clusters"] == 12 and result["semdedup"]["centroids"] == "given"
    assert 0 < result["deduplicated"] < 20000  # the planted near copies of the second shard, not everything
    assert result["assignment"]["rows"] == 10000 and result["assignment"]["assignment_ratio"] > 0
    assert [row["clusters"] for row in result["projection"]] == [50_000, 100_000, 250_000]
    assert all(row["usd"] > 0 for row in result["projection"])
