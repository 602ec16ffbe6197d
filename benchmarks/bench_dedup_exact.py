"""What `--dedup url,text` adds to a MetaCLIP run: wall time with and without it, the same pool,
alternated, as one command (issue 30's target: at most 1.25x, 4M captions, first run, 2 workers).

    python -m benchmarks.bench_dedup_exact [--captions 4M] [--repeats 2] [--work DIR] [--json FILE]

Pool: the synthetic source of benchmarks.make_pool (unique keys and URLs, LAION-like caption
lengths; no ../shared needed) with planted duplicates: a share of the rows (--url_dups,
default 10%) take another row's URL in a variant the url key folds (scheme, `www.`, a
trailing slash, a `utm_` query), and a share (--text_dups, default 5%) take another row's
caption in upper case or with doubled spaces. Metadata: make_pool's synthetic 500k-entry
list. Each run is the command line of benchmarks.processes.curate_command on 2 workers with
an empty --cache_dir (a first run: every worker builds its automaton), every default
output; the two kinds of run alternate (without, with, without, with ...), and the ratio is
the fastest run with dedup over the fastest without, measured in this same session. The
machine may be shared: the figures are noisy, the alternation and the minimum damp it.
No assertion: the figures are printed and saved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.make_pool import PoolSource, ensure_synthetic_metadata, parse_count
from benchmarks.processes import curate_command, load_average, machine_info, run_curation

FILES = 8
ROW_GROUP = 65_536
URL_VARIANTS = ("http://", "https://www.", "http://www.")


def planted_pool(directory: Path, captions: int, url_dups: float, text_dups: float, seed: int = 0) -> dict:
    """The pool (FILES Parquet files: key, text, url) with planted url and text duplicates; its figures."""
    rng = np.random.default_rng(seed)
    table = PoolSource("synthetic", seed).rows(0, captions)
    urls, texts = table.column("url").combine_chunks(), table.column("text").combine_chunks()
    url_rows = np.flatnonzero(rng.random(captions) < url_dups)
    url_from = rng.integers(0, captions, len(url_rows))
    copied = pc.replace_substring(urls.take(pa.array(url_from)), "https://", "").to_pylist()
    variant = rng.integers(0, 4, len(url_rows)).tolist()
    new_urls = [
        (URL_VARIANTS[v] + u) if v < 3 else ("https://" + u + "/?utm_source=bench")
        for u, v in zip(copied, variant, strict=True)
    ]
    text_rows = np.flatnonzero(rng.random(captions) < text_dups)
    text_from = rng.integers(0, captions, len(text_rows))
    copied_texts = texts.take(pa.array(text_from))
    upper = rng.random(len(text_rows)) < 0.5
    new_texts = pc.if_else(pa.array(upper), pc.utf8_upper(copied_texts), pc.replace_substring(copied_texts, " ", "  "))
    url_list, text_list = urls.to_pylist(), texts.to_pylist()
    for row, url in zip(url_rows.tolist(), new_urls, strict=True):
        url_list[row] = url
    for row, text in zip(text_rows.tolist(), new_texts.to_pylist(), strict=True):
        text_list[row] = text
    table = pa.table({"key": table.column("key"), "text": pa.array(text_list), "url": pa.array(url_list)})
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    per_file = -(-captions // FILES)
    for index in range(FILES):
        part = table.slice(index * per_file, per_file)
        pq.write_table(part, directory / f"part-{index:05d}-of-{FILES:05d}.parquet", row_group_size=ROW_GROUP)
    return {"captions": captions, "url_rows_planted": len(url_rows), "text_rows_planted": len(text_rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=parse_count, default=4_000_000, help="pool size (default 4M)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternated (default 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threshold", type=int, default=20_000)
    parser.add_argument("--url_dups", type=float, default=0.10)
    parser.add_argument("--text_dups", type=float, default=0.05)
    parser.add_argument("--work", default=None, help="directory for the pool and outputs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-dedup-"))
    started = time.perf_counter()
    pool = planted_pool(work / "pool", args.captions, args.url_dups, args.text_dups)
    pool["written_s"] = round(time.perf_counter() - started, 1)
    metadata = ensure_synthetic_metadata(work)
    print(f"pool: {pool}", flush=True)
    runs = {"without": [], "with_dedup": []}
    for repeat in range(args.repeats):
        for name, extra in (("without", []), ("with_dedup", ["--dedup", "url,text"])):
            out, cache = work / f"out-{name}-{repeat}", work / f"cache-{name}-{repeat}"
            for path in (out, cache):
                shutil.rmtree(path, ignore_errors=True)
            command = curate_command(
                str(work / "pool" / "*.parquet"),
                str(metadata),
                str(out),
                args.threshold,
                args.workers,
                ["--cache_dir", str(cache), *extra],
            )
            load = load_average()
            result = run_curation(command)
            if result["returncode"] != 0:
                print(result["stderr_tail"])
                return 1
            stats = json.loads((out / "stats.json").read_text())
            figures = {
                "wall_s": result["wall_s"],
                "cpu_s": result["cpu_s"],
                "load_before": load,
                "peak_rss_workers_mib": result["peak_rss_workers_mib"],
                "records_kept": stats["records_kept"],
                "deduplicated_by_kind": stats.get("deduplicated_by_kind"),
            }
            runs[name].append(figures)
            print(f"{name} #{repeat}: {figures}", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    best = {name: min(run["wall_s"] for run in listed) for name, listed in runs.items()}
    summary = {
        "captions": args.captions,
        "workers": args.workers,
        "best_wall_s": best,
        "ratio": round(best["with_dedup"] / best["without"], 3),
        "target": 1.25,
        "pool": pool,
        "runs": runs,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps({k: summary[k] for k in ("captions", "best_wall_s", "ratio", "target")}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
