"""The covariance selection at scale: wall, peak RSS per process, the same subset on every runner.

    python -m benchmarks.bench_select_scale --pool /tmp/pool200k --runners 2w,1w,inproc \
        --out benchmarks/results/DATE/select_scale_200k.json

The pool comes from benchmarks/make_selection_pool.py (float16 npz, `classes.npy`). Each
runner runs the issue's command line (`--balance none --select covariance --select_fraction
0.1 --class_embeddings classes.npy --embeddings npz --handoff datacomp`): `2w` and `1w` on
the multi-process FnApiRunner with 2 and 1 worker processes, `inproc` in one process.
The figures: wall, the launcher's and each SDK worker's peak RSS (psutil samples every
0.2 s, benchmarks/processes.py), and whether subset_uids.npy is byte-identical to the first
runner's. Wall times on the shared 2-core machine are noisy: compare runs of one file only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.processes import load_average, machine_info, run_curation

RUNNERS = {
    "2w": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    "1w": ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
    "inproc": ["--direct_running_mode=in_memory"],
}


def command(pool: Path, out: Path, runner: str, fraction: float) -> list:
    return [
        sys.executable,
        "-m",
        "beam_pipeline.curate",
        "--input",
        str(pool / "*.parquet"),
        "--input_preset",
        "datacomp",
        "--balance",
        "none",
        "--select",
        "covariance",
        "--select_fraction",
        str(fraction),
        "--class_embeddings",
        str(pool / "classes.npy"),
        "--embeddings",
        "npz",
        "--handoff",
        "datacomp",
        "--output_dir",
        str(out),
        "--progress",
        "0",
        *RUNNERS[runner],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--runners", default="2w,1w,inproc")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_select_scale"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = {"machine": machine_info(), "pool": str(args.pool), "runs": []}
    first_digest = None
    for runner in args.runners.split(","):
        out = args.work / runner
        shutil.rmtree(out, ignore_errors=True)
        load = load_average()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        run = run_curation(command(args.pool, out, runner, args.fraction), log_path=args.work / f"{runner}.log")
        stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
        uids = out / "subset_uids.npy"
        digest = hashlib.sha256(uids.read_bytes()).hexdigest() if uids.exists() else None
        first_digest = first_digest or digest
        selection = stats.get("selection", {})
        row = {
            "runner": runner,
            "started_utc": started,
            "returncode": run["returncode"],
            "wall_s": run["wall_s"],
            "cpu_s": run["cpu_s"],
            "load_average_before": load,
            "load_average_after": load_average(),
            "peak_rss_main_mib": run["peak_rss_main_mib"],
            "peak_rss_workers_mib": run["peak_rss_workers_mib"],
            "peak_rss_tree_mib": run["peak_rss_tree_mib"],
            "records_in": selection.get("records_in"),
            "records_selected": selection.get("records_selected"),
            "classes": selection.get("classes"),
            "parts": sum(row["parts"] for row in selection.get("per_class", [])),
            "objective_ratio": selection.get("objective_ratio"),
            "subset_uids_sha256": digest,
            "same_subset_as_first": digest is not None and digest == first_digest,
            "stderr_tail": run["stderr_tail"][-600:] if run["returncode"] else "",
        }
        results["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), flush=True)
        shutil.rmtree(out, ignore_errors=True)
        # Written after each runner: a long series stopped early keeps what it measured.
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        time.sleep(1)
    return 0 if all(r["returncode"] == 0 and r["same_subset_as_first"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
