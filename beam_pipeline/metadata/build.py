"""`build`: a metadata list the MetaCLIP 1 way, from WordNet and Wikipedia count files."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from typing import Iterator

from beam_pipeline.metadata.files import (
    UsageError,
    match_paths,
    metadata_bytes,
    read_lines,
    sources_path,
    write_file,
)
from transforms.core.spacing import can_ever_match
from transforms.metadata.sources import (
    NUMBERS,
    SourceEntries,
    SourceError,
    assemble,
    locate_wordnet,
    open_wordnet,
    read_counts,
    read_title_views,
    select_bigrams,
    select_titles,
    select_unigrams,
    wordnet_head_names,
    wordnet_version,
)


def _counts(pattern: str, flag: str, num_words: int) -> tuple[Counter, list[str]]:
    paths = match_paths(pattern, flag)
    total: Counter = Counter()
    for path in paths:
        total.update(read_counts(read_lines(path), num_words, path))
    return total, paths


def _sources(args) -> Iterator[SourceEntries]:
    """Each requested source's entries, in MetaCLIP's order."""
    # Every input is located before the slow work starts, so a typo fails at once.
    location = locate_wordnet(args.wordnet_dir) if args.wordnet else None
    for flag in ("wiki_unigrams", "wiki_bigrams", "wiki_titles"):
        if getattr(args, flag):
            match_paths(getattr(args, flag), f"--{flag}")

    if location:
        yield SourceEntries(
            "numbers", set(NUMBERS), {"input": "the strings 0..99, added with WordNet as MetaCLIP does"}
        )
        with open_wordnet(location) as reader:
            names = wordnet_head_names(reader)
            details = {
                "input": location.path,
                "reader": (
                    f"nltk ({'its own wordnet data' if location.kind == 'nltk' else 'WordNet database directory'})"
                ),
                "wordnet_version": wordnet_version(reader),
            }
        yield SourceEntries("wordnet", names, details)
    word_counts = None
    if args.wiki_unigrams:
        word_counts, paths = _counts(args.wiki_unigrams, "--wiki_unigrams", 1)
        yield SourceEntries(
            "wiki_unigrams",
            select_unigrams(word_counts, args.min_unigram_count),
            {"input": paths, "distinct_words": len(word_counts), "min_count": args.min_unigram_count},
        )
    if args.wiki_bigrams:
        bigram_counts, paths = _counts(args.wiki_bigrams, "--wiki_bigrams", 2)
        selection = select_bigrams(word_counts, bigram_counts, args.min_pmi, args.min_bigram_count)
        yield SourceEntries(
            "wiki_bigrams",
            selection.entries,
            {
                "input": paths,
                "distinct_bigrams": len(bigram_counts),
                "scored": selection.scored,
                "left_out_unknown_word": selection.unknown_word,
                "left_out_below_min_bigram_count": selection.below_min_count,
                "total_words": sum(word_counts.values()),
                "min_pmi": args.min_pmi,
                "min_bigram_count": args.min_bigram_count,
            },
        )
    if args.wiki_titles:
        paths = match_paths(args.wiki_titles, "--wiki_titles")
        views: Counter = Counter()
        for path in paths:
            views.update(read_title_views(read_lines(path), path))
        yield SourceEntries(
            "wiki_titles",
            select_titles(views, args.min_title_views),
            {"input": paths, "distinct_titles": len(views), "min_views": args.min_title_views},
        )


def _why_none(block: dict) -> str:
    """Why a source added no entry, from its sidecar block."""
    if not block["selected"]:
        return "(none passed the thresholds)"
    if not block["dropped_empty_or_punctuation"]:
        return "(all already in earlier sources)"
    if not block["already_in_earlier_source"]:
        return "(all empty or punctuation)"
    return "(all empty, punctuation or already in earlier sources)"


def build_command(args, _beam_args) -> int:
    args.wordnet = args.wordnet or bool(args.wordnet_dir)
    if not (args.wordnet or args.wiki_unigrams or args.wiki_bigrams or args.wiki_titles):
        raise UsageError("build needs at least one source: --wordnet, --wiki_unigrams, --wiki_bigrams or --wiki_titles")
    if args.wiki_bigrams and not args.wiki_unigrams:
        raise UsageError("--wiki_bigrams needs --wiki_unigrams: the bigram PMI uses the word counts")
    sidecar_path = args.sources_output or sources_path(args.output)
    if sidecar_path == args.output:
        raise UsageError("--sources_output must differ from --output")
    for path in (args.output, sidecar_path):
        folder = os.path.dirname(path)
        if "://" not in path and folder and not os.path.isdir(folder):
            raise UsageError(f"cannot write {path}: folder {folder} does not exist")
    try:
        entries, blocks = assemble(_sources(args))
    except SourceError as error:
        raise UsageError(str(error)) from None
    if not entries:
        raise UsageError("no entry passed the thresholds: nothing to write")
    written = write_file(args.output, metadata_bytes(entries))
    sidecar = {
        "metadata": os.path.basename(args.output),
        "metadata_sha256": hashlib.sha256(written).hexdigest(),  # of the file, as `validate` and the curation report it
        "num_entries": len(entries),
        "note": (
            "ids first_id .. first_id + num_entries - 1 come from that source; "
            "an entry belongs to the first source that gives it"
        ),
        "sources": blocks,
    }
    write_file(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))

    print(f"wrote {args.output}: {len(entries):,} entries (sources in {sidecar_path})")
    for block in blocks:
        first, size = block["first_id"], block["num_entries"]
        print(
            f"  {block['source']:<14} {size:>9,} entries  "
            + (f"ids {first}..{first + size - 1}" if size else _why_none(block))
        )
    never = [entry for entry in entries if not can_ever_match(entry)]
    if never:
        print(
            f"note: {len(never):,} entries can never match a caption (e.g. {never[0]!r}); "
            f"`python -m beam_pipeline.metadata validate {args.output}` lists them"
        )
    return 0
