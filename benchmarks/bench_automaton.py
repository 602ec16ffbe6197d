"""The automaton itself, pyahocorasick against ahocorasick-rs, on the 500k benchmark list.

    python -m benchmarks.bench_automaton [--captions 100k] [--json bench_automaton.json]

Both automata hold the padded entries (transforms.core.spacing.pad_entry, " " + entry + " ")
and report overlapping matches, as MetaCLIP needs (nested and overlapping entries all
count): pyahocorasick's Automaton(STORE_INTS).iter, the pipeline's own automaton, and
ahocorasick-rs's AhoCorasick (standard match kind) find_matches_as_indexes(overlapping=True).
Each library is measured in a fresh process, so that one's memory does not hide the other's:

- build time, and memory: the RSS the process gained while building;
- captions/s on real captions (the LAION alt-texts replicated, spaced by
  transforms.core.spacing.space_text): the raw call (iterate / list the matches) and the match
  set the pipeline needs (a set of entry ids), best of 3;
- pickled size and pickling time, then, in another fresh process standing for a worker,
  the time and memory to load that pickle. ahocorasick-rs objects cannot be pickled: the
  failure is recorded (a worker would have to build its own, at the build time above).

Then both automata are built in one process and their match sets compared on every one of
the 10k LAION texts (or, without ../shared, on synthetic captions): captions whose sets
differ are counted and the first few shown.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import psutil

from benchmarks.bench_matcher import best_rate
from benchmarks.make_pool import (
    BENCH_METADATA,
    LAION_SAMPLE,
    PoolSource,
    default_source,
    ensure_synthetic_metadata,
    parse_count,
)
from transforms.core.spacing import pad_entry, space_text
from transforms.metadata.lists import parse_metadata

LIBRARIES = ("pyahocorasick", "ahocorasick-rs")
MIB = 1 << 20


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def build(library: str, padded: Sequence[str], implementation: Optional[str] = None):
    """An automaton over the padded entries, valued / indexed by entry id."""
    if library == "pyahocorasick":
        import ahocorasick

        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for entry_id, entry in enumerate(padded):
            automaton.add_word(entry, entry_id)
        automaton.make_automaton()
        return automaton
    if library == "ahocorasick-rs":
        import ahocorasick_rs

        kwargs = {
            "matchkind": ahocorasick_rs.MATCHKIND_STANDARD,
            "store_patterns": False,
        }  # standard: overlapping allowed
        if implementation:
            kwargs["implementation"] = getattr(ahocorasick_rs.Implementation, implementation)
        return ahocorasick_rs.AhoCorasick(list(padded), **kwargs)
    raise ValueError(f"unknown library {library!r}")


def raw_function(library: str, automaton):
    """Space each text and run the automaton, keeping nothing."""
    if library == "pyahocorasick":
        iterate = automaton.iter

        def run(texts):
            for text in texts:
                for _ in iterate(space_text(text)):
                    pass
    else:
        find = automaton.find_matches_as_indexes

        def run(texts):
            for text in texts:
                find(space_text(text), overlapping=True)

    return run


def match_set_function(library: str, automaton):
    """Text -> the set of matched entry ids (what the pipeline keeps per caption)."""
    if library == "pyahocorasick":
        iterate = automaton.iter
        return lambda text: {entry_id for _, entry_id in iterate(space_text(text))}
    find = automaton.find_matches_as_indexes
    return lambda text: {entry_id for entry_id, _, _ in find(space_text(text), overlapping=True)}


def texts_for(count: int, source: str) -> list:
    return PoolSource(source).texts(count)


def compare_texts(source: str) -> tuple:
    """(label, texts) the match sets are compared on: the LAION sample's texts, every row."""
    if source == "laion" and LAION_SAMPLE.exists():
        import pyarrow.parquet as pq

        texts = [t for t in pq.read_table(LAION_SAMPLE, columns=["TEXT"]).column("TEXT").to_pylist() if t is not None]
        return f"{LAION_SAMPLE.name} ({len(texts):,} texts)", texts
    texts = texts_for(10_000, "synthetic")
    return "10,000 synthetic captions", texts


# --------------------------------------------------------------------------- child processes


def child_measure(
    library: str, metadata: str, captions: int, source: str, pickle_path: str, implementation: Optional[str]
) -> dict:
    padded = [pad_entry(e) for e in parse_metadata(Path(metadata).read_bytes(), metadata).entries]
    texts = texts_for(captions, source)
    before = _rss()
    started = time.perf_counter()
    automaton = build(library, padded, implementation)
    build_s = time.perf_counter() - started
    after = _rss()
    result = {
        "library": library,
        "implementation": implementation or "default",
        "entries": len(padded),
        "build_s": build_s,
        "build_rss_mib": (after - before) / MIB,
        "captions": len(texts),
        "raw_captions_per_s": best_rate(raw_function(library, automaton), texts),
    }
    to_set = match_set_function(library, automaton)
    result["match_set_captions_per_s"] = best_rate(lambda batch: [to_set(t) for t in batch], texts)
    try:
        started = time.perf_counter()
        data = pickle.dumps(automaton, protocol=pickle.HIGHEST_PROTOCOL)
        result["pickle_s"] = time.perf_counter() - started
        result["pickled_mib"] = len(data) / MIB
        result["picklable"] = True
        Path(pickle_path).write_bytes(data)
        result["probe"] = sorted(to_set(texts[0]))
    except Exception as error:  # noqa: BLE001 - the failure is the finding
        result["picklable"] = False
        result["pickle_error"] = f"{type(error).__name__}: {error}"
    return result


def child_load(library: str, pickle_path: str, probe_text: str) -> dict:
    if library == "pyahocorasick":
        import ahocorasick  # noqa: F401 - the worker has the module loaded before the pickle arrives
    data = Path(pickle_path).read_bytes()
    before = _rss()
    started = time.perf_counter()
    automaton = pickle.loads(data)
    load_s = time.perf_counter() - started
    after = _rss()
    return {
        "load_s": load_s,
        "load_rss_mib": (after - before) / MIB,
        "probe": sorted(match_set_function(library, automaton)(probe_text)),
    }


def child_compare(metadata: str, source: str, implementation: Optional[str]) -> dict:
    padded = [pad_entry(e) for e in parse_metadata(Path(metadata).read_bytes(), metadata).entries]
    label, texts = compare_texts(source)
    ours = match_set_function("pyahocorasick", build("pyahocorasick", padded))
    theirs = match_set_function("ahocorasick-rs", build("ahocorasick-rs", padded, implementation))
    differing, examples, matches_ours, matches_theirs, errors = 0, [], 0, 0, []
    for index, text in enumerate(texts):
        a = ours(text)
        try:
            b = theirs(text)
        except Exception as error:  # noqa: BLE001 - a text the library refuses is a difference too
            errors.append({"row": index, "error": f"{type(error).__name__}: {error}"})
            differing += 1
            continue
        matches_ours += len(a)
        matches_theirs += len(b)
        if a != b:
            differing += 1
            if len(examples) < 5:
                only_ours = sorted(a - b)[:5]
                only_theirs = sorted(b - a)[:5]
                examples.append(
                    {
                        "row": index,
                        "text": text[:200],
                        "only_pyahocorasick": [padded[i].strip() for i in only_ours],
                        "only_ahocorasick_rs": [padded[i].strip() for i in only_theirs],
                    }
                )
    return {
        "texts": label,
        "captions": len(texts),
        "differing_captions": differing,
        "matches_pyahocorasick": matches_ours,
        "matches_ahocorasick_rs": matches_theirs,
        "examples": examples,
        "errors": errors[:5],
        "identical": differing == 0,
    }


def _run_child(args: list) -> dict:
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_automaton", *args],
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    if process.returncode != 0:
        raise RuntimeError(f"child {' '.join(args[:2])} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def format_report(results: dict) -> str:
    lines = [
        f"metadata: {results['metadata']} ({results['entries']:,} padded entries); "
        f"captions/s on {results['captions']:,} {results['source']} captions, one core",
        f"{'library':<34} {'build s':>8} {'+RSS MiB':>9} {'pickled MiB':>12} {'load s':>7} {'load +MiB':>10} "
        f"{'raw capt/s':>11} {'set capt/s':>11}",
    ]
    for r in results["libraries"]:
        name = r["library"] + ("" if r["implementation"] == "default" else f" ({r['implementation']})")
        pickled = f"{r['pickled_mib']:,.1f}" if r["picklable"] else "fails"
        load = f"{r['load_s']:.2f}" if r.get("load_s") is not None else "-"
        load_mib = f"{r['load_rss_mib']:,.0f}" if r.get("load_rss_mib") is not None else "-"
        lines.append(
            f"{name:<34} {r['build_s']:>8.2f} {r['build_rss_mib']:>9,.0f} {pickled:>12} {load:>7} {load_mib:>10} "
            f"{r['raw_captions_per_s']:>11,.0f} {r['match_set_captions_per_s']:>11,.0f}"
        )
        if not r["picklable"]:
            lines.append(f"{'':<34} pickle.dumps: {r['pickle_error']}")
    c = results.get("comparison")
    if c:
        verdict = "identical match sets" if c["identical"] else f"{c['differing_captions']:,} captions differ"
        lines.append(
            f"match sets on {c['texts']}: {verdict} (matches: pyahocorasick {c['matches_pyahocorasick']:,}, "
            f"ahocorasick-rs {c['matches_ahocorasick_rs']:,})"
        )
        for example in c["examples"]:
            lines.append(
                f"  row {example['row']}: only pyahocorasick {example['only_pyahocorasick']}, "
                f"only ahocorasick-rs {example['only_ahocorasick_rs']}"
            )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--metadata",
        default=None,
        help="metadata list (default: ../shared/bench/metadata_500k.json.gz, else a synthetic 500k list)",
    )
    parser.add_argument("--captions", type=parse_count, default=100_000, help="captions for the rates (default: 100k)")
    parser.add_argument("--source", choices=("laion", "synthetic"), default=default_source())
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help=f"comma-separated, of {', '.join(LIBRARIES)}")
    parser.add_argument(
        "--rs_implementation",
        default=None,
        choices=("NoncontiguousNFA", "ContiguousNFA", "DFA"),
        help="ahocorasick-rs automaton type (default: the library's choice)",
    )
    parser.add_argument("--no_compare", action="store_true", help="skip the match-set comparison")
    parser.add_argument("--json", default="bench_automaton.json", help="results file (default: bench_automaton.json)")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:
        kind, *rest = args._child
        if kind == "measure":
            out = child_measure(
                rest[0], rest[1], int(rest[2]), rest[3], rest[4], rest[5] if len(rest) > 5 and rest[5] != "-" else None
            )
        elif kind == "load":
            out = child_load(rest[0], rest[1], rest[2])
        else:
            out = child_compare(rest[0], rest[1], rest[2] if len(rest) > 2 and rest[2] != "-" else None)
        print(json.dumps(out))
        return 0

    metadata = args.metadata or (str(BENCH_METADATA) if BENCH_METADATA.exists() else None)
    scratch = Path(tempfile.mkdtemp(prefix="bench_automaton-"))
    try:
        if metadata is None:
            metadata = str(ensure_synthetic_metadata(scratch))
        entries = len(parse_metadata(Path(metadata).read_bytes(), metadata).entries)
        probe_text = texts_for(1, args.source)[0]
        results = {
            "benchmark": "bench_automaton",
            "metadata": metadata,
            "entries": entries,
            "captions": args.captions,
            "source": args.source,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "libraries": [],
        }
        from benchmarks.bench_e2e import load_average, machine_info

        results["machine"] = machine_info()
        results["load_average_before"] = load_average()
        for library in [name.strip() for name in args.libraries.split(",") if name.strip()]:
            implementation = args.rs_implementation if library == "ahocorasick-rs" else None
            pickle_path = scratch / f"{library}.pickle"
            print(f"measuring {library} ...", flush=True)
            result = _run_child(
                [
                    "--_child",
                    "measure",
                    library,
                    metadata,
                    str(args.captions),
                    args.source,
                    str(pickle_path),
                    implementation or "-",
                ]
            )
            if result["picklable"]:
                loaded = _run_child(["--_child", "load", library, str(pickle_path), probe_text])
                result.update(
                    load_s=loaded["load_s"],
                    load_rss_mib=loaded["load_rss_mib"],
                    load_probe_ok=loaded["probe"] == result["probe"],
                )
                pickle_path.unlink()
            results["libraries"].append(result)
        if not args.no_compare:
            print("comparing match sets ...", flush=True)
            results["comparison"] = _run_child(
                ["--_child", "compare", metadata, args.source, args.rs_implementation or "-"]
            )
        results["load_average_after"] = load_average()
        Path(args.json).write_text(json.dumps(results, indent=1))
        print()
        print(format_report(results))
        print(f"\nresults: {args.json}")
        return 0
    finally:
        for leftover in scratch.glob("*"):
            leftover.unlink()
        os.rmdir(scratch)


if __name__ == "__main__":
    sys.exit(main())
