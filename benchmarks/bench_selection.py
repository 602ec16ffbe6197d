"""Cross-covariance selection: the greedy's cost per class size, and the large-class split's approximation.

    python -m benchmarks.bench_selection [--sizes 10000,50000,200000] [--dim 768] [--picks 300] [--out FILE]

(a) Cost. For each class size n at dimension d, on random normalised embeddings: the exact
class sum (CrossCovSum), then `greedy_select` for `--picks` picks, timed; a pick costs
O(n d) (two mat-vecs), so the class's greedy at budget k = 0.3 n costs about k times the
measured time per pick. Classes up to `--full_up_to` rows are also run to the end, to
check the projection.
(b) Approximation. On planted pools (the structure of tests/covariance_pool.py) of classes
that fit both ways, the exact greedy against the split into parts of a few sizes
(`select_in_memory(max_class_size=...)`, the first round of GreeDi): the ratio of the
objectives F, the residual ||T - C_S||_F of each, and the overlap of the kept sets. A
random subset of the same size is the floor.

Prints a table and writes JSON (`--out`). Same-run figures only; no wall-clock assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from transforms.core.hashing import key_hashes
from transforms.selection.covariance import CrossCovSum, greedy_select, normalise_rows, objective, tie_keys
from transforms.selection.local import select_in_memory


def _unit_rows(rng, n: int, d: int) -> np.ndarray:
    return normalise_rows(rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(1, d)))


def cost(n: int, d: int, picks: int, full: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x, y = _unit_rows(rng, n, d), _unit_rows(rng, n, d)
    ties = tie_keys(np.arange(n, dtype=np.uint64), 0)
    started = time.perf_counter()
    class_sum = CrossCovSum().add_batch(x, y)
    matrix = class_sum.matrix()
    sum_seconds = time.perf_counter() - started
    budget = round(0.3 * n)
    timed = min(picks, budget)
    started = time.perf_counter()
    greedy_select(x, y, matrix, n, timed, ties)
    seconds = time.perf_counter() - started
    figures = {
        "n": n,
        "d": d,
        "budget": budget,
        "class_sum_s": round(sum_seconds, 3),
        "picks_timed": timed,
        "greedy_s_for_timed_picks": round(seconds, 3),
        "s_per_pick": seconds / timed,
        "projected_greedy_s": round(seconds / timed * budget, 1),
    }
    if full and timed < budget:
        started = time.perf_counter()
        greedy_select(x, y, matrix, n, budget, ties)
        figures["measured_full_greedy_s"] = round(time.perf_counter() - started, 1)
    return figures


def _planted(rng, n: int, d: int, classes: int = 1):
    directions = rng.normal(size=(classes, d))
    members = rng.integers(0, classes, size=n)
    x = directions[members] + 0.6 * rng.normal(size=(n, d))
    y = x + 0.5 * rng.normal(size=(n, d))
    wrong = rng.random(n) < 0.15
    y[wrong] = rng.normal(size=(int(wrong.sum()), d))
    return x, y


def approximation(n: int, d: int, caps: list[int], seed: int = 0, fraction: float = 0.3) -> list[dict]:
    rng = np.random.default_rng(seed)
    x, y = _planted(rng, n, d)
    hashes = key_hashes([f"k{i}" for i in range(n)])
    xq, yq = normalise_rows(x), normalise_rows(y)
    pool = CrossCovSum().add_batch(xq, yq).matrix()

    def scored(kept: np.ndarray) -> tuple[float, float]:
        target = pool * len(kept) / n
        chosen = xq[kept].T @ yq[kept]
        return objective(target, chosen), float(np.linalg.norm(target - chosen))

    exact = select_in_memory(hashes, x, y, fraction, seed).kept
    f_exact, r_exact = scored(exact)
    random_kept = np.sort(rng.choice(n, size=len(exact), replace=False))
    f_random, r_random = scored(random_kept)
    rows = []
    for cap in caps:
        split = select_in_memory(hashes, x, y, fraction, seed, max_class_size=cap).kept
        f_split, r_split = scored(split)
        rows.append(
            {
                "n": n,
                "d": d,
                "part_size": cap,
                "parts": -(-n // cap),
                "objective_ratio_split": round(f_split / f_exact, 5),
                "objective_ratio_random": round(f_random / f_exact, 5),
                "residual_exact": round(r_exact, 3),
                "residual_split": round(r_split, 3),
                "residual_random": round(r_random, 3),
                "overlap_with_exact": round(len(np.intersect1d(split, exact)) / len(exact), 4),
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--picks", type=int, default=300)
    parser.add_argument("--full_up_to", type=int, default=10000, help="run the whole greedy for classes this small")
    parser.add_argument("--approximation", default="2000:64:1000,500,200;5000:128:2500,1000,500")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "cost": [],
        "approximation": [],
    }
    for n in (int(size) for size in args.sizes.split(",")):
        row = cost(n, args.dim, args.picks, full=n <= args.full_up_to)
        results["cost"].append(row)
        print(json.dumps(row), flush=True)
    for spec in args.approximation.split(";"):
        n, d, caps = spec.split(":")
        for row in approximation(int(n), int(d), [int(c) for c in caps.split(",")]):
            results["approximation"].append(row)
            print(json.dumps(row), flush=True)
    results["load_average_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
