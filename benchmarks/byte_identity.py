"""Every output but the report, byte for byte, from two checkouts: the same curations on every local runner.

    .venv/bin/python benchmarks/byte_identity.py --reference ../wt-ref --work /tmp/byte-identity

Pools are generated once under WORK (tests/datacomp_pool.py, tests/covariance_pool.py and a
JSON Lines pool with a small metadata list); each curation runs with this checkout's and
the reference checkout's `.venv/bin/python -m beam_pipeline.curate` on the in-process,
multi_processing and portable-loopback runners; every file below each output directory
but report.html and plots/ must be the same bytes. Prints one line per run and exits 1 on
any difference. A check between commits, not a test: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

RUNNERS = {
    "direct": [],
    "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    "portable_loopback": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
}
ENTRIES = ["dog", "cat", "hot dog", "red car", "car", "new york", "beach", "sunset", "café", "東京", "coffee", "tree"]
FILLER = ["a", "the", "photo", "of", "with", "and", "in", "my", "old"]
NOT_COMPARED = ("report.html", "plots")


def _jsonl_pool(root: Path) -> list[str]:
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    for name, count in (("a.jsonl", 300), ("b.jsonl", 250)):
        lines = []
        for row in range(count):
            words = rng.choices(FILLER, k=rng.randint(1, 5))
            for _ in range(rng.choice([0, 1, 1, 2])):
                words.insert(rng.randrange(len(words) + 1), ENTRIES[min(int(rng.paretovariate(0.8)) - 1, 11)])
            lines.append(json.dumps({"key": f"{name[0]}-{row:04d}", "text": " ".join(words)}, ensure_ascii=False))
        lines.insert(20, '{"key": "broken", "text": ')
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "metadata.json").write_text(json.dumps(ENTRIES, ensure_ascii=False), encoding="utf-8")
    (root / "worldwide.json").write_text(json.dumps({"en": ENTRIES[:8], "other": ENTRIES[8:]}), encoding="utf-8")
    return [str(root / "*.jsonl")]


def curations(work: Path) -> dict[str, list[str]]:
    from covariance_pool import write_covariance_pool
    from datacomp_pool import write_pool

    jsonl = work / "pools" / "jsonl"
    patterns = _jsonl_pool(jsonl)
    datacomp = write_pool(work / "pools" / "datacomp", rows_per_shard=300)
    covariance = write_covariance_pool(work / "pools" / "covariance", rows=1200)
    inputs = [f for p in patterns for f in ("--input", p)]
    common = ["--num_shards", "3", "--batch_size", "64", "--seed", "11", "--cache_dir", "none", "--progress", "0"]
    dc = ["--input", str(datacomp.directory / "*.parquet"), "--input_preset", "datacomp"]
    cov = ["--input", str(covariance.directory / "*.parquet")]
    return {
        "metaclip1": inputs + ["--metadata", str(jsonl / "metadata.json"), "--threshold", "20"] + common,
        "metaclip2": inputs
        + ["--metadata", str(jsonl / "worldwide.json"), "--mode", "metaclip2", "--threshold", "20"]
        + common,
        "balance_none_select": cov
        + ["--balance", "none", "--select", "covariance", "--select_fraction", "0.3"]
        + ["--class_embeddings", str(covariance.class_embeddings_path)]
        + common,
        "filter_balance_select": dc
        + ["--filter", "basic,clip_score", "--clip_score_fraction", "0.5", "--balance", "metaclip"]
        + ["--metadata", str(jsonl / "metadata.json"), "--threshold", "5"]
        + ["--select", "covariance", "--select_fraction", "0.5", "--image_embedding_key", "l14_img"]
        + common,
        "filter_only": dc + ["--recipe", "datacomp-basic"] + common,
    }


def _run(checkout: Path, argv: list[str], out: Path, python: Path) -> None:
    command = [
        str(python),
        "-m",
        "beam_pipeline.curate",
        *argv,
        "--output_dir",
        str(out),
    ]
    # PYTHONPATH: the checkout's own modules, whatever the venv has installed (editable or not).
    environment = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(checkout)}
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(argv)}\nexit {done.returncode}\n{done.stderr[-3000:]}")


def _files(out: Path) -> set[str]:
    return {
        str(path.relative_to(out))
        for path in out.rglob("*")
        if path.is_file() and path.relative_to(out).parts[0] not in NOT_COMPARED
    }


def differences(reference: Path, ours: Path) -> list[str]:
    """Paths that differ (or exist on one side only), relative to the output directories."""
    left, right = _files(reference), _files(ours)
    differ = sorted(left ^ right)
    differ += [name for name in sorted(left & right) if not filecmp.cmp(reference / name, ours / name, shallow=False)]
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="checkout of the reference commit (its .venv)")
    parser.add_argument(
        "--ours",
        default=REPO,
        type=Path,
        help="the checkout to compare (default: this one; a `git archive` copy of a commit stays still while "
        "this one is edited), run with this checkout's .venv",
    )
    parser.add_argument("--work", required=True, type=Path, help="a scratch directory for pools and outputs")
    parser.add_argument("--only", default=None, help="comma-separated curation names (default: all)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated runners (default: all)")
    args = parser.parse_args()
    runs = curations(args.work)
    names = args.only.split(",") if args.only else list(runs)
    failed = 0
    for name in names:
        for runner in args.runners.split(","):
            argv = runs[name] + RUNNERS[runner]
            outs = {}
            sides = {"reference": args.reference.resolve(), "ours": args.ours.resolve()}
            for side, checkout in sides.items():
                outs[side] = args.work / "out" / f"{name}-{runner}-{side}"
                venv = args.reference.resolve() if side == "reference" else REPO
                _run(checkout, argv, outs[side], venv / ".venv" / "bin" / "python")
            differ = differences(outs["reference"], outs["ours"])
            compared = len(_files(outs["ours"]))
            print(
                f"{name:<24} {runner:<18} {compared:>3} files  " + ("identical" if not differ else f"DIFFER: {differ}")
            )
            failed += bool(differ)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
