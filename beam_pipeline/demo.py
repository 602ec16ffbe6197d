"""A real curation on a generated pool: `make demo` runs this.

    python -m beam_pipeline.demo --output_dir demo_output [--captions 200000] [--threshold 1000]

It writes a metadata list (English head words, generated tail words and
two-word entries) and a caption pool whose word use follows a Zipf law, so a
few entries are in most captions and most entries in a handful, then runs the
curation pipeline on it and shows the head being capped at t while the tail is
kept whole. Then it runs a small DataComp-style scene (parquet shards with .npz CLIP
embeddings, beam_pipeline/demo_scene.py) through the whole chain, a --where, DataComp's
CLIP-score filter, MetaCLIP balancing and the covariance selection, and prints what each
stage took, from the run's stats.json accounting. Everything is seeded: two runs print the
same figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipeline import curate
from beam_pipeline.demo_scene import scene_flags, write_scene
from beam_pipeline.report.funnel import funnel_steps

HEAD_WORDS = (
    "photo dog cat car man woman house tree flower beach city street food table girl boy bird "
    "water sky dress shirt logo book chair bed kitchen garden mountain horse cake shoes"
).split()
TEMPLATES = (
    "a photo of {0}",
    "{0} and {1}",
    "{0} with {1} near the {2}",
    "close-up of {0}, {1}.",
    "{0} on {1}; {2} in the background",
    "vintage {0} poster: {1}!",
    "{0} {1} {2} {3}",
)
_ONSETS = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl st tr".split()
_VOWELS = "a e i o u ai ea oo".split()


def tail_words(count: int, rng: random.Random) -> list[str]:
    """Distinct pronounceable made-up words, in a seeded order."""
    syllables = [onset + vowel for onset in _ONSETS for vowel in _VOWELS]
    words = sorted(
        {a + b for a, b in itertools.product(syllables, repeat=2)}
        | {a + b + c for a, b, c in itertools.product(syllables[:40], repeat=3)}
    )
    rng.shuffle(words)
    return words[:count]


def make_demo_data(
    directory: Path, captions: int, shards: int = 8, vocabulary: int = 8000, seed: int = 7
) -> tuple[Path, Path]:
    """Write metadata.json and pool/part-*.jsonl under `directory`; return their paths."""
    rng = random.Random(seed)
    words = HEAD_WORDS + [w for w in tail_words(vocabulary, rng) if w not in HEAD_WORDS][: vocabulary - len(HEAD_WORDS)]
    bigrams = [f"{words[i]} {words[i + 1]}" for i in range(0, 400, 2)]
    metadata = words + bigrams
    directory.mkdir(parents=True, exist_ok=True)
    metadata_path = directory / "metadata.json"
    metadata_path.write_text(json.dumps(metadata))

    # Zipf(1.5) word ranks: the heavy head and long tail of web alt-text.
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    weights = ranks**-1.5
    cumulative = np.cumsum(weights / weights.sum())
    np_rng = np.random.default_rng(seed)
    pool = directory / "pool"
    pool.mkdir(exist_ok=True)
    for old in pool.glob("part-*.jsonl"):
        old.unlink()
    per_shard = -(-captions // shards)
    for shard in range(shards):
        rows = []
        start = shard * per_shard
        for i in range(start, min(start + per_shard, captions)):
            template = TEMPLATES[i % len(TEMPLATES)]
            picks = np.searchsorted(cumulative, np_rng.random(4))
            if i % 50 == 0:  # some captions name a two-word entry
                picks[0] = 2 * (i // 50 % 200)
                text = template.format(bigrams[i // 50 % 200], *(words[p] for p in picks[1:]))
            else:
                text = template.format(*(words[p] for p in picks))
            rows.append(json.dumps({"key": f"{i:08d}", "text": text, "url": f"https://img.example/{i:08d}.jpg"}))
        if shard == 0:  # web pools have broken rows: they go to rejected/
            rows += ['{"key": "broken-1", "text": null}', '{"key": "broken-2"}', "{not json"]
        (pool / f"part-{shard:05d}.jsonl").write_text("\n".join(rows) + "\n")
    return metadata_path, pool


def entry_table(
    output_dir: Path, metadata_path: Path, threshold: int
) -> tuple[list[tuple[str, int, int]], float, float]:
    """Rows (entry, captions, kept captions) for the biggest head entries and a
    few tail entries, and the share of matches in head entries before and after."""
    counts = json.loads((output_dir / "entry_counts.json").read_text())
    entries = json.loads(metadata_path.read_text())
    before = np.array([counts[entry] for entry in entries])
    matches = pq.read_table(output_dir / "matches")
    kept_keys = pq.read_table(output_dir / "subset", columns=["key"]).column("key")
    kept = matches.filter(pc.is_in(matches.column("key"), value_set=kept_keys))
    after = np.bincount(kept.column("entry_ids").combine_chunks().flatten().to_numpy(), minlength=len(entries))
    order = np.argsort(-before, kind="stable")
    tail = [i for i in order if 0 < before[i] <= threshold // 2][:3]
    rows = [(entries[i], int(before[i]), int(after[i])) for i in list(order[:6]) + tail]
    head = before > threshold
    return rows, before[head].sum() / before.sum(), after[head].sum() / after.sum()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output_dir", default="demo_output", help="where the data and the curation go (default: demo_output)"
    )
    parser.add_argument("--captions", type=int, default=200_000, help="captions to generate (default: 200000)")
    parser.add_argument("--threshold", type=int, default=500, help="t for the curation (default: 500)")
    args, beam_args = parser.parse_known_args(argv)

    directory = Path(args.output_dir)
    metadata_path, pool = make_demo_data(directory, args.captions)
    print(
        f"generated {args.captions:,} captions in {pool}/ and {metadata_path} "
        f"({len(json.loads(metadata_path.read_text())):,} entries)"
    )
    curated = directory / "curated"
    status = curate.run(
        [
            "--input",
            str(pool / "part-*.jsonl"),
            "--metadata",
            str(metadata_path),
            "--threshold",
            str(args.threshold),
            "--output_dir",
            str(curated),
            "--overwrite",
            *beam_args,
        ]
    )
    if status:
        return status
    rows, head_before, head_after = entry_table(curated, metadata_path, args.threshold)
    print(f"\nhead entries (count > t = {args.threshold}) are sampled down, tail entries kept whole:")
    print(f"  {'entry':<14} {'captions':>9} {'p_e':>7} {'kept':>7}")
    for entry, before, kept in rows:
        print(f"  {entry:<14} {before:>9,} {min(1.0, args.threshold / before):>7.3f} {kept:>7,}")
    print("  (a kept caption counts for every entry it matches, so a head entry keeps more than t")
    print("   when its captions also name tail entries: MetaCLIP's 1 - prod(1 - p_e))")
    stats = json.loads((curated / "stats.json").read_text())
    print(
        f"\nhead entries held {head_before:.0%} of all matches before curation, {head_after:.0%} after; "
        f"kept {stats['records_kept']:,} of {stats['records_accepted']:,} captions."
    )
    print(f"outputs: {curated}/ (entry_counts.json, matches/, subset/, rejected/, stats.json)")
    return run_chain_scene(directory / "datacomp_scene", beam_args)


def run_chain_scene(directory: Path, beam_args: list[str]) -> int:
    """The DataComp-style scene through filters, balancing and selection; prints each stage's share."""
    scene = write_scene(directory, HEAD_WORDS[:12] + tail_words(300, random.Random(11)))
    print(f"\ngenerated a DataComp-style pool of {scene.records:,} records in {scene.pool}/ (parquet + npz)")
    curated = directory / "curated"
    status = curate.run([*scene_flags(scene, curated), *beam_args])
    if status:
        return status
    stats = json.loads((curated / "stats.json").read_text())
    print("\nwhere the records went, stage by stage (stats.json's accounting):")
    for step in funnel_steps(stats):
        taken = f"-{step.dropped:,}" if step.dropped else ""
        print(f"  {step.label:<32} {taken:>7} {step.left:>7,} left")
    print(f"report: {curated / 'report.html'} (the same funnel at its top, then each stage's section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
