"""The benchmark tools: pools, the RSS sampler, the end-to-end benchmark on a tiny pool, the cost model."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, shared_file

if str(REPO) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO))

# psutil and ahocorasick-rs are the benchmarks' own requirements (requirements-bench.txt).
pytest.importorskip("psutil", reason="the benchmarks need psutil: pip install -r requirements-bench.txt")

from benchmarks import bench_automaton, bench_e2e, cost_model, make_pool, processes


def read_pool(pool: make_pool.Pool) -> pa.Table:
    return pa.concat_tables([pq.read_table(path) for path in pool.paths])


@pytest.fixture(scope="module")
def synthetic_source():
    return make_pool.PoolSource("synthetic", seed=0)


def test_laion_pool_has_n_rows_in_f_files_unique_keys_and_the_sample_length_distribution(tmp_path):
    shared_file("data", "laion400m_sample_10k.parquet")
    base = make_pool.laion_base()
    captions = 2 * base.num_rows + 123
    pool = make_pool.write_pool(tmp_path / "pool", captions, 3, "laion")
    assert pool.files == 3 and len(pool.paths) == 3
    per_file = math.ceil(captions / 3)
    assert [pq.ParquetFile(p).metadata.num_rows for p in pool.paths] == [per_file, per_file, captions - 2 * per_file]
    table = read_pool(pool)
    assert table.num_rows == captions
    assert table.column_names == ["key", "text", "url"]
    keys = table.column("key").to_pylist()
    assert len(set(keys)) == captions
    # Two whole copies of the sample: the same texts, so the same length distribution.
    texts = table.column("text").to_pylist()
    sample = base.column("text").to_pylist()
    assert collections.Counter(texts[: 2 * len(sample)]) == collections.Counter(sample * 2)
    assert sorted(map(len, texts[: 2 * len(sample)])) == sorted(map(len, sample * 2))
    assert texts[2 * len(sample) :] == sample[:123]
    assert table.column("url").to_pylist()[:3] == base.column("url").to_pylist()[:3]
    # The manifest makes the pool reusable from a cache directory.
    again = make_pool.ensure_pool(tmp_path / "cache", 500, 2, "laion")
    assert make_pool.ensure_pool(tmp_path / "cache", 500, 2, "laion").paths == again.paths


def test_synthetic_pool_is_deterministic_and_independent_of_the_file_count(tmp_path, synthetic_source):
    one = read_pool(make_pool.write_pool(tmp_path / "a", 3000, 2, "synthetic"))
    two = read_pool(make_pool.write_pool(tmp_path / "b", 3000, 3, "synthetic"))
    assert one.equals(two)
    assert len(set(one.column("key").to_pylist())) == 3000
    other_seed = read_pool(make_pool.write_pool(tmp_path / "c", 3000, 2, "synthetic", seed=1))
    assert other_seed.column("text").to_pylist() != one.column("text").to_pylist()
    # Row i depends on i only, across the generator's chunk boundary too.
    across = synthetic_source.rows(make_pool.CHUNK - 5, make_pool.CHUNK + 5)
    whole = synthetic_source.rows(0, make_pool.CHUNK + 5)
    assert across.column("text").to_pylist() == whole.column("text").to_pylist()[-10:]
    assert whole.column("text").to_pylist()[:3000] == one.column("text").to_pylist()


def test_synthetic_captions_have_web_alt_text_lengths_and_match_the_synthetic_metadata(synthetic_source):
    texts = synthetic_source.texts(20_000)
    words = np.array([len(t.split()) for t in texts])
    chars = np.array([len(t) for t in texts])
    assert words.min() >= 1 and words.max() <= make_pool.MAX_WORDS
    assert 6 <= np.median(words) <= 9 and 8 <= words.mean() <= 11  # LAION sample: median 8, mean 9.2
    assert 40 <= np.median(chars) <= 65  # LAION sample: 48
    from transforms.core.matching import EntryMatcher

    metadata = make_pool.synthetic_metadata(20_000)
    assert len(metadata) == len(set(metadata)) == 20_000 and all(e.strip() == e and e for e in metadata)
    assert make_pool.synthetic_metadata(20_000) == metadata
    offsets, _ = EntryMatcher(metadata).match_batch(texts[:2000])
    per_caption = np.diff(offsets)
    assert (per_caption > 0).mean() > 0.8 and 2 <= per_caption.mean() <= 10


def test_parse_count():
    assert [make_pool.parse_count(s) for s in ("100k", "4M", "1.6B", "2500", "1_000")] == [
        100_000,
        4_000_000,
        1_600_000_000,
        2500,
        1000,
    ]
    with pytest.raises(ValueError):
        make_pool.parse_count("0")


def test_the_sampler_finds_a_child_process_and_its_memory():
    hog = "import time; block = b'x' * (160 << 20); time.sleep(2.5)  # hog-marker"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hog!r}])"]
    )

    def role(cmdline, is_root, name=""):
        return "main" if is_root else ("hog" if "hog-marker" in " ".join(cmdline) else "other")

    with processes.ProcessTreeSampler(parent.pid, 0.05, role=role) as sampler:
        parent.wait()
    by_role = {p["role"]: p for p in sampler.processes()}
    assert set(by_role) == {"main", "hog"}
    assert by_role["hog"]["peak_rss"] >= 150 << 20
    assert by_role["main"]["peak_rss"] < 100 << 20
    assert sampler.peak_tree_rss >= by_role["hog"]["peak_rss"]
    assert by_role["hog"]["pid"] != parent.pid and by_role["main"]["pid"] == parent.pid


def test_process_roles():
    python = "/venv/bin/python"
    assert processes.process_role([python, "-m", "beam_pipeline.curate"], True) == "main"
    worker = "apache_beam.runners.worker.sdk_worker_main"  # what Beam's local runners start
    assert processes.process_role([python, "-m", worker], False) == "sdk_worker"
    assert processes.process_role(["/bin/sh", "-c", f"{python} -m {worker}"], False) == "shell"
    assert processes.process_role([python, "-c", "pass"], False) == "other"
    # Forked from the warm process: the launcher's command line, told apart by the process name.
    launcher = [python, "-m", "beam_pipeline.curate", "--input", "x"]
    assert processes.process_role(launcher, False, "bb-sdk-worker") == "sdk_worker"
    assert processes.process_role(launcher, False, "bb-warm") == "warm"
    assert processes.process_role(launcher, False, "python") == "other"
    assert (
        processes.process_role([python, "-I", "-S", "/r/beam_pipeline/launcher/worker_relay.py", "/s"], False)
        == "shell"
    )


def test_bench_e2e_runs_the_command_line_on_a_tiny_pool_and_writes_its_json(tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(make_pool.synthetic_metadata(3000)))
    out = tmp_path / "e2e.json"
    status = bench_e2e.main(
        [
            "--sizes",
            "2k",
            "--source",
            "synthetic",
            "--metadata",
            str(metadata),
            "--files",
            "2",
            "--threshold",
            "100",
            "--raw_captions",
            "2k",
            "--oracle_captions",
            "2",
            "--cache_dir",
            str(tmp_path / "cache"),
            "--work_dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    assert status == 0
    results = json.loads(out.read_text())
    (run,) = results["runs"]
    assert run["returncode"] == 0, run["stderr_tail"]
    assert run["captions"] == 2000 and run["stats"]["records_read"] == 2000
    assert run["captions_per_s"] > 0 and run["ratio_to_b"] > 0 and run["cpu_s"] > 0
    roles = collections.Counter(p["role"] for p in run["processes"])
    assert roles["main"] == 1 and roles["sdk_worker"] == 2
    assert (
        run["peak_rss_main_mib"] > 50
        and len(run["peak_rss_workers_mib"]) == 2
        and min(run["peak_rss_workers_mib"]) > 50
    )
    raw = results["raw_loop"]
    assert raw["b_raw_loop"] > 0 and raw["before"]["a_match_batch"] > 0 and raw["before"]["c_per_entry_loop"] > 0
    assert results["cost_model"]["vcpu_hours"]["end_to_end_wall"] > 0
    assert (tmp_path / "work" / "log-2000.txt").exists() and not (tmp_path / "work" / "out-2000").exists()
    # Warm by default: the automaton cached before the run, and the run pointed at it.
    assert results["automaton_cache"] == "warm" and results["report"] == "true"
    assert f"--cache_dir {tmp_path / 'work' / 'automata'}" in run["command"]
    assert len(list((tmp_path / "work" / "automata").glob("automaton-*.pickle"))) == 1


def _run(captions, wall, cpu, workers_mib, pipeline=None):
    return {
        "captions": captions,
        "returncode": 0,
        "wall_s": wall,
        "pipeline_s": pipeline or wall - 2,
        "cpu_s": cpu,
        "captions_per_s": captions / wall,
        "cores": 2,
        "peak_rss_workers_mib": workers_mib,
    }


def test_scaling_reports_total_and_marginal_cost_and_the_fixed_start_up():
    runs = [
        _run(100_000, 12.0, 20.0, [600, 610]),
        _run(1_000_000, 102.0, 200.0, [600, 620]),
        _run(4_000_000, 402.0, 800.0, [610, 630]),
    ]
    s = bench_e2e.scaling(runs)
    assert [round(p["wall"]) for p in s["per_caption_us"]] == [120, 102, 100]
    assert [round(m["wall"]) for m in s["marginal_us"]] == [100, 100]
    assert s["fit"]["fixed_s"] == pytest.approx(2.0) and s["fit"]["per_caption_us"] == pytest.approx(100.0)
    assert s["marginal_flat"] and abs(s["marginal_change"]) < 1e-9
    assert s["total_flat"] is False and s["total_change"] == pytest.approx(100.5 / 120 - 1)


def test_cost_model_from_measured_figures():
    runs = [_run(100_000, 12.0, 20.0, [600, 610]), _run(1_000_000, 102.0, 200.0, [600, 620])]
    results = {"runs": runs, "workers": 2, "raw_loop": {"b_raw_loop": 100_000.0}, "scaling": bench_e2e.scaling(runs)}
    model = cost_model.estimate(results, pool_captions=1_600_000_000, vm_overhead_gib=1.0, target_hours=10)
    rates = model["per_core_captions_per_s"]
    assert model["primary_rate"] == "end_to_end_marginal"
    assert rates["end_to_end_marginal"] == pytest.approx(5000.0)  # 100 us per caption on 2 cores
    assert model["vcpu_hours"]["end_to_end_marginal"] == pytest.approx(1.6e9 / 5000 / 3600)
    assert model["vcpu_hours"]["raw_automaton_loop"] == pytest.approx(1.6e9 / 100_000 / 3600)
    assert model["sdk_worker_peak_rss_mib"] == 620 and not model["worker_memory_grows"]
    machines = {m["machine_type"]: m for m in model["machines"]}
    assert machines["n2-standard-8"]["needed_gib"] == pytest.approx(8 * 620 / 1024 + 1.0, abs=0.01)
    assert machines["n2-standard-8"]["fits"]
    assert machines["n2-standard-8"]["workers_for_target"] == math.ceil(
        model["vcpu_hours"]["end_to_end_marginal"] / 8 / 10
    )
    grown = cost_model.estimate({**results, "runs": [runs[0], _run(1_000_000, 102.0, 200.0, [1500, 1600])]})
    assert (
        grown["worker_memory_grows"] and not {m["machine_type"]: m for m in grown["machines"]}["n2-highcpu-16"]["fits"]
    )
    assert "GROWS" in cost_model.format_estimate(grown)


def test_bench_automaton_compares_the_three_libraries_on_a_small_list(tmp_path):
    pytest.importorskip("ahocorasick_rs", reason="needs ahocorasick-rs: pip install -r requirements-bench.txt")
    # daachorse is the pipeline's matcher (requirements.txt), not an optional benchmark library.
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(make_pool.synthetic_metadata(2000)))
    out = tmp_path / "automaton.json"
    assert (
        bench_automaton.main(
            ["--metadata", str(metadata), "--captions", "1k", "--source", "synthetic", "--json", str(out)]
        )
        == 0
    )
    results = json.loads(out.read_text())
    by_library = {r["library"]: r for r in results["libraries"]}
    assert by_library["pyahocorasick"]["picklable"] and by_library["pyahocorasick"]["load_probe_ok"]
    assert by_library["pyahocorasick"]["pickled_mib"] > 0 and by_library["pyahocorasick"]["load_s"] >= 0
    assert not by_library["ahocorasick-rs"]["picklable"] and "pickle" in by_library["ahocorasick-rs"]["pickle_error"]
    assert all(r["raw_captions_per_s"] > 0 and r["match_set_captions_per_s"] > 0 for r in by_library.values())
    assert results["comparison"]["identical"] and results["comparison"]["matches_pyahocorasick"] > 0
    # daachorse: built, measured, its own serialize()/deserialize() round trip in a fresh process
    # (and pickling, which 0.5.0 supports), and the same match sets as pyahocorasick.
    daachorse = by_library["daachorse"]
    peak = daachorse["build_peak_rss_mib"]  # None where /proc/self/clear_refs cannot be written
    assert daachorse["build_s"] > 0 and (peak is None or peak >= daachorse["build_rss_mib"] - 1)
    assert daachorse["serialized_mib"] > 0 and daachorse["serialize_s"] > 0 and daachorse["deserialize_s"] > 0
    assert daachorse["deserialize_probe_ok"] and len(daachorse["probe"]) == 5 and daachorse["probe_matches"] > 0
    assert daachorse["picklable"] and daachorse["load_probe_ok"] and daachorse["pickled_mib"] > 0
    assert daachorse["probe"] == by_library["pyahocorasick"]["probe"]
    compared = results["comparison_daachorse"]
    assert compared["identical"] and compared["differing_captions"] == 0 and not compared["errors"]
    matches = results["comparison"]["matches_pyahocorasick"]
    assert compared["matches_daachorse"] == compared["matches_pyahocorasick"] == matches > 0


def test_stage_times_lists_the_runners_stages_and_their_sum(tmp_path, capsys):
    from benchmarks import stage_times

    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"key": f"k{i}", "text": "a dog" if i % 2 else "a cat"}) + "\n" for i in range(200))
    )
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog", "cat"]))
    status = stage_times.main(
        [
            "--min_seconds",
            "0",
            "--",
            "--input",
            str(pool),
            "--metadata",
            str(metadata),
            "--output_dir",
            str(tmp_path / "out"),
            "--threshold",
            "10",
            "--report",
            "false",
            "--progress",
            "0",
        ]
    )
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    stages = [line for line in lines if " s  workers' peak MiB " in line]
    assert "set-up" in stages[0] and any("MatchEntries" in line for line in stages)
    assert any("WriteStats" in line for line in stages)
    total = float(lines[-1].split()[0])
    # Each line is rounded to 0.01 s.
    assert (
        lines[-1].endswith("in all")
        and abs(total - sum(float(line.split()[0]) for line in stages)) <= 0.005 * len(stages) + 0.01
    )
    assert lines[-2].endswith("in 0 shorter stages")
    # The children's CPU seconds per stage (a prebuild child here at most: the DirectRunner runs in-process).
    cpu = [float(line.split("CPU")[1].split()[0]) for line in stages]
    assert all(seconds >= 0 for seconds in cpu)
    assert abs(float(lines[-1].split("CPU")[1].split()[0]) - sum(cpu)) <= 0.005 * len(stages) + 0.01


def test_profile_benchmark_builds_each_variant_and_checks_its_matches(tmp_path, capsys):
    shared_file("data", "laion400m_sample_10k.parquet")
    shared_file("bench", "metadata_500k.json.gz")
    from benchmarks import bench_profile

    assert bench_profile.main(["--sizes", "0,50", "--rounds", "1", "--json", str(tmp_path / "p.json")]) == 0
    results = json.loads((tmp_path / "p.json").read_text())
    assert set(results["variants"]) == {"0", "50"} and results["measured_captions"] > 4000
    assert results["variants"]["0"]["speedup_median"] == 1.0
    assert "profile    50 captions" in capsys.readouterr().out


def test_selection_benchmark_times_picks_and_measures_the_split():
    from benchmarks import bench_selection

    row = bench_selection.cost(600, 16, picks=20, full=True)
    assert row["budget"] == 180 and row["picks_timed"] == 20 and row["s_per_pick"] > 0
    assert row["measured_full_greedy_s"] >= 0
    (split,) = bench_selection.approximation(400, 8, [100])
    assert split["parts"] == 4 and 0 < split["overlap_with_exact"] <= 1
    # The greedy beats a random subset of the same size at matching the pool's mean.
    assert split["residual_exact"] < split["residual_random"] and split["residual_split"] < split["residual_random"]


def test_first_run_benchmark_pool_and_its_str_replace_spacing(tmp_path):
    """The issue's pool layout (10 shards, keys s{shard}r{repeat}-{row}), and MetaCLIP's spacing
    written with str.replace, which must be the pipeline's spacing exactly."""
    shared_file("data", "laion400m_sample_10k.parquet")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from benchmarks import bench_first_run
    from transforms.core.spacing import space_text

    bench_first_run.write_pool(tmp_path / "pool", 25_000)
    shards = sorted((tmp_path / "pool").glob("*.parquet"))
    assert len(shards) == 10
    table = pq.read_table(shards[3])
    assert table.num_rows == 2_500 and table.column("key")[0].as_py() == "s3r0-0"
    assert table.column_names == ["key", "text", "url"]

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("ab ,.;:?!`\t\n\r\u00a0é")), max_size=30))
    def same_spacing(text):
        assert bench_first_run.metaclip_spacing(text) == space_text(text)

    same_spacing()


def test_dedup_benchmark_pool_plants_url_and_text_duplicates(tmp_path):
    """bench_dedup_exact's pool: unique keys; the planted rows are duplicates under the keys' rules."""
    import pyarrow.parquet as pq

    from benchmarks.bench_dedup_exact import FILES, planted_pool
    from transforms.dedup.keys import text_keys, url_keys

    figures = planted_pool(tmp_path / "pool", 4000, 0.1, 0.05)
    table = pq.read_table(tmp_path / "pool")
    assert len(list((tmp_path / "pool").glob("*.parquet"))) == FILES and table.num_rows == 4000
    assert len(set(table.column("key").to_pylist())) == 4000
    assert 300 < figures["url_rows_planted"] < 500 and 120 < figures["text_rows_planted"] < 280
    # every planted row folds onto another row's key (a few may copy a row that was itself planted)
    assert 4000 - len(set(url_keys(table.column("url")))) >= 0.9 * figures["url_rows_planted"]
    assert 4000 - len(set(text_keys(table.column("text")))) >= 0.9 * figures["text_rows_planted"]
