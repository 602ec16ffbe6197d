"""What curating a 1.6B-caption pool on Dataflow takes, from measured throughput and memory.

    python -m benchmarks.cost_model bench_e2e.json [--pool_captions 1.6B] [--target_hours 12]
        [--vm_overhead_gib 1.0] [--usd_per_vcpu_hour X --usd_per_gib_hour Y]

Reads the results of benchmarks.bench_e2e (the largest size that ran) and prints:
vCPU-hours from three per-core rates (the end-to-end wall rate divided by the cores the
run had, the end-to-end rate per CPU-second of the whole process tree, and the raw
automaton loop (b) as the floor nothing can beat), and for common machine types whether
one SDK process per vCPU, each at the measured peak RSS of an SDK worker, fits in the
machine's memory, with the VM-hours and GiB-hours it implies.

Assumptions (printed with the figures):
- Dataflow's Python SDK runs one SDK process per vCPU, each building its own automaton
  (`Shared` shares it only between the threads of one process); so memory per VM is
  vCPUs x (SDK process peak) + the worker's operational memory (the OS and Dataflow's own
  processes, "typically no larger than 1 GB" per Google's Dataflow OOM guide).
- One vCPU there does the work of one core here (a vCPU of n1/n2 is one hyperthread;
  re-measure on the target machine type for real budgets).
- Shuffle, Parquet I/O and the runner's own work scale with the captions as they did
  here, where the DirectRunner's main process did the shuffle on the same cores.
- Start-up (one automaton build per SDK process, ~2 s) is negligible at this scale and
  is reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

# name: (vCPUs, memory GiB) as Compute Engine lists them
MACHINE_TYPES = {
    "n1-standard-4": (4, 15.0),
    "n1-standard-8": (8, 30.0),
    "n1-standard-16": (16, 60.0),
    "n1-highcpu-16": (16, 14.4),
    "n2-standard-4": (4, 16.0),
    "n2-standard-8": (8, 32.0),
    "n2-standard-16": (16, 64.0),
    "n2-highcpu-16": (16, 16.0),
    "n2-highmem-8": (8, 64.0),
}
MEMORY_GROWTH_TOLERANCE = 0.15
# Use the marginal rate only when the fitted fixed start-up is at most this share of the largest run.
MAX_FIXED_SHARE = 0.5


def _largest_run(results: dict) -> dict:
    runs = [r for r in results.get("runs", []) if r.get("returncode") == 0 and r.get("captions_per_s")]
    if not runs:
        raise ValueError("no successful run in the results")
    return max(runs, key=lambda r: r["captions"])


def estimate(
    results: dict,
    pool_captions: int = 1_600_000_000,
    vm_overhead_gib: float = 1.0,
    target_hours: float = 12.0,
    machine_types: Optional[dict] = None,
    usd_per_vcpu_hour: Optional[float] = None,
    usd_per_gib_hour: Optional[float] = None,
) -> dict:
    """The cost model as a dict, from bench_e2e's results."""
    machine_types = machine_types or MACHINE_TYPES
    run = _largest_run(results)
    cores = run.get("cores") or results.get("workers") or 1
    fit = results.get("scaling", {}).get("fit", {}).get("per_caption_us")
    cpu_fit = results.get("scaling", {}).get("cpu_fit", {}).get("per_caption_us")
    rates = {
        # Once started: the marginal cost between sizes (the fixed start-up of a local run,
        # paid once per worker on Dataflow, is negligible over 1.6B captions).
        "end_to_end_marginal": (1e6 / fit / cores) if fit and fit > 0 else None,
        "end_to_end_cpu_marginal": (1e6 / cpu_fit) if cpu_fit and cpu_fit > 0 else None,
        "end_to_end_wall": run["captions_per_s"] / cores,
        "end_to_end_cpu": run["captions"] / run["cpu_s"] if run.get("cpu_s") else None,
        "raw_automaton_loop": results["raw_loop"]["b_raw_loop"],
    }
    # A marginal rate above the raw automaton loop's is impossible: the sizes were too
    # small (start-up and noise dominate the differences). Do not build on it.
    implausible = [
        name
        for name in ("end_to_end_marginal", "end_to_end_cpu_marginal")
        if rates[name] and rates[name] > rates["raw_automaton_loop"]
    ]
    # The marginal cost only means something when the sizes dwarf the fixed start-up: at
    # 100k captions a local run is nearly all start-up, and differences are noise.
    fixed_s = results.get("scaling", {}).get("fit", {}).get("fixed_s")
    marginal_usable = (
        rates["end_to_end_marginal"]
        and "end_to_end_marginal" not in implausible
        and fixed_s is not None
        and fixed_s <= MAX_FIXED_SHARE * run["wall_s"]
    )
    primary = "end_to_end_marginal" if marginal_usable else "end_to_end_wall"
    vcpu_hours = {name: (pool_captions / rate / 3600 if rate else None) for name, rate in rates.items()}
    worker_peak_mib = max(run["peak_rss_workers_mib"]) if run.get("peak_rss_workers_mib") else None
    if worker_peak_mib is None:
        raise ValueError("the largest run has no SDK worker memory figure")

    # Does a worker's memory grow with the input? Then extrapolating it is wrong.
    ok = sorted(
        (r for r in results.get("runs", []) if r.get("returncode") == 0 and r.get("peak_rss_workers_mib")),
        key=lambda r: r["captions"],
    )
    growth = None
    if len(ok) >= 2:
        growth = max(ok[-1]["peak_rss_workers_mib"]) / max(ok[0]["peak_rss_workers_mib"]) - 1
    hours = vcpu_hours[primary]
    machines = []
    for name, (vcpus, memory_gib) in machine_types.items():
        needed_gib = vcpus * worker_peak_mib / 1024 + vm_overhead_gib
        vm_hours = hours / vcpus
        row = {
            "machine_type": name,
            "vcpus": vcpus,
            "memory_gib": memory_gib,
            "needed_gib": round(needed_gib, 2),
            "fits": needed_gib <= memory_gib,
            "headroom_gib": round(memory_gib - needed_gib, 2),
            "vm_hours": vm_hours,
            "gib_hours": vm_hours * memory_gib,
            "workers_for_target": math.ceil(vm_hours / target_hours),
        }
        if usd_per_vcpu_hour is not None and usd_per_gib_hour is not None:
            row["usd"] = hours * usd_per_vcpu_hour + row["gib_hours"] * usd_per_gib_hour
        machines.append(row)
    sdk_processes = max(1, math.ceil(hours / target_hours))
    return {
        "pool_captions": pool_captions,
        "from_run": {
            "captions": run["captions"],
            "cores": cores,
            "captions_per_s": run["captions_per_s"],
            "cpu_s": run.get("cpu_s"),
            "wall_s": run["wall_s"],
        },
        "per_core_captions_per_s": rates,
        "primary_rate": primary,
        "implausible_rates": implausible,
        "fixed_start_up_s": fixed_s,
        "vcpu_hours": vcpu_hours,
        "sdk_worker_peak_rss_mib": worker_peak_mib,
        "min_gib_per_vcpu": worker_peak_mib / 1024,
        "worker_memory_growth": growth,
        "worker_memory_grows": growth is not None and growth > MEMORY_GROWTH_TOLERANCE,
        "vm_overhead_gib": vm_overhead_gib,
        "target_hours": target_hours,
        "sdk_processes_for_target": sdk_processes,
        "startup_vcpu_hours": sdk_processes * 2.0 / 3600,
        "machines": machines,
        "assumptions": [
            "one Python SDK process per vCPU, each with its own automaton (Dataflow's default for Python)",
            f"VM memory = vCPUs x SDK process peak RSS ({worker_peak_mib:,.0f} MiB measured) "
            f"+ {vm_overhead_gib} GiB operational memory",
            "one vCPU on Dataflow = one core of the measuring machine",
            "per-caption cost constant with size (see the scaling check); shuffle and I/O as measured locally",
            f"VM-hours, GiB-hours and worker counts use the {primary.replace('_', ' ')} rate per core",
        ],
    }


def format_estimate(model: dict) -> str:
    rates = model["per_core_captions_per_s"]
    hours = model["vcpu_hours"]
    run = model["from_run"]
    lines = [
        f"cost model: {model['pool_captions']:,} captions on Dataflow, from the {run['captions']:,}-caption run "
        f"({run['captions_per_s']:,.0f} captions/s on {run['cores']} cores)",
    ]
    labels = {
        "end_to_end_marginal": "end to end, marginal wall cost between sizes / cores",
        "end_to_end_cpu_marginal": "end to end, marginal CPU-seconds of all processes",
        "end_to_end_wall": "end to end, total wall time of the largest run / cores",
        "end_to_end_cpu": "end to end, CPU-seconds of all processes of the largest run",
    }
    first = True
    for name, label in labels.items():
        if rates.get(name):
            mark = (
                " *"
                if name == model["primary_rate"]
                else (
                    " (faster than (b): sizes too small, ignored)" if name in model.get("implausible_rates", ()) else ""
                )
            )
            lines.append(
                f"  {'per vCPU:' if first else '':<9} {label}: {rates[name]:,.0f} captions/s "
                f"-> {hours[name]:,.0f} vCPU-hours{mark}"
            )
            first = False
    lines.append(
        f"{'':<11} raw automaton loop (b), the floor: {rates['raw_automaton_loop']:,.0f} captions/s "
        f"-> {hours['raw_automaton_loop']:,.0f} vCPU-hours"
    )
    lines.append(
        f"{'':<11} (* the rate the machine table below uses: the marginal one when the fixed start-up "
        f"({model['fixed_start_up_s'] or 0:.0f} s fitted) is at most {MAX_FIXED_SHARE:.0%} of the largest run, "
        "else the total)"
    )
    lines.append(
        f"  memory: {model['sdk_worker_peak_rss_mib']:,.0f} MiB peak per SDK process (one per vCPU) -> at least "
        f"{model['min_gib_per_vcpu']:.2f} GiB per vCPU + {model['vm_overhead_gib']} GiB per VM"
    )
    if model["worker_memory_growth"] is not None:
        note = (
            "GROWS with the input: the extrapolation to the full pool does not hold"
            if model["worker_memory_grows"]
            else "flat"
        )
        lines.append(f"  SDK worker peak RSS, largest vs smallest size: {model['worker_memory_growth']:+.0%} ({note})")
    lines.append(
        f"  {'machine type':<16} {'vCPU':>4} {'GiB':>6} {'needs':>7} {'fits':>5} {'VM-hours':>9} {'GiB-hours':>10} "
        f"{'VMs for ' + format(model['target_hours'], 'g') + ' h':>11}"
        + ("  {:>9}".format("USD") if "usd" in model["machines"][0] else "")
    )
    for m in model["machines"]:
        lines.append(
            f"  {m['machine_type']:<16} {m['vcpus']:>4} {m['memory_gib']:>6.1f} {m['needed_gib']:>7.1f} "
            f"{'yes' if m['fits'] else 'NO':>5} "
            f"{m['vm_hours']:>9,.0f} {m['gib_hours']:>10,.0f} {m['workers_for_target']:>11,}"
            + (f"  {m['usd']:>9,.0f}" if "usd" in m else "")
        )
    lines.append(
        f"  start-up: one ~2 s automaton build per SDK process, {model['startup_vcpu_hours']:.2f} vCPU-hours "
        f"for {model['sdk_processes_for_target']:,} processes"
    )
    lines.append("  assumptions: " + "; ".join(model["assumptions"]))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from benchmarks.make_pool import parse_count

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "results", nargs="?", default="bench_e2e.json", help="bench_e2e's JSON (default: bench_e2e.json)"
    )
    parser.add_argument(
        "--pool_captions", type=parse_count, default=1_600_000_000, help="captions to curate (default: 1.6B)"
    )
    parser.add_argument("--vm_overhead_gib", type=float, default=1.0, help="operational memory per VM (default: 1.0)")
    parser.add_argument(
        "--target_hours", type=float, default=12.0, help="wall-clock goal for the worker count (default: 12)"
    )
    parser.add_argument(
        "--usd_per_vcpu_hour",
        type=float,
        default=None,
        help="price per vCPU-hour (with --usd_per_gib_hour: print a cost)",
    )
    parser.add_argument("--usd_per_gib_hour", type=float, default=None, help="price per GiB-hour of worker memory")
    parser.add_argument("--json", default=None, help="also write the model as JSON here")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    model = estimate(
        results,
        args.pool_captions,
        args.vm_overhead_gib,
        args.target_hours,
        usd_per_vcpu_hour=args.usd_per_vcpu_hour,
        usd_per_gib_hour=args.usd_per_gib_hour,
    )
    print(format_estimate(model))
    if args.json:
        Path(args.json).write_text(json.dumps(model, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
