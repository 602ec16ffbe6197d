"""End-to-end curation throughput and memory, against the raw automaton loop of the same run.

    python -m benchmarks.bench_e2e [--sizes 100k,1M,4M] [--cache_dir ~/.cache/balancebeam-bench]
        [--automaton_cache warm|cold] [--json bench_e2e.json]

For each size it writes (or reuses, with --cache_dir) a Parquet pool (benchmarks.make_pool:
the 10k LAION alt-texts replicated with fresh keys, or --source synthetic), then runs the
real command line as a subprocess, from Parquet input to every output written:

    python -m beam_pipeline.curate --input POOL/part-*.parquet --text_field text --url_field url
        --key_field key --metadata ../shared/bench/metadata_500k.json.gz --threshold 20000
        --output_dir OUT --direct_running_mode=multi_processing --direct_num_workers=2
        --progress 0 --report true --cache_dir WORK/automata   (--automaton_cache warm, the default)
                                   --cache_dir none            (--automaton_cache cold)

while a thread samples the RSS and CPU time of every process of its tree every 0.2 s
(psutil): the main process, each SDK worker subprocess (found by its command line,
`apache_beam.runners.worker.sdk_worker_main`) and anything else it starts. It reports
captions/s (wall time of the command, Python start-up included, and the pipeline time the
command prints), the ratio to (b), the raw single-core loop that only spaces the texts and
iterates the pyahocorasick automaton (measured in this run, before and after the curations,
on the same texts and list), each process's peak RSS, the CPU seconds of the whole tree,
and how the per-caption cost changes with size: total time / N for each size, the marginal
cost between consecutive sizes and a least-squares fit wall = fixed + N x per-caption.
The matcher figures of bench_matcher ((a) match_batch, (b), (c) per-entry loop) go into
the JSON too, and the cost model of benchmarks.cost_model is printed from the measured
numbers at the end.

Warm: the automaton cache is filled before the first run, so every run loads the
automaton as a rerun on the same metadata does; cold: every worker builds it, as a
first run does.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from benchmarks import cost_model
from benchmarks.bench_matcher import best_rate
from benchmarks.make_pool import (
    BENCH_METADATA,
    default_source,
    ensure_pool,
    ensure_synthetic_metadata,
    parse_count,
)
from benchmarks.processes import (
    curate_command,
    load_average,
    machine_info,
    run_curation,
)
from transforms.core.matching import EntryMatcher, build_automaton, match_entries_brute_force
from transforms.core.spacing import space_text
from transforms.metadata.lists import parse_metadata
from transforms.runtime.automaton_cache import cached_matcher

FLAT_TOLERANCE = 0.15


def raw_loop(automaton) -> Callable:
    """(b): space each text and iterate a pyahocorasick automaton, nothing else."""
    iterate = automaton.iter

    def run(texts):
        for text in texts:
            for _ in iterate(space_text(text)):
                pass

    return run


def matcher_rates(entries: Sequence[str], texts: Sequence[str], oracle_captions: int = 5, repeats: int = 3) -> dict:
    """bench_matcher's (a), (b), (c) in captions/s, plus the build time of (a)'s matcher.

    (a) runs the pipeline's default matcher (daachorse); (b) a pyahocorasick automaton of
    the same list, the bare loop the performance issues measure against.
    """
    started = time.perf_counter()
    matcher = EntryMatcher(entries)
    build_s = time.perf_counter() - started
    rates = {
        "entries": len(entries),
        "captions": len(texts),
        "build_s": round(build_s, 3),
        "a_match_batch": best_rate(matcher.match_batch, texts, repeats),
        "b_raw_loop": best_rate(raw_loop(build_automaton(entries)), texts, repeats),
    }
    if oracle_captions:
        sample = texts[:oracle_captions]
        rates["c_per_entry_loop"] = best_rate(
            lambda batch: [match_entries_brute_force(t, entries) for t in batch], sample, 1
        )
        rates["c_captions"] = len(sample)
        rates["a_over_c"] = rates["a_match_batch"] / rates["c_per_entry_loop"]
    rates["a_over_b"] = rates["a_match_batch"] / rates["b_raw_loop"]
    return rates


# --------------------------------------------------------------------------- scaling


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least squares y = fixed + x * slope; slope in microseconds per caption."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return {"fixed_s": mean_y - slope * mean_x, "per_caption_us": slope * 1e6}


def scaling(runs: Sequence[dict]) -> dict:
    """Per-caption cost by size: total/N, marginal between sizes, and a linear fit."""
    ok = sorted((r for r in runs if r.get("returncode") == 0), key=lambda r: r["captions"])
    result: dict = {"tolerance": FLAT_TOLERANCE, "per_caption_us": [], "marginal_us": []}
    for r in ok:
        result["per_caption_us"].append(
            {
                "captions": r["captions"],
                "wall": r["wall_s"] / r["captions"] * 1e6,
                "pipeline": (r["pipeline_s"] / r["captions"] * 1e6) if r.get("pipeline_s") else None,
            }
        )
    for small, large in itertools.pairwise(ok):
        span = large["captions"] - small["captions"]
        if span <= 0:
            continue
        result["marginal_us"].append(
            {
                "from": small["captions"],
                "to": large["captions"],
                "wall": (large["wall_s"] - small["wall_s"]) / span * 1e6,
                "pipeline": ((large["pipeline_s"] - small["pipeline_s"]) / span * 1e6)
                if small.get("pipeline_s") and large.get("pipeline_s")
                else None,
            }
        )
    if len(ok) >= 2 and len({r["captions"] for r in ok}) >= 2:
        xs = [r["captions"] for r in ok]
        result["fit"] = _linear_fit(xs, [r["wall_s"] for r in ok])
        result["cpu_fit"] = _linear_fit(xs, [r["cpu_s"] for r in ok])
        totals = [p["wall"] for p in result["per_caption_us"]]
        result["total_change"] = totals[-1] / totals[0] - 1  # largest size vs smallest
        result["total_flat"] = abs(result["total_change"]) <= FLAT_TOLERANCE
    if len(result["marginal_us"]) >= 2:
        first, last = result["marginal_us"][0]["wall"], result["marginal_us"][-1]["wall"]
        result["marginal_change"] = last / first - 1
        result["marginal_flat"] = abs(result["marginal_change"]) <= FLAT_TOLERANCE
    elif len(result["marginal_us"]) == 1:
        # Two sizes: the marginal cost against the total/N of the larger size.
        last_total = result["per_caption_us"][-1]["wall"]
        result["marginal_change"] = result["marginal_us"][0]["wall"] / last_total - 1
        result["marginal_flat"] = abs(result["marginal_change"]) <= FLAT_TOLERANCE
    return result


# --------------------------------------------------------------------------- report


def format_report(results: dict) -> str:
    raw = results["raw_loop"]
    lines = [
        f"machine: {results['machine']['cpu_model']}, {results['machine']['usable_cpus']} usable cpus, "
        f"{results['machine']['memory_gib']} GiB; load average before {results['load_average_before']}, "
        f"after {results['load_average_after']}",
        f"metadata: {results['metadata']} ({results['entries']:,} entries); pools: {results['source']}; "
        f"{results['workers']} SDK workers; "
        f"automaton cache {results.get('automaton_cache', '?')}; --report {results.get('report', '?')}",
        f"(b) raw automaton loop, one core: {raw['b_raw_loop']:,.0f} captions/s "
        f"(before {raw['before']['b_raw_loop']:,.0f}, "
        f"after {raw['after']['b_raw_loop']:,.0f})"
        if raw.get("after")
        else f"(b) raw automaton loop, one core: {raw['b_raw_loop']:,.0f} captions/s",
        f"(a) match_batch {raw['before']['a_match_batch']:,.0f} captions/s, a/b = {raw['before']['a_over_b']:.2f}"
        + (
            f"; (c) per-entry loop {raw['before']['c_per_entry_loop']:,.1f} captions/s, "
            f"a/c = {raw['before']['a_over_c']:,.0f}"
            if "c_per_entry_loop" in raw["before"]
            else ""
        ),
        "",
        f"{'captions':>10} {'wall s':>8} {'pipe s':>8} {'capt/s':>9} {'/(b)':>5} {'/(b)/core':>9} {'cpu s':>8} "
        f"{'us/capt':>8} {'main MiB':>9} {'worker MiB (each)':>20} {'tree MiB':>9}",
    ]
    for r in results["runs"]:
        if r["returncode"] != 0:
            lines.append(
                f"{r['captions']:>10,} FAILED (exit {r['returncode']}): {r['stderr_tail'].strip().splitlines()[-1:]}"
            )
            continue
        workers = ", ".join(f"{m:,.0f}" for m in r["peak_rss_workers_mib"])
        lines.append(
            f"{r['captions']:>10,} {r['wall_s']:>8.1f} {r['pipeline_s'] or float('nan'):>8.1f} "
            f"{r['captions_per_s']:>9,.0f} "
            f"{r['ratio_to_b']:>5.2f} {r['ratio_to_b_per_core']:>9.2f} {r['cpu_s']:>8.1f} "
            f"{r['wall_s'] / r['captions'] * 1e6:>8.1f} "
            f"{r['peak_rss_main_mib']:>9,.0f} {workers:>20} {r['peak_rss_tree_mib']:>9,.0f}"
        )
    s = results["scaling"]
    if s["marginal_us"]:
        lines.append("")
        lines.append(
            "per-caption cost (wall):  "
            + ", ".join(f"{p['captions']:,}: {p['wall']:.1f} us" for p in s["per_caption_us"])
        )
        lines.append(
            "marginal cost (wall):     "
            + ", ".join(f"{m['from']:,}->{m['to']:,}: {m['wall']:.1f} us" for m in s["marginal_us"])
        )
        if "fit" in s:
            lines.append(
                f"fit wall = fixed + N x c: fixed {s['fit']['fixed_s']:.1f} s, "
                f"c = {s['fit']['per_caption_us']:.1f} us/caption"
                f" ({1e6 / s['fit']['per_caption_us']:,.0f} captions/s once started)"
                if s["fit"]["per_caption_us"] > 0
                else ""
            )
            lines.append(
                f"fit CPU = fixed + N x c: fixed {s['cpu_fit']['fixed_s']:.1f} CPU-s, "
                f"c = {s['cpu_fit']['per_caption_us']:.1f} CPU-us/caption"
            )
            cores = next((r["cores"] for r in results["runs"] if r.get("cores")), results["workers"])
            if s["fit"]["per_caption_us"] <= 0 or 1e6 / s["fit"]["per_caption_us"] > cores * raw["b_raw_loop"]:
                lines.append(
                    f"  (the marginal cost is below the raw automaton loop's on {cores} cores: at these sizes start-up "
                    "and noise dominate the differences; the marginal figures mean something from ~1M captions on)"
                )
        verdict = lambda ok: "flat" if ok else "NOT flat"  # noqa: E731
        if "total_change" in s:
            lines.append(
                f"total/N, largest vs smallest size: {s['total_change']:+.1%} "
                f"({verdict(s['total_flat'])} within {FLAT_TOLERANCE:.0%}; includes fixed start-up)"
            )
        if "marginal_change" in s:
            lines.append(
                f"marginal cost, last step vs first: {s['marginal_change']:+.1%} "
                f"({verdict(s['marginal_flat'])} within {FLAT_TOLERANCE:.0%})"
            )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1M,4M", help="pool sizes, comma-separated (default: 100k,1M,4M)")
    parser.add_argument("--files", type=int, default=8, help="Parquet files per pool (default: 8)")
    parser.add_argument(
        "--source",
        choices=("laion", "synthetic"),
        default=default_source(),
        help="pool texts (default: laion when ../shared is present, else synthetic)",
    )
    parser.add_argument(
        "--metadata",
        default=None,
        help="metadata list (default: ../shared/bench/metadata_500k.json.gz; 'synthetic' or, "
        "without ../shared, a generated 500k list matching the synthetic pools)",
    )
    parser.add_argument("--threshold", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers (default: 2)")
    parser.add_argument("--cache_dir", default=None, help="keep and reuse pools here (default: a temporary directory)")
    parser.add_argument(
        "--work_dir", default=None, help="where outputs and logs go (default: a temporary directory, removed)"
    )
    parser.add_argument("--keep_outputs", action="store_true", help="keep each run's output directory")
    parser.add_argument(
        "--raw_captions", type=parse_count, default=100_000, help="captions for the in-process loops (default: 100k)"
    )
    parser.add_argument(
        "--oracle_captions", type=int, default=5, help="captions for the per-entry loop (c) (default: 5; 0 skips)"
    )
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling interval in seconds (default: 0.2)")
    parser.add_argument(
        "--pool_captions", type=parse_count, default=1_600_000_000, help="pool size of the cost model (default: 1.6B)"
    )
    parser.add_argument(
        "--automaton_cache",
        choices=("warm", "cold"),
        default="warm",
        help="warm: every run loads the automaton from a cache built before the runs (a rerun on the same "
        "metadata); cold: --cache_dir none, every worker builds it (a first run) (default: warm)",
    )
    parser.add_argument(
        "--report",
        choices=("true", "false"),
        default="true",
        help="--report of the curations: true writes report.html and the plots too (default: true)",
    )
    parser.add_argument("--json", default="bench_e2e.json", help="results file (default: bench_e2e.json)")
    args = parser.parse_args(argv)
    sizes = [parse_count(s) for s in args.sizes.split(",") if s.strip()]

    # The command runs from the repository root: every path it gets is made absolute.
    work_dir = Path(args.work_dir).resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_e2e-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir).expanduser().resolve() if args.cache_dir else work_dir / "pools"
    metadata = args.metadata or (str(BENCH_METADATA) if BENCH_METADATA.exists() else "synthetic")
    if metadata == "synthetic":
        metadata = str(ensure_synthetic_metadata(cache_dir))
    elif "://" not in metadata:
        metadata = str(Path(metadata).resolve())
    if "://" in metadata:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(metadata, compression_type="uncompressed") as handle:
            parsed = parse_metadata(handle.read(), metadata)
    else:
        parsed = parse_metadata(Path(metadata).read_bytes(), metadata)
    entries = parsed.entries
    extra = ["--report", args.report]
    if args.automaton_cache == "warm":
        automata = work_dir / "automata"
        cached_matcher(str(automata), parsed.sha256, lambda: EntryMatcher(entries))
        extra += ["--cache_dir", str(automata)]
    else:
        extra += ["--cache_dir", "none"]
    repo = Path(__file__).resolve().parent.parent

    results: dict = {
        "benchmark": "bench_e2e",
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.bench_e2e", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_before": load_average(),
        "metadata": metadata,
        "entries": len(entries),
        "source": args.source,
        "workers": args.workers,
        "threshold": args.threshold,
        "files": args.files,
        "automaton_cache": args.automaton_cache,
        "report": args.report,
    }
    try:
        print(f"pools in {cache_dir}, outputs in {work_dir}", flush=True)
        # (b) before the curations, on the pool's own texts
        from benchmarks.make_pool import PoolSource

        texts = PoolSource(args.source).texts(args.raw_captions)
        before = matcher_rates(entries, texts, args.oracle_captions)
        print(
            f"(b) raw automaton loop before: {before['b_raw_loop']:,.0f} captions/s; "
            f"(a) {before['a_match_batch']:,.0f}",
            flush=True,
        )
        runs = []
        for size in sizes:
            pool = ensure_pool(cache_dir, size, args.files, args.source)
            output = work_dir / f"out-{size}"
            if output.exists():
                shutil.rmtree(output)
            command = curate_command(pool.glob, metadata, str(output), args.threshold, args.workers, extra)
            print(f"curating {size:,} captions ...", flush=True)
            run = run_curation(command, args.interval, work_dir / f"log-{size}.txt", cwd=str(repo))
            run.update(
                captions=size,
                pool=pool.directory,
                pool_bytes=sum(os.path.getsize(p) for p in pool.paths),
                command=" ".join(command[1:]),
            )
            stats_path = output / "stats.json"
            if run["returncode"] == 0 and stats_path.exists():
                stats = json.loads(stats_path.read_text())
                run["stats"] = {
                    k: stats[k]
                    for k in (
                        "records_read",
                        "records_accepted",
                        "records_matched",
                        "records_kept",
                        "entries_over_threshold",
                    )
                    if k in stats
                }
                if stats.get("records_read") != size:
                    print(
                        f"warning: stats.json says {stats.get('records_read')} records read, expected {size}",
                        flush=True,
                    )
            runs.append(run)
            if not args.keep_outputs and output.exists():
                shutil.rmtree(output)
            if run["returncode"] == 0:
                print(
                    f"  {run['wall_s']:.1f} s wall, {size / run['wall_s']:,.0f} captions/s, "
                    f"workers' peak RSS {run['peak_rss_workers_mib']} MiB",
                    flush=True,
                )
            else:
                print(f"  FAILED with exit status {run['returncode']}:\n{run['stderr_tail']}", flush=True)
        after = matcher_rates(entries, texts, 0)
        raw_b = max(before["b_raw_loop"], after["b_raw_loop"])
        results["raw_loop"] = {"b_raw_loop": raw_b, "before": before, "after": after}
        cores = min(args.workers, results["machine"]["usable_cpus"])
        for run in runs:
            if run["returncode"] == 0:
                run["captions_per_s"] = run["captions"] / run["wall_s"]
                run["captions_per_s_pipeline"] = run["captions"] / run["pipeline_s"] if run.get("pipeline_s") else None
                run["ratio_to_b"] = run["captions_per_s"] / raw_b
                run["ratio_to_b_per_core"] = run["captions_per_s"] / cores / raw_b
                run["cores"] = cores
                run["cpu_us_per_caption"] = run["cpu_s"] / run["captions"] * 1e6
        results["runs"] = runs
        results["scaling"] = scaling(runs)
        results["load_average_after"] = load_average()
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            results["cost_model"] = cost_model.estimate(results, pool_captions=args.pool_captions)
        except ValueError as error:
            results["cost_model"] = {"error": str(error)}
        Path(args.json).write_text(json.dumps(results, indent=1))
        print()
        print(format_report(results))
        if "error" not in results["cost_model"]:
            print()
            print(cost_model.format_estimate(results["cost_model"]))
        print(f"\nresults: {args.json}")
        return 0 if all(r["returncode"] == 0 for r in runs) else 1
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
