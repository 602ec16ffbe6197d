"""Build, check and count for MetaCLIP metadata lists.

    python -m beam_pipeline.metadata build --wordnet [--wordnet_dir DIR] \\
        [--wiki_unigrams F] [--wiki_bigrams F] [--wiki_titles F] --output metadata.json
    python -m beam_pipeline.metadata validate metadata.json
    python -m beam_pipeline.metadata count --input 'text/*.txt' --output_dir counts [Beam options]

Formats, options and exit codes: docs/metadata.md. Bad options or unreadable
inputs print one line `error: ...` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import sys
import zlib
from collections import Counter
from typing import Iterator, Optional, Sequence

from transforms.core.spacing import can_ever_match
from transforms.metadata.checks import check_entries
from transforms.metadata.lists import MetadataError, parse_metadata
from transforms.metadata.sources import (
    NUMBERS,
    SourceEntries,
    SourceError,
    assemble,
    count_line,
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


class UsageError(ValueError):
    """A bad option or input: one line, exit status 2, no traceback.

    The same as beam_pipeline.options.UsageError, which is not imported here:
    that module imports Beam, a second `validate` has no use for.
    """


class _StrictParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


_non_negative.__name__ = "non-negative integer"  # argparse names the type in its message


def parser() -> argparse.ArgumentParser:
    top = _StrictParser(prog="python -m beam_pipeline.metadata", description="Build, check and count for MetaCLIP metadata lists.", allow_abbrev=False)
    commands = top.add_subparsers(dest="command", required=True, parser_class=_StrictParser, metavar="{build,validate,count}")

    build = commands.add_parser("build", help="build a metadata list from WordNet and Wikipedia count files", allow_abbrev=False,
                                description="Build a metadata list the MetaCLIP 1 way; every source is optional, at least one is needed.")
    build.add_argument("--wordnet", action="store_true", help="add \"0\"..\"99\" and every WordNet synset's head name (default: off)")
    build.add_argument("--wordnet_dir", metavar="DIR",
                       help="a WordNet 3.0 database directory (implies --wordnet); default: nltk's wordnet data if installed, else /usr/share/wordnet")
    build.add_argument("--wiki_unigrams", metavar="GLOB", help="`word count` lines (also the word counts of the bigram PMI)")
    build.add_argument("--min_unigram_count", type=_non_negative, metavar="N", default=100, help="keep words counted at least this often (default: 100)")
    build.add_argument("--wiki_bigrams", metavar="GLOB", help="`word1 word2 count` lines; needs --wiki_unigrams")
    build.add_argument("--min_pmi", type=float, metavar="PMI", default=30.0, help="keep bigrams with PMI at least this (default: 30.0)")
    build.add_argument("--min_bigram_count", type=_non_negative, metavar="N", default=1,
                       help="score only bigrams counted at least this often (default: 1, all, as MetaCLIP)")
    build.add_argument("--wiki_titles", metavar="GLOB", help="`title views` lines (page-view totals)")
    build.add_argument("--min_title_views", type=_non_negative, metavar="N", default=70, help="keep titles with at least this many views (default: 70)")
    build.add_argument("--output", required=True, metavar="FILE", help="the metadata list to write (.json, or .json.gz)")
    build.add_argument("--sources_output", metavar="FILE", help="the sidecar naming each entry's source; default: FILE with .json replaced by .sources.json")
    build.set_defaults(func=build_command)

    validate = commands.add_parser("validate", help="report the problems of a metadata list", allow_abbrev=False,
                                   description="Report problems of a metadata list. Exit status: 0 usable (maybe with warnings), "
                                   "1 refused by the curation (ids would be corrupted, or not a JSON list of strings), 2 unreadable.")
    validate.add_argument("metadata", metavar="FILE", help="a JSON list of strings (.gz allowed)")
    validate.add_argument("--examples", type=_non_negative, metavar="N", default=5, help="examples shown per problem (default: 5)")
    validate.set_defaults(func=validate_command)

    count = commands.add_parser("count", help="count unigrams and bigrams of text files with Beam", allow_abbrev=False,
                                description="Count words and adjacent word pairs of text files (one document or sentence a line) "
                                "with Beam; writes the count files `build` reads. Any Beam pipeline option may follow.")
    count.add_argument("--input", action="append", required=True, metavar="GLOB", help="UTF-8 text files (.gz/.bz2 allowed, any Beam filesystem); repeat for more")
    count.add_argument("--output_dir", required=True, metavar="DIR", help="where unigrams-*.txt and bigrams-*.txt go")
    count.add_argument("--min_bigram_count", type=_non_negative, metavar="N", default=1, help="write only bigrams counted at least this often (default: 1, all)")
    count.add_argument("--num_shards", type=_non_negative, metavar="N", default=0, help="files per output; 0 lets the runner choose (default: 0)")
    count.add_argument("--overwrite", action="store_true", help="replace count files already in --output_dir (default: refuse)")
    count.set_defaults(func=count_command)
    return top


# ------------------------------------------------------------------- files


def _match(pattern: str, flag: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # noqa: BLE001 - e.g. gs:// without credentials
        raise UsageError(f"{flag} {pattern!r} cannot be listed: {error}") from None
    if not found:
        raise UsageError(f"{flag} {pattern!r} matches no file")
    return sorted(m.path for m in found)


def _lines(path: str) -> Iterator[str]:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            for number, raw in enumerate(iter(handle.readline, b""), 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise SourceError(f"{path}:{number}: not UTF-8 text") from None
    except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated .gz
        raise SourceError(f"{path} cannot be read: {error}") from None


def _write(path: str, data: bytes) -> bytes:
    """Write through a temporary name, so a failed build leaves no partial file.

    Gzip-compressed when `path` ends with .gz. Returns the bytes written.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: the same list gives the same bytes
    temporary = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    FileSystems.rename([temporary], [path])
    return data


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def sources_path(output: str) -> str:
    """The sidecar's default name: metadata.json -> metadata.sources.json."""
    stem = output[: -len(".gz")] if output.endswith(".gz") else output
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    return stem + ".sources.json"


def metadata_bytes(entries: Sequence[str]) -> bytes:
    """A JSON list, one entry a line: valid JSON, and diffs show changed entries."""
    return ("[\n" + ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries) + "\n]\n").encode("utf-8")


# ------------------------------------------------------------------- build


def _counts(pattern: str, flag: str, num_words: int) -> tuple[Counter, list[str]]:
    paths = _match(pattern, flag)
    total: Counter = Counter()
    for path in paths:
        total.update(read_counts(_lines(path), num_words, path))
    return total, paths


def _sources(args) -> Iterator[SourceEntries]:
    """Each requested source's entries, in MetaCLIP's order."""
    # Every input is located before the slow work starts, so a typo fails at once.
    location = locate_wordnet(args.wordnet_dir) if args.wordnet else None
    for flag in ("wiki_unigrams", "wiki_bigrams", "wiki_titles"):
        if getattr(args, flag):
            _match(getattr(args, flag), f"--{flag}")

    if location:
        yield SourceEntries("numbers", set(NUMBERS), {"input": "the strings 0..99, added with WordNet as MetaCLIP does"})
        with open_wordnet(location) as reader:
            names = wordnet_head_names(reader)
            details = {"input": location.path, "reader": f"nltk ({'its own wordnet data' if location.kind == 'nltk' else 'WordNet database directory'})",
                       "wordnet_version": wordnet_version(reader)}
        yield SourceEntries("wordnet", names, details)
    word_counts = None
    if args.wiki_unigrams:
        word_counts, paths = _counts(args.wiki_unigrams, "--wiki_unigrams", 1)
        yield SourceEntries("wiki_unigrams", select_unigrams(word_counts, args.min_unigram_count),
                            {"input": paths, "distinct_words": len(word_counts), "min_count": args.min_unigram_count})
    if args.wiki_bigrams:
        bigram_counts, paths = _counts(args.wiki_bigrams, "--wiki_bigrams", 2)
        selection = select_bigrams(word_counts, bigram_counts, args.min_pmi, args.min_bigram_count)
        yield SourceEntries("wiki_bigrams", selection.entries, {
            "input": paths, "distinct_bigrams": len(bigram_counts), "scored": selection.scored,
            "left_out_unknown_word": selection.unknown_word, "left_out_below_min_bigram_count": selection.below_min_count,
            "total_words": sum(word_counts.values()), "min_pmi": args.min_pmi, "min_bigram_count": args.min_bigram_count})
    if args.wiki_titles:
        paths = _match(args.wiki_titles, "--wiki_titles")
        views: Counter = Counter()
        for path in paths:
            views.update(read_title_views(_lines(path), path))
        yield SourceEntries("wiki_titles", select_titles(views, args.min_title_views),
                            {"input": paths, "distinct_titles": len(views), "min_views": args.min_title_views})


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
    written = _write(args.output, metadata_bytes(entries))
    sidecar = {
        "metadata": os.path.basename(args.output),
        "metadata_sha256": hashlib.sha256(written).hexdigest(),  # of the file, as `validate` and the curation report it
        "num_entries": len(entries),
        "note": "ids first_id .. first_id + num_entries - 1 come from that source; an entry belongs to the first source that gives it",
        "sources": blocks,
    }
    _write(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))

    print(f"wrote {args.output}: {len(entries):,} entries (sources in {sidecar_path})")
    for block in blocks:
        first, size = block["first_id"], block["num_entries"]
        print(f"  {block['source']:<14} {size:>9,} entries  " + (f"ids {first}..{first + size - 1}" if size else "(all already in earlier sources)"))
    never = [entry for entry in entries if not can_ever_match(entry)]
    if never:
        print(f"note: {len(never):,} entries can never match a caption (e.g. {never[0]!r}); "
              f"`python -m beam_pipeline.metadata validate {args.output}` lists them")
    return 0


# ---------------------------------------------------------------- validate


def _decoded_items(data: bytes):
    """The JSON value of a metadata file's bytes, or None if it does not decode."""
    try:
        return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, EOFError, ValueError, UnicodeDecodeError):
        return None


def validate_command(args, _beam_args) -> int:
    name = args.metadata
    try:
        data = _read_bytes(name)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        parse_metadata(data, name)
        refusal = None
    except MetadataError as error:
        refusal = str(error)  # the curation's own words
    items = _decoded_items(data)
    findings = check_entries(items, args.examples) if isinstance(items, list) else []

    size = f"{len(items):,} entries" if isinstance(items, list) else "not a JSON list"
    print(f"{name}: {size}, sha256 {hashlib.sha256(data).hexdigest()}")
    for finding in findings:
        print(f"{finding.severity}: {finding.message}")
        for example in finding.examples:
            print(f"  {example}")
    warnings = sum(1 for finding in findings if finding.severity == "warning")
    if refusal:
        print(f"INVALID: {refusal}")
        return 1
    print(f"OK with warnings ({warnings} kinds): usable, ids unaffected" if warnings else "OK: no problem found")
    return 0


# ------------------------------------------------------------------- count


def _check_beam_args(beam_args: Sequence[str]) -> None:
    from beam_pipeline.options import beam_option_names

    known = beam_option_names()
    for arg in beam_args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("--") and flag not in known:
            raise UsageError(f"unrecognised option {flag}")


def _clear_outputs(output_dir: str, overwrite: bool) -> None:
    """Old shards would be read with the new ones by a glob: refuse or remove them."""
    from apache_beam.io.filesystems import FileSystems

    old = [m.path for name in ("unigrams", "bigrams") for m in FileSystems.match([FileSystems.join(output_dir, f"{name}-*")])[0].metadata_list]
    if old and not overwrite:
        raise UsageError(f"--output_dir {output_dir} already holds count files ({os.path.basename(old[0])} ...); pass --overwrite to replace them")
    if old:
        FileSystems.delete(old)


def count_command(args, beam_args) -> int:
    _check_beam_args(beam_args)
    for pattern in args.input:
        _match(pattern, "--input")
    if "://" not in args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    _clear_outputs(args.output_dir, args.overwrite)

    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.curation.runners import make_runner

    options = PipelineOptions(list(beam_args))
    pipeline = beam.Pipeline(runner=make_runner(options), options=options)
    build_counts_pipeline(pipeline, args.input, args.output_dir, args.min_bigram_count, args.num_shards)
    pipeline.run().wait_until_finish()
    unigrams, bigrams = (FileSystems.join(args.output_dir, f"{name}-*.txt") for name in ("unigrams", "bigrams"))
    print(f"wrote {unigrams} and {bigrams}")
    print(f"next: python -m beam_pipeline.metadata build --wiki_unigrams '{unigrams}' --wiki_bigrams '{bigrams}' --output metadata.json")
    return 0


def build_counts_pipeline(pipeline, inputs: Sequence[str], output_dir: str, min_bigram_count: int = 1, num_shards: int = 0) -> None:
    """Add to `pipeline`: read `inputs`, count, write unigrams-*.txt and bigrams-*.txt."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from transforms.beam.word_counts import CountWords

    lines = [pipeline | f"Read{i}" >> beam.io.ReadFromText(pattern) for i, pattern in enumerate(inputs)]
    counts = lines | "AllLines" >> beam.Flatten() | "CountWords" >> CountWords(min_bigram_count)
    for name, to_words in (("unigrams", lambda word: (word,)), ("bigrams", lambda pair: pair)):
        (
            counts[name]
            | f"Format{name}" >> beam.MapTuple(lambda key, count, to_words=to_words: count_line(to_words(key), count))
            | f"Write{name}" >> beam.io.WriteToText(FileSystems.join(output_dir, name), file_name_suffix=".txt", num_shards=num_shards)
        )


# -------------------------------------------------------------------- main


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run one subcommand from command-line arguments; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, rest = parser().parse_known_args(argv)
        if rest and args.command != "count":
            raise UsageError(f"unrecognised arguments: {' '.join(rest)}")
        return args.func(args, rest)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run())


if __name__ == "__main__":
    main()
