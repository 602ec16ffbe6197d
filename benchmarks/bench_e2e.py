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
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import psutil

from benchmarks import cost_model
from benchmarks.bench_matcher import best_rate
from benchmarks.make_pool import (
    BENCH_METADATA,
    default_source,
    ensure_pool,
    ensure_synthetic_metadata,
    parse_count,
)
from transforms.core.matching import EntryMatcher, build_automaton, match_entries_brute_force
from transforms.core.spacing import space_text
from transforms.metadata.lists import parse_metadata
from transforms.runtime.automaton_cache import cached_matcher

SDK_WORKER_MARK = "apache_beam.runners.worker.sdk_worker_main"
MIB = 1 << 20
FLAT_TOLERANCE = 0.15


# --------------------------------------------------------------------------- RSS sampling


def process_role(cmdline: Sequence[str], is_root: bool) -> str:
    """'main' for the command itself, 'sdk_worker' for a Beam SDK worker process,
    'shell' for a /bin/sh wrapper, else 'other'."""
    if is_root:
        return "main"
    joined = " ".join(cmdline)
    if SDK_WORKER_MARK in joined:
        # Beam starts workers with shell=True: `sh -c "python -m ...sdk_worker_main"`.
        if cmdline and os.path.basename(cmdline[0]) in ("sh", "dash", "bash"):
            return "shell"
        return "sdk_worker"
    return "other"


class ProcessTreeSampler:
    """Samples RSS and CPU time of a process and all its descendants in a thread.

    Keeps, for every process ever seen, its peak RSS, its last CPU times and its
    command line; the peak of the tree's summed RSS; and a timeline (one point a
    second) of the summed RSS per role. RSS counts shared pages in each process.
    """

    def __init__(self, root_pid: int, interval: float = 0.2, role: Callable = process_role):
        self.root_pid = root_pid
        self.interval = interval
        self._role = role
        self._processes: dict = {}  # (pid, create_time) -> record
        self._handles: dict = {}
        self.peak_tree_rss = 0
        self.timeline: list = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = None
        self._last_timeline = -1.0

    def start(self) -> "ProcessTreeSampler":
        self._started = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _tree(self) -> list:
        try:
            root = self._handles.get(self.root_pid) or psutil.Process(self.root_pid)
            self._handles[self.root_pid] = root
            return [root] + root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return []

    def sample(self) -> None:
        now = time.monotonic() - (self._started or time.monotonic())
        total = 0
        by_role: dict = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
                    ident = (proc.pid, proc.create_time())
                    record = self._processes.get(ident)
                    if record is None:
                        try:
                            cmdline = proc.cmdline()
                        except (psutil.AccessDenied, psutil.ZombieProcess):
                            cmdline = [proc.name()]
                        record = self._processes[ident] = {
                            "pid": proc.pid,
                            "role": self._role(cmdline, proc.pid == self.root_pid),
                            "cmdline": " ".join(cmdline)[:300],
                            "peak_rss": 0,
                            "first_seen_s": round(now, 2),
                        }
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            record["peak_rss"] = max(record["peak_rss"], rss)
            record["last_rss"] = rss
            record["cpu_s"] = round(cpu.user + cpu.system, 3)
            record["last_seen_s"] = round(now, 2)
            total += rss
            by_role[record["role"]] = by_role.get(record["role"], 0) + rss
        self.samples += 1
        self.peak_tree_rss = max(self.peak_tree_rss, total)
        if now - self._last_timeline >= 1.0:
            self._last_timeline = now
            self.timeline.append(
                {
                    "t": round(now, 1),
                    "total_mib": round(total / MIB, 1),
                    **{f"{k}_mib": round(v / MIB, 1) for k, v in sorted(by_role.items())},
                }
            )

    def processes(self) -> list:
        """Every process seen, the root first, then by role and first sighting."""
        order = {"main": 0, "sdk_worker": 1, "shell": 2, "other": 3}
        return sorted(self._processes.values(), key=lambda r: (order.get(r["role"], 9), r["first_seen_s"], r["pid"]))

    def peak_rss(self, pid: int) -> int:
        return max((r["peak_rss"] for r in self._processes.values() if r["pid"] == pid), default=0)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("apache_beam", "pyarrow", "numpy", "ahocorasick", "psutil"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            versions[name] = None
    try:
        from importlib.metadata import version

        versions["pyahocorasick"] = version("pyahocorasick")
        versions.pop("ahocorasick", None)
    except Exception:  # noqa: BLE001 - informational only
        pass
    return {
        "platform": platform.platform(),
        "cpu_model": model or platform.processor(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def load_average() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- matcher rates


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


# --------------------------------------------------------------------------- one curation


def curate_command(
    pool_glob: str, metadata: str, output_dir: str, threshold: int, workers: int, extra: Sequence[str] = ()
) -> list:
    return [
        sys.executable,
        "-m",
        "beam_pipeline.curate",
        "--input",
        pool_glob,
        "--text_field",
        "text",
        "--url_field",
        "url",
        "--key_field",
        "key",
        "--metadata",
        metadata,
        "--threshold",
        str(threshold),
        "--output_dir",
        output_dir,
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        "--progress",
        "0",
        *extra,
    ]


def _printed_seconds(stdout: str) -> Optional[float]:
    match = re.search(r"^\s*seconds\s+([0-9.]+)\s*$", stdout, re.MULTILINE)
    return float(match.group(1)) if match else None


def run_curation(
    command: Sequence[str], interval: float = 0.2, log_path: Optional[Path] = None, cwd: Optional[str] = None
) -> dict:
    """Run the command line, sampling its process tree; wall and CPU time, per-process peaks."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=cwd)
        sampler = ProcessTreeSampler(process.pid, interval).start()
        returncode = process.wait()
        wall = time.perf_counter() - started
        sampler.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if log_path is not None:
        log_path.write_text(f"$ {' '.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    processes = sampler.processes()
    workers = [p for p in processes if p["role"] == "sdk_worker"]
    main = next((p for p in processes if p["role"] == "main"), None)
    return {
        "returncode": returncode,
        "wall_s": round(wall, 3),
        "pipeline_s": _printed_seconds(stdout),
        # CPU of every process of the tree that has been waited for (the command and
        # whatever it reaped), from the kernel's accounting.
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
        "peak_rss_main_mib": round(main["peak_rss"] / MIB, 1) if main else None,
        "peak_rss_workers_mib": [round(p["peak_rss"] / MIB, 1) for p in workers],
        "peak_rss_tree_mib": round(sampler.peak_tree_rss / MIB, 1),
        "processes": [
            {
                **p,
                "peak_rss_mib": round(p.pop("peak_rss") / MIB, 1),
                "last_rss_mib": round(p.pop("last_rss", 0) / MIB, 1),
            }
            for p in processes
        ],
        "samples": sampler.samples,
        "timeline": sampler.timeline,
        "stdout_tail": stdout[-2000:],
        "stderr_tail": stderr[-3000:] if returncode else stderr[-500:],
    }


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
