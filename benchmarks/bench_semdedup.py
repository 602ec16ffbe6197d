"""--dedup semantic at scale: the command line on a generated pool, the assignment against bare numpy,
peak memory per worker, and a projection for a DataComp large pool on Dataflow.

    python -m benchmarks.bench_semdedup --rows 1000000 --dim 768 --clusters 1000 --eps 0.01 \
        --workers 2 --pool /tmp/semdedup_pool --out benchmarks/results/DATE/semdedup_1m.json

(a) Pool. `--rows` records in shards of 10,000 (parquet uid/url/text with an npz beside each,
`l14_img` float16 as DataComp ships it), around `--clusters` directions (cosine to the
direction about 0.5-0.9) with 5% planted near copies of earlier rows; the normalised
directions are the given centroids (float32 .npy). Made once per `--pool` and reused.
(b) Assignment. On the same batches in the same process, one BLAS thread, alternately:
the stage's per-batch step (`semdedup_stage.assign_batch`: float64 normalisation, the image
filter's kernel with its float64 recheck, the similarity, the order bits, the cut into
member blocks) and the bare numpy `(x32 @ c32.T).argmax(1)`: records/s of each, the ratio.
(c) The command line, `--workers` SDK worker processes (OPENBLAS_NUM_THREADS=1 each, so a
worker is a core): wall, records/s per core, the launcher's and each worker's peak RSS
(benchmarks/processes.py), and the run's stats.json `semdedup` figures.
(d) Pairwise rate: `pairwise.earlier_maxima` on one cluster of 4,000 pool rows (pairs/s).
(e) Projection to `--project_rows` (DataComp large: 1.28B) on Dataflow from (b)-(d).

Same-run ratios only; no wall-clock assertion. The machine is shared: times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one core per process, as the workers

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.processes import load_average, machine_info, run_curation
from transforms.dedup.pairwise import earlier_maxima
from transforms.dedup.semdedup import normalise_embeddings, prepare_centroids
from transforms.dedup.semdedup_stage import assign_batch, assigned_clusters, normalised_rows
from transforms.formats.embeddings import as_fixed_size_list

SHARD_ROWS = 10_000
COLUMN = "__embedding.l14_img"
# Dataflow batch list prices (us-central1, 2026 list, assumptions: pass others with the flags).
USD_VCPU_HOUR, USD_GIB_HOUR, USD_SHUFFLE_GB = 0.056, 0.003557, 0.011


def make_pool(directory: Path, rows: int, dim: int, clusters: int, seed: int = 0) -> Path:
    """Shards of SHARD_ROWS records with planted near copies; centroids.npy; made once per directory."""
    done = directory / "DONE"
    if done.exists() and json.loads(done.read_text()) == [rows, dim, clusters, seed]:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(clusters, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    np.save(directory / "centroids.npy", directions.astype(np.float32))
    previous = None
    for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        member = rng.integers(0, clusters, n)
        spread = rng.uniform(0.6, 1.6, size=(n, 1)) / np.sqrt(dim)
        x = directions[member] + spread * rng.normal(size=(n, dim))
        if previous is not None:  # 5% near copies of earlier rows (cosine ~0.995 and closer)
            copies = rng.choice(n, n // 20, replace=False)
            source = previous[rng.integers(0, len(previous), len(copies))]
            x[copies] = source + rng.uniform(0.0, 0.1, size=(len(copies), 1)) / np.sqrt(dim) * rng.normal(
                size=(len(copies), dim)
            ) * np.linalg.norm(source, axis=1, keepdims=True)
        previous = x
        uids = [f"{(seed << 40) + start + i:032x}" for i in range(n)]
        path = directory / f"{shard:08d}.parquet"
        pq.write_table(pa.table({"uid": uids, "url": [f"https://e.x/{u}.jpg" for u in uids], "text": ["a"] * n}), path)
        np.savez(path.with_suffix(".npz"), l14_img=x.astype(np.float16))
    done.write_text(json.dumps([rows, dim, clusters, seed]))
    return directory


def _batches(directory: Path, shards: int):
    for shard, path in enumerate(sorted(directory.glob("*.parquet"))[:shards]):
        uids = pq.read_table(path, columns=["uid"]).column("uid")
        x = np.load(path.with_suffix(".npz"))["l14_img"].astype(np.float32)
        n = len(x)
        yield (
            pa.RecordBatch.from_arrays(
                [
                    uids.combine_chunks(),
                    pa.array(np.full(n, shard, np.int32)),
                    pa.array(np.arange(n)),
                    as_fixed_size_list(x),
                ],
                names=["key", "__source_file", "__source_row", COLUMN],
            ),
            x,
        )


def _assignment(x: np.ndarray, prepared):
    xn, usable = normalised_rows(x)
    return assigned_clusters(xn, prepared, usable)


def assignment(directory: Path, shards: int, seed: int, repeats: int = 2) -> dict:
    """(b): per batch, alternately and best of `repeats`: the bare float32 matmul + argmax; the
    assignment (semdedup_stage.normalised_rows + assigned_clusters: the float64 rows, the
    image filter's kernel with its float64 recheck, the similarity); the whole per-batch step
    (assign_batch: the assignment, the order bits, the cut into member blocks)."""
    prepared = prepare_centroids(np.load(directory / "centroids.npy"))
    c32 = prepared.as_float32
    steps = {
        "bare": lambda batch, x: (x.astype(np.float32) @ c32.T).argmax(axis=1),
        "assignment": lambda batch, x: _assignment(x, prepared),
        "step": lambda batch, x: assign_batch(batch, COLUMN, prepared, seed),
    }
    seconds = dict.fromkeys(steps, 0.0)
    rows = 0
    for batch, x in _batches(directory, shards):
        for name, step in steps.items():
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                step(batch, x)
                best = min(best, time.perf_counter() - t)
            seconds[name] += best
        rows += len(x)
    rates = {f"{name}_records_per_s": rows / s for name, s in seconds.items()}
    return {
        "rows": rows,
        **rates,
        "stage_records_per_s": rates["step_records_per_s"],
        "assignment_ratio": seconds["bare"] / seconds["assignment"],
        "step_ratio": seconds["bare"] / seconds["step"],
    }


def pairwise_rate(directory: Path, n: int = 4000) -> dict:
    """(d): earlier_maxima on one cluster of n rows made as the pool's are (around one of its
    centroids, 5% near copies), float16-rounded as the npz stores them."""
    rng = np.random.default_rng(1)
    direction = np.load(directory / "centroids.npy")[0].astype(np.float64)
    dim = len(direction)
    x = direction + rng.uniform(0.6, 1.6, size=(n, 1)) / np.sqrt(dim) * rng.normal(size=(n, dim))
    copies = rng.choice(np.arange(1, n), n // 20, replace=False)
    x[copies] = x[copies - 1] + 0.05 / np.sqrt(dim) * rng.normal(size=(len(copies), dim)) * np.linalg.norm(
        x[copies - 1], axis=1, keepdims=True
    )
    xs, _ = normalise_embeddings(x.astype(np.float16).astype(np.float32))
    t = time.perf_counter()
    earlier_maxima(xs)
    seconds = time.perf_counter() - t
    return {"members": len(xs), "seconds": seconds, "pairs_per_s": len(xs) * (len(xs) - 1) / 2 / seconds}


def project(rows: int, run_rows: int, sizes: dict, assign: dict, pairs: dict, clusters_options, dim: int) -> list:
    """(e): vCPU-hours, shuffle bytes and cost for `rows` records at several K.

    Assignment: a fixed cost per record (the stage's time less the bare matmul + argmax, both
    measured at the run's K) plus the matmul's, which scales as K; the pairwise work
    as sum n_c^2 / 2, i.e. rows^2 / (2 K) times the unevenness measured in the run
    (sum n_c^2 / (N^2 / K)). Shuffle: each record crosses twice (its member row: float32
    embedding plus ~90 bytes; and its whole batch row for the join: the same embedding plus
    the pool's other columns, ~200 bytes taken here).
    """
    k_run = sizes["clusters"]
    uneven = sizes["sum_sq"] / (run_rows**2 / k_run)
    out = []
    for k in clusters_options:
        bare = 1 / assign["bare_records_per_s"]
        per_record = max(0.0, 1 / assign["stage_records_per_s"] - bare) + bare * k / k_run
        assign_h = rows * per_record / 3600
        pair_h = uneven * rows**2 / (2 * k) / pairs["pairs_per_s"] / 3600
        shuffle_gb = rows * (2 * 4 * dim + 90 + 200) / 1e9
        vcpu_h = assign_h + pair_h
        cost = vcpu_h * USD_VCPU_HOUR + vcpu_h * 3.75 * USD_GIB_HOUR + shuffle_gb * USD_SHUFFLE_GB
        out.append(
            {
                "clusters": k,
                "mean_cluster": rows / k,
                "assign_vcpu_h": round(assign_h, 1),
                "pairwise_vcpu_h": round(pair_h, 1),
                "shuffle_gb": round(shuffle_gb),
                "usd": round(cost),
            }
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", default="/tmp/semdedup_pool")
    parser.add_argument("--assign_shards", type=int, default=10, help="shards timed in (b)")
    parser.add_argument("--project_rows", type=int, default=1_280_000_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    pool = Path(args.pool)
    t = time.perf_counter()
    make_pool(pool, args.rows, args.dim, args.clusters)
    made = time.perf_counter() - t
    result: dict = {"args": vars(args), "machine": machine_info(), "load_before": load_average(), "pool_s": made}
    result["assignment"] = assignment(pool, args.assign_shards, seed=0)
    print("assignment", json.dumps(result["assignment"]), flush=True)
    out_dir = pool.parent / (pool.name + "-out")
    command = [
        sys.executable, "-m", "beam_pipeline.curate", "--input", str(pool / "*.parquet"), "--input_preset", "datacomp",
        "--output_dir", str(out_dir), "--overwrite", "--balance", "none", "--handoff", "none", "--dedup", "semantic",
        "--semdedup_centroids", str(pool / "centroids.npy"), "--semdedup_eps", str(args.eps), "--seed", "0",
    ]  # fmt: skip
    if args.workers:
        command += ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    run = run_curation(command)
    run.pop("samples", None), run.pop("timeline", None)
    result["run"] = run
    result["load_after"] = load_average()
    if run["returncode"] != 0:
        print(run["stderr_tail"], file=sys.stderr)
        return 1
    stats = json.loads((out_dir / "stats.json").read_text())
    sd = stats["semdedup"]
    result["semdedup"] = {k: v for k, v in sd.items() if k != "eps_curve"}
    result["deduplicated"] = stats["records_deduplicated"]
    cores = max(1, args.workers)
    result["records_per_s_per_core"] = args.rows / run["wall_s"] / cores
    scores = pq.read_table(out_dir / "semdedup" / "scores", columns=["cluster"]).column("cluster").to_numpy()
    sizes = np.bincount(scores, minlength=args.clusters)
    result["pairwise"] = pairwise_rate(pool)
    result["projection"] = project(
        args.project_rows, args.rows, {"clusters": args.clusters, "sum_sq": float((sizes.astype(float) ** 2).sum())},
        result["assignment"], result["pairwise"], (50_000, 100_000, 250_000), args.dim,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "run")}, indent=1))
    print("run", json.dumps({k: run[k] for k in ("wall_s", "pipeline_s", "cpu_s", "peak_rss_main_mib")}))
    print("workers' peak RSS MiB", run["peak_rss_workers_mib"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
