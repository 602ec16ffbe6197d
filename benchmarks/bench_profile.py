"""A daachorse automaton laid out for a profile of captions, against one without.

    python -m benchmarks.bench_profile [--sizes 0,500,2000,5000] [--rounds 6] [--json bench_profile.json]

The 500k benchmark list; the 10k LAION alt-texts split in two: the profile is drawn from
the first half, the match loop (transforms.core.matching.EntryMatcher.match_batch, the
pipeline's) runs over the second, so no caption measured was seen while building. Each
variant is built once (build seconds), then the loop runs `rounds` times over every
variant in turn, so that a machine's drift touches all alike; best and median
captions/s, and the speed-up of each against the unprofiled one. The match sets of
every variant are checked equal to the unprofiled one's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Optional, Sequence

from benchmarks.make_pool import BENCH_METADATA, laion_base
from transforms.core.matching import EntryMatcher
from transforms.metadata.lists import parse_metadata


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,500,2000,5000", help="profile sizes in captions (0: no profile)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", default="bench_profile.json")
    args = parser.parse_args(argv)
    entries = parse_metadata(BENCH_METADATA.read_bytes(), str(BENCH_METADATA)).entries
    texts = [text or "" for text in laion_base().column("text").to_pylist()]
    half = len(texts) // 2
    profile_pool, measured = texts[:half], texts[half:]
    variants, results = {}, {"date": time.strftime("%Y-%m-%d"), "measured_captions": len(measured), "variants": {}}
    for size in (int(text) for text in args.sizes.split(",")):
        started = time.perf_counter()
        variants[size] = EntryMatcher(entries, "daachorse", profile=profile_pool[:size])
        results["variants"][size] = {"build_s": round(time.perf_counter() - started, 2), "rates": []}
    reference = variants[min(variants)].match_batch(measured)
    for size, matcher in variants.items():
        offsets, flat = matcher.match_batch(measured)
        if not ((offsets == reference[0]).all() and (flat == reference[1]).all()):
            raise SystemExit(f"a profile of {size} captions changed the match sets")
    for _ in range(args.rounds):
        for size, matcher in variants.items():
            started = time.perf_counter()
            matcher.match_batch(measured)
            results["variants"][size]["rates"].append(len(measured) / (time.perf_counter() - started))
    base = statistics.median(results["variants"][min(variants)]["rates"])
    for size, row in results["variants"].items():
        row["best"], row["median"] = round(max(row["rates"])), round(statistics.median(row["rates"]))
        row["speedup_median"] = round(statistics.median(row["rates"]) / base, 3)
        row["rates"] = [round(rate) for rate in row["rates"]]
        print(
            f"profile {size:>5} captions: build {row['build_s']:.2f} s, match loop {row['median']:,} captions/s "
            f"(best {row['best']:,}), x{row['speedup_median']:.2f}",
            flush=True,
        )
    with open(args.json, "w") as handle:
        json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
