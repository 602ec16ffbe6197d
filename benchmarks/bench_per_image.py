"""--per_image against the same first run without it, on bench_first_run's pool.

    python -m benchmarks.bench_per_image [--sizes 4M] [--rounds 2] [--work DIR] [--json FILE]

Pool: benchmarks.bench_first_run.write_pool (the 10k LAION alt-texts repeated into 10
Parquet shards, `key`, `text`, `url`): every URL of the 10k appears N/10k times, so at 4M an
image has ~400 captions, a heavy case for the grouping. Each round runs the command without
and with --per_image, alternating which goes first, each a first run (empty automaton cache,
every default output). The ratio is the faster --per_image wall over the faster plain wall:
on a shared machine the faster of each is the one least slowed by other work. No assertion.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_first_run import METADATA, write_pool
from benchmarks.make_pool import parse_count
from benchmarks.processes import curate_command, load_average, run_curation


def _first_run(pool: str, work: Path, name: str, extra: list) -> dict:
    cache, out = work / f"cache-{name}", work / f"out-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    cache.mkdir()
    command = curate_command(
        pool, str(METADATA), str(out), 20000, 2, ["--seed", "0", "--cache_dir", str(cache), *extra]
    )
    run = run_curation(command, log_path=work / f"{name}.log")
    if run["returncode"] != 0:
        raise SystemExit(f"{name} failed (exit {run['returncode']}): see {work / f'{name}.log'}")
    stats = json.loads((out / "stats.json").read_text())
    figures = {k: stats.get(k) for k in ("records_kept", "images_read", "images_matched", "images_kept")}
    return {"wall_s": round(run["wall_s"], 1), "cpu_s": run["cpu_s"], **figures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4M")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", default=None)
    parser.add_argument("--json", default="bench_per_image.json")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_per_image-"))
    results = {"date": time.strftime("%Y-%m-%d"), "load_average_before": load_average(), "sizes": []}
    for size in (parse_count(text) for text in args.sizes.split(",")):
        pool = write_pool(work / f"pool-{size}", size)
        runs = {"plain": [], "per_image": []}
        for round_ in range(args.rounds):
            order = ["plain", "per_image"] if round_ % 2 == 0 else ["per_image", "plain"]
            for name in order:
                row = _first_run(pool, work, f"{name}-{size}", ["--per_image"] if name == "per_image" else [])
                runs[name].append(row)
                print(f"{size:>10,} {name:>9}: {row}", flush=True)
        best = {name: min(r["wall_s"] for r in rows) for name, rows in runs.items()}
        entry = {
            "captions": size,
            "runs": runs,
            "best_wall_s": best,
            "ratio": round(best["per_image"] / best["plain"], 3),
        }
        results["sizes"].append(entry)
        print(f"{size:>10,}: ratio (faster --per_image / faster plain) {entry['ratio']:.3f}", flush=True)
    results["load_average_after"] = load_average()
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
