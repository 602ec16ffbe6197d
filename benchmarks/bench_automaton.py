"""The automaton itself, pyahocorasick against ahocorasick-rs and daachorse, on the 500k benchmark list.

    python -m benchmarks.bench_automaton [--captions 100k] [--json bench_automaton.json]

Every automaton holds the padded entries (transforms.core.spacing.pad_entry, " " + entry + " ")
and reports overlapping matches, as MetaCLIP needs (nested and overlapping entries all
count): pyahocorasick's Automaton(STORE_INTS).iter, the pipeline's automaton until now;
ahocorasick-rs's AhoCorasick (standard match kind) find_matches_as_indexes(overlapping=True);
daachorse's DoubleArrayAhoCorasick (standard match kind, the default) over the UTF-8
bytes of the padded entries, find_overlapping on the spaced text's UTF-8 bytes, (start, end,
pattern id) tuples: the pipeline's matcher (transforms.core.matching). Each library is measured in a fresh
process, so that one's memory does not hide the other's:

- build time, and memory: the RSS the process gained while building (kept), and the peak
  RSS while building above the RSS before it (Linux's VmHWM, reset just before the build);
- captions/s on real captions (the LAION alt-texts replicated, spaced by
  transforms.core.spacing.space_text): the raw call (iterate / list the matches) and the match
  set the pipeline needs (a set of entry ids), best of 3;
- pickled size and pickling time, then, in another fresh process standing for a worker,
  the time and memory to load that pickle, and a probe: the loaded automaton gives the same
  match sets on the first 5 captions. ahocorasick-rs objects cannot be pickled: the
  failure is recorded (a worker would have to build its own, at the build time above);
- daachorse also has its own format, serialize() -> bytes and deserialize(bytes): its size
  and serialize time, then deserialize time, memory and the same probe in a fresh process.

Then the automata are built in one process and the match sets of each library compared
with pyahocorasick's on every one of the 10k LAION texts (or, without ../shared, on
synthetic captions): captions whose sets differ are counted and the first few shown.
"""

from __future__ import annotations

import argparse
import gc
import importlib
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
from transforms.core.matching import utf8_bytes
from transforms.core.spacing import pad_entry, space_text
from transforms.metadata.lists import parse_metadata

LIBRARIES = ("pyahocorasick", "ahocorasick-rs", "daachorse")
MODULES = {"pyahocorasick": "ahocorasick", "ahocorasick-rs": "ahocorasick_rs", "daachorse": "daachorse"}
PROBE_CAPTIONS = 5  # the captions a loaded automaton must match as the original did
MIB = 1 << 20


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its RSS now; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak() -> Optional[int]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


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
    if library == "daachorse":
        import daachorse

        # The default match kind is the standard one, the only one find_overlapping accepts;
        # a pattern's id is its position in the list, the entry id.
        return daachorse.DoubleArrayAhoCorasick([utf8_bytes(pattern) for pattern in padded])
    raise ValueError(f"unknown library {library!r}")


def raw_function(library: str, automaton):
    """Space each text and run the automaton, keeping nothing."""
    if library == "pyahocorasick":
        iterate = automaton.iter

        def run(texts):
            for text in texts:
                for _ in iterate(space_text(text)):
                    pass
    elif library == "daachorse":
        find = automaton.find_overlapping

        def run(texts):
            for text in texts:
                find(utf8_bytes(space_text(text)))
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
    if library == "daachorse":
        find = automaton.find_overlapping
        return lambda text: {entry_id for _, _, entry_id in find(utf8_bytes(space_text(text)))}
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
    importlib.import_module(MODULES.get(library, "builtins"))  # the import is not part of the build
    before = _rss()
    peak_reset = _reset_peak()
    started = time.perf_counter()
    automaton = build(library, padded, implementation)
    build_s = time.perf_counter() - started
    peak = _peak() if peak_reset else None
    after = _rss()
    result = {
        "library": library,
        "version": _version(library),
        "implementation": implementation or "default",
        "entries": len(padded),
        "build_s": build_s,
        "build_rss_mib": (after - before) / MIB,
        "build_peak_rss_mib": None if peak is None else (peak - before) / MIB,
        "captions": len(texts),
        "raw_captions_per_s": best_rate(raw_function(library, automaton), texts),
    }
    to_set = match_set_function(library, automaton)
    result["match_set_captions_per_s"] = best_rate(lambda batch: [to_set(t) for t in batch], texts)
    result["probe"] = [sorted(to_set(text)) for text in texts[:PROBE_CAPTIONS]]
    result["probe_matches"] = sum(len(ids) for ids in result["probe"])
    try:
        started = time.perf_counter()
        data = pickle.dumps(automaton, protocol=pickle.HIGHEST_PROTOCOL)
        result["pickle_s"] = time.perf_counter() - started
        result["pickled_mib"] = len(data) / MIB
        result["picklable"] = True
        Path(pickle_path).write_bytes(data)
    except Exception as error:  # noqa: BLE001 - the failure is the finding
        result["picklable"] = False
        result["pickle_error"] = f"{type(error).__name__}: {error}"
    if library == "daachorse":  # its own format too: what a cache could store instead of a pickle
        started = time.perf_counter()
        data = automaton.serialize()
        result["serialize_s"] = time.perf_counter() - started
        result["serialized_mib"] = len(data) / MIB
        Path(pickle_path).with_suffix(".serialized").write_bytes(data)
    return result


def _version(library: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def child_load(library: str, path: str, probe_texts: list, how: str = "pickle") -> dict:
    """Load a pickle (or, with how="deserialize", daachorse's own bytes), as a fresh worker would."""
    importlib.import_module(MODULES[library])  # the worker has the module loaded before the bytes arrive
    data = Path(path).read_bytes()
    before = _rss()
    started = time.perf_counter()
    if how == "deserialize":
        automaton = sys.modules["daachorse"].DoubleArrayAhoCorasick.deserialize(data)
    else:
        automaton = pickle.loads(data)
    load_s = time.perf_counter() - started
    after = _rss()
    to_set = match_set_function(library, automaton)
    return {
        "load_s": load_s,
        "load_rss_mib": (after - before) / MIB,
        "probe": [sorted(to_set(text)) for text in probe_texts],
    }


def child_compare(metadata: str, source: str, implementation: Optional[str], libraries: Sequence[str]) -> dict:
    """{library: its match sets against pyahocorasick's on the comparison texts}."""
    padded = [pad_entry(e) for e in parse_metadata(Path(metadata).read_bytes(), metadata).entries]
    label, texts = compare_texts(source)
    ours = match_set_function("pyahocorasick", build("pyahocorasick", padded))
    reference = [ours(text) for text in texts]
    comparisons = {}
    for library in libraries:
        key = library.replace("-", "_")
        theirs = match_set_function(library, build(library, padded, implementation))
        differing, examples, matches_ours, matches_theirs, errors = 0, [], 0, 0, []
        for index, (text, a) in enumerate(zip(texts, reference, strict=True)):
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
                            f"only_{key}": [padded[i].strip() for i in only_theirs],
                        }
                    )
        comparisons[library] = {
            "library": library,
            "texts": label,
            "captions": len(texts),
            "differing_captions": differing,
            "matches_pyahocorasick": matches_ours,
            f"matches_{key}": matches_theirs,
            "examples": examples,
            "errors": errors[:5],
            "identical": differing == 0,
        }
    return comparisons


def comparison_key(library: str) -> str:
    """The results' key of a library's comparison ("comparison" for ahocorasick-rs, as before daachorse)."""
    return "comparison" if library == "ahocorasick-rs" else "comparison_" + library.replace("-", "_")


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
        f"{'library':<34} {'build s':>8} {'+RSS MiB':>9} {'peak MiB':>9} {'pickled MiB':>12} {'pickle s':>9} "
        f"{'load s':>7} {'load +MiB':>10} {'raw capt/s':>11} {'set capt/s':>11}",
    ]
    for r in results["libraries"]:
        name = f"{r['library']} {r.get('version') or ''}".strip()
        name += "" if r["implementation"] == "default" else f" ({r['implementation']})"
        peak = f"{r['build_peak_rss_mib']:,.0f}" if r.get("build_peak_rss_mib") is not None else "-"
        pickled = f"{r['pickled_mib']:,.1f}" if r["picklable"] else "fails"
        pickle_s = f"{r['pickle_s']:.2f}" if r["picklable"] else "-"
        load = f"{r['load_s']:.2f}" if r.get("load_s") is not None else "-"
        load_mib = f"{r['load_rss_mib']:,.0f}" if r.get("load_rss_mib") is not None else "-"
        lines.append(
            f"{name:<34} {r['build_s']:>8.2f} {r['build_rss_mib']:>9,.0f} {peak:>9} {pickled:>12} {pickle_s:>9} "
            f"{load:>7} {load_mib:>10} {r['raw_captions_per_s']:>11,.0f} {r['match_set_captions_per_s']:>11,.0f}"
        )
        if not r["picklable"]:
            lines.append(f"{'':<34} pickle.dumps: {r['pickle_error']}")
        elif r.get("load_probe_ok") is False:
            lines.append(f"{'':<34} the unpickled automaton's match sets DIFFER on the probe captions")
        if r.get("serialize_s") is not None:
            probe = "OK" if r.get("deserialize_probe_ok") else "DIFFERENT match sets"
            lines.append(
                f"{'':<34} serialize(): {r['serialized_mib']:,.1f} MiB in {r['serialize_s']:.2f} s; "
                f"deserialize() in a fresh process: {r['deserialize_s']:.3f} s, +{r['deserialize_rss_mib']:,.0f} MiB, "
                f"probe ({len(r['probe'])} captions, {r['probe_matches']} matches) {probe}"
            )
    for key in sorted(k for k in results if k.startswith("comparison") and results[k]):
        c = results[key]
        library = c.get("library", "ahocorasick-rs")
        theirs = library.replace("-", "_")
        verdict = "identical match sets" if c["identical"] else f"{c['differing_captions']:,} captions differ"
        lines.append(
            f"{library} against pyahocorasick, match sets on {c['texts']}: {verdict} "
            f"(matches: pyahocorasick {c['matches_pyahocorasick']:,}, {library} {c[f'matches_{theirs}']:,})"
        )
        for example in c["examples"]:
            lines.append(
                f"  row {example['row']}: only pyahocorasick {example['only_pyahocorasick']}, "
                f"only {library} {example[f'only_{theirs}']}"
            )
        for error in c["errors"]:
            lines.append(f"  row {error['row']}: {library} failed: {error['error']}")
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
    parser.add_argument(
        "--no_compare",
        action="store_true",
        help="skip the match-set comparison (of each library chosen, else all, against pyahocorasick)",
    )
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
            out = child_load(rest[0], rest[1], json.loads(rest[2]), rest[3] if len(rest) > 3 else "pickle")
        else:
            out = child_compare(rest[0], rest[1], rest[2] if rest[2] != "-" else None, rest[3].split(","))
        print(json.dumps(out))
        return 0

    metadata = args.metadata or (str(BENCH_METADATA) if BENCH_METADATA.exists() else None)
    scratch = Path(tempfile.mkdtemp(prefix="bench_automaton-"))
    try:
        if metadata is None:
            metadata = str(ensure_synthetic_metadata(scratch))
        entries = len(parse_metadata(Path(metadata).read_bytes(), metadata).entries)
        probe_texts = json.dumps(texts_for(min(PROBE_CAPTIONS, args.captions), args.source))
        results = {
            "benchmark": "bench_automaton",
            "metadata": metadata,
            "entries": entries,
            "captions": args.captions,
            "source": args.source,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "libraries": [],
        }
        from benchmarks.processes import load_average, machine_info

        results["machine"] = machine_info()
        results["load_average_before"] = load_average()
        libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
        for library in libraries:
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
                loaded = _run_child(["--_child", "load", library, str(pickle_path), probe_texts])
                result.update(
                    load_s=loaded["load_s"],
                    load_rss_mib=loaded["load_rss_mib"],
                    load_probe_ok=loaded["probe"] == result["probe"],
                )
                pickle_path.unlink()
            serialized_path = pickle_path.with_suffix(".serialized")
            if result.get("serialize_s") is not None:
                loaded = _run_child(["--_child", "load", library, str(serialized_path), probe_texts, "deserialize"])
                result.update(
                    deserialize_s=loaded["load_s"],
                    deserialize_rss_mib=loaded["load_rss_mib"],
                    deserialize_probe_ok=loaded["probe"] == result["probe"],
                )
                serialized_path.unlink()
            results["libraries"].append(result)
        if not args.no_compare:
            others = [name for name in libraries if name != "pyahocorasick"]
            others = others or [name for name in LIBRARIES if name != "pyahocorasick"]
            print(f"comparing match sets ({', '.join(others)} against pyahocorasick) ...", flush=True)
            compared = _run_child(
                ["--_child", "compare", metadata, args.source, args.rs_implementation or "-", ",".join(others)]
            )
            for library, comparison in compared.items():
                results[comparison_key(library)] = comparison
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
