"""Matcher throughput, side by side in one run (issue: performance).

    python benchmarks/bench_matcher.py [--captions 100000] [--oracle_captions 20]

(a) EntryMatcher.match_batch, the function the pipeline runs (its default matcher, daachorse);
(b) a raw loop that only spaces each text and iterates a pyahocorasick automaton of the same
    list: the bare loop the performance issues measure against (with daachorse, a/b > 1);
(c) the spec's per-entry substring loop (match_entries_brute_force), on a few captions.
Uses ../shared/bench/metadata_500k.json.gz and the 10k LAION alt-texts, repeated.
Prints captions/s and the ratios a/b and a/c measured in this run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from transforms.core.matching import EntryMatcher, build_automaton, match_entries_brute_force
from transforms.core.spacing import space_text
from transforms.metadata.lists import parse_metadata

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def best_rate(function, texts, repeats: int = 3) -> float:
    """Captions per second, best of `repeats` (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--oracle_captions", type=int, default=20)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()

    entries = parse_metadata((SHARED / "bench" / "metadata_500k.json.gz").read_bytes()).entries
    base = [t for t in pq.read_table(SHARED / "data" / "laion400m_sample_10k.parquet").column("TEXT").to_pylist() if t]
    texts = (base * (args.captions // len(base) + 1))[: args.captions]
    started = time.perf_counter()
    matcher = EntryMatcher(entries)
    print(f"automaton over {len(entries):,} entries built in {time.perf_counter() - started:.2f} s")
    automaton = build_automaton(entries)

    def raw_loop(batch):
        iterate = automaton.iter
        for text in batch:
            for _ in iterate(space_text(text)):
                pass

    rate_a = best_rate(matcher.match_batch, texts)
    rate_b = best_rate(raw_loop, texts)
    rate_c = best_rate(
        lambda batch: [match_entries_brute_force(t, entries) for t in batch], texts[: args.oracle_captions], repeats=1
    )
    print(f"(a) match_batch        {rate_a:>12,.0f} captions/s")
    print(f"(b) raw automaton loop {rate_b:>12,.0f} captions/s")
    print(f"(c) per-entry loop     {rate_c:>12,.1f} captions/s")
    print(f"a/b = {rate_a / rate_b:.2f}   a/c = {rate_a / rate_c:,.0f}")
    if args.json:
        figures = {
            "a_match_batch": rate_a,
            "b_raw_loop": rate_b,
            "c_per_entry_loop": rate_c,
            "a_over_b": rate_a / rate_b,
            "a_over_c": rate_a / rate_c,
            "captions": len(texts),
            "entries": len(entries),
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=1)


if __name__ == "__main__":
    main()
