"""The covariance selection on Dataflow: greedy vCPU-hours, shuffle bytes and worker memory.

    python -m benchmarks.select_cost_model [--scale benchmarks/results/DATE/select_scale_200k.json] \
        [--pools 12.8M,128M] [--fraction 0.1] [--max_class_size 20000] [--classes 1000]

From the greedy's measured cost per pick (bench_selection: 4.5 ms a pick in a part of 10,000
at d = 768, one core: the pick reads the part's embeddings twice, so the cost is linear in
the part size) and the stage's layout (transforms/beam/select.py): parts of at most
`max_class_size` members (a class of n_c splits into ceil(n_c / max) parts), a part of n
members with budget f n costs f n^2 c seconds; the class sums cost 0.22 s per 10,000 rows.
The shuffle (no spill directory on Dataflow) carries each member once as float32 x and y
plus its id and tie key (8 d + 16 bytes), the partial d x d class sums (one per class per
input bundle: combiner lifting; 4.7 MB at d = 768), a picked sum and a float64 class matrix
per part, a pool and a picked sum per class for the figures, and 8 bytes a pick for the
marks. `--scale` files (bench_select_scale) add the measured figures: `cpu = a N + c
sum_parts(f n^2)` is fitted to their 2-worker runs' CPU seconds (every process, the whole
run: reading, normalising, spilling, marking and writing are in a), c too when two pools
were measured, and the projection uses them instead of the defaults.
Assumptions are printed; one Dataflow vCPU is taken as one core of this machine.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

PICK_SECONDS_PER_MEMBER = 4.5e-3 / 10_000  # bench_selection, d = 768, one core
CLASS_SUM_SECONDS_PER_ROW = 0.22 / 10_000
DIM = 768
SUM_BYTES = 2 * 4 * DIM * DIM  # a CrossCovSum on the wire: two 32-bit limbs
MATRIX_BYTES = 8 * DIM * DIM


def _count(text: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def _parts(pool: float, classes: int, max_class_size: int) -> tuple:
    """(parts, part size) for classes of equal size."""
    parts_per_class = max(1, math.ceil(pool / classes / max_class_size))
    return classes * parts_per_class, pool / classes / parts_per_class


def fit_costs(runs: list, fraction: float, max_class_size: int) -> Optional[tuple]:
    """(seconds per row, seconds per member per pick) fitted by least squares to measured runs'
    CPU seconds, cpu = a N + c parts f n^2; from one pool, c is bench_selection's and a the
    rest of the run's CPU per row; None without a measured CPU time."""
    rows = [(r["records_in"], r["classes"], r["cpu_s"]) for r in runs if r.get("cpu_s") and r.get("records_in")]
    if not rows:
        return None
    design, target = [], []
    for n, classes, cpu in rows:
        parts, part = _parts(n, classes, max_class_size)
        design.append((n, parts * fraction * part * part))
        target.append(cpu)
    if len({n for n, _, _ in rows}) < 2:  # one pool: the greedy at bench_selection's cost, a from the rest
        a = sum(t - PICK_SECONDS_PER_MEMBER * g for (_, g), t in zip(design, target, strict=True)) / sum(
            n for n, _ in design
        )
        return float(a), PICK_SECONDS_PER_MEMBER
    (a, c), *_ = np.linalg.lstsq(np.array(design, dtype=float), np.array(target, dtype=float), rcond=None)
    return float(a), float(c)


def project(
    pool: int,
    classes: int,
    fraction: float,
    max_class_size: int,
    rows_per_bundle: int = 10_000,
    costs: Optional[tuple] = None,
) -> dict:
    """Greedy vCPU-hours, class-sum (or, fitted, every other per-row) vCPU-hours, shuffle GB and the
    largest part's memory, for classes of equal size (the worst case for a given class count:
    every part at the cap). `costs`: fit_costs's (per row, per member per pick)."""
    per_row, per_pick = costs or (CLASS_SUM_SECONDS_PER_ROW, PICK_SECONDS_PER_MEMBER)
    parts, part = _parts(pool, classes, max_class_size)
    greedy_s = parts * fraction * part * part * per_pick
    sums_s = pool * per_row
    members = pool * (8 * DIM + 16)
    # Combiner lifting: each input bundle sends one partial d x d sum per class it holds.
    # parts.ClassSumAccumulator sends a bundle's rows of a class as rows while they cost less
    # than the d x d sum, so the partial sums never exceed the members' bytes.
    partial_sums = min(math.ceil(pool / rows_per_bundle) * min(classes, rows_per_bundle) * SUM_BYTES, members)
    # Picked sums and class matrices to the parts; each class's pool and picked sum to the figures.
    per_part = parts * (SUM_BYTES + MATRIX_BYTES) + classes * 2 * SUM_BYTES
    part_memory = part * (2 * 4 * DIM + 2 * 2 * 8 * DIM) + 2 * MATRIX_BYTES  # float32 held, float64 sorted copies
    return {
        "pool": pool,
        "classes": classes,
        "parts": parts,
        "part_size": round(part),
        "greedy_vcpu_hours": round(greedy_s / 3600, 2),
        ("per_row_vcpu_hours" if costs else "class_sum_vcpu_hours"): round(sums_s / 3600, 2),
        "shuffle_members_gb": round(members / 1e9, 1),
        "shuffle_partial_sums_gb": round(partial_sums / 1e9, 1),
        "shuffle_per_part_gb": round(per_part / 1e9, 1),
        "largest_part_gib": round(part_memory / 2**30, 2),
        "picks_side_input_mb": round(8 * fraction * pool / 1e6, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=Path, action="append", default=[])
    parser.add_argument("--pools", default="12.8M,128M")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--max_class_size", type=int, default=20_000)
    parser.add_argument("--classes", default="100,1000")
    parser.add_argument("--rows_per_bundle", type=int, default=10_000)
    args = parser.parse_args(argv)
    print("assumptions: one Dataflow vCPU = one core here; d = 768; equal classes (every part at the cap when")
    print("a class exceeds it); per pick 0.45 us per member of the part (bench_selection, 2026-12-01);")
    print(f"input bundles of {args.rows_per_bundle} rows, each holding min(classes, rows) classes")
    measured_runs = []
    for path in args.scale:
        measured = json.loads(path.read_text())
        for run in measured["runs"]:
            measured_runs.append(run)
            print(
                f"measured {path.name} {run['runner']}: wall {run['wall_s']} s, CPU {run.get('cpu_s')} s,"
                f" launcher {run['peak_rss_main_mib']} MiB, workers {run['peak_rss_workers_mib']} MiB,"
                f" {run['records_in']} rows, {run['parts']} parts"
            )
    costs = fit_costs([r for r in measured_runs if r["runner"] == "2w"], args.fraction, args.max_class_size)
    if costs:
        print(
            f"fitted to the 2-worker runs' CPU: {costs[0] * 1e6:.1f} us a row (everything but the greedy),"
            f" {costs[1] * 1e6:.3f} us per member per pick (default {PICK_SECONDS_PER_MEMBER * 1e6:.2f})"
        )
    for pool in (_count(p) for p in args.pools.split(",")):
        for classes in (int(c) for c in args.classes.split(",")):
            row = project(pool, classes, args.fraction, args.max_class_size, args.rows_per_bundle, costs)
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
