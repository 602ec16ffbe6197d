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
import logging
import sys
from typing import Optional, Sequence

from beam_pipeline.metadata.build import build_command
from beam_pipeline.metadata.count import count_command
from beam_pipeline.metadata.files import UsageError
from beam_pipeline.metadata.validate import validate_command


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
    top = _StrictParser(
        prog="python -m beam_pipeline.metadata",
        description="Build, check and count for MetaCLIP metadata lists.",
        allow_abbrev=False,
    )
    commands = top.add_subparsers(
        dest="command", required=True, parser_class=_StrictParser, metavar="{build,validate,count}"
    )

    build = commands.add_parser(
        "build",
        help="build a metadata list from WordNet and Wikipedia count files",
        allow_abbrev=False,
        description="Build a metadata list the MetaCLIP 1 way; every source is optional, at least one is needed.",
    )
    build.add_argument(
        "--wordnet", action="store_true", help='add "0".."99" and every WordNet synset\'s head name (default: off)'
    )
    build.add_argument(
        "--wordnet_dir",
        metavar="DIR",
        help=(
            "a WordNet 3.0 database directory (implies --wordnet); "
            "default: nltk's wordnet data if installed, else /usr/share/wordnet"
        ),
    )
    build.add_argument(
        "--wiki_unigrams", metavar="GLOB", help="`word count` lines (also the word counts of the bigram PMI)"
    )
    build.add_argument(
        "--min_unigram_count",
        type=_non_negative,
        metavar="N",
        default=100,
        help="keep words counted at least this often (default: 100)",
    )
    build.add_argument("--wiki_bigrams", metavar="GLOB", help="`word1 word2 count` lines; needs --wiki_unigrams")
    build.add_argument(
        "--min_pmi", type=float, metavar="PMI", default=30.0, help="keep bigrams with PMI at least this (default: 30.0)"
    )
    build.add_argument(
        "--min_bigram_count",
        type=_non_negative,
        metavar="N",
        default=1,
        help="score only bigrams counted at least this often (default: 1, all, as MetaCLIP)",
    )
    build.add_argument("--wiki_titles", metavar="GLOB", help="`title views` lines (page-view totals)")
    build.add_argument(
        "--min_title_views",
        type=_non_negative,
        metavar="N",
        default=70,
        help="keep titles with at least this many views (default: 70)",
    )
    build.add_argument(
        "--output", required=True, metavar="FILE", help="the metadata list to write (.json, or .json.gz)"
    )
    build.add_argument(
        "--sources_output",
        metavar="FILE",
        help="the sidecar naming each entry's source; default: FILE with .json replaced by .sources.json",
    )
    build.set_defaults(func=build_command)

    validate = commands.add_parser(
        "validate",
        help="report the problems of a metadata list",
        allow_abbrev=False,
        description="Report problems of a metadata list. Exit status: 0 usable (maybe with warnings), "
        "1 refused by the curation (ids would be corrupted, or not a JSON list of strings), 2 unreadable.",
    )
    validate.add_argument("metadata", metavar="FILE", help="a JSON list of strings (.gz allowed)")
    validate.add_argument(
        "--examples", type=_non_negative, metavar="N", default=5, help="examples shown per problem (default: 5)"
    )
    validate.set_defaults(func=validate_command)

    count = commands.add_parser(
        "count",
        help="count unigrams and bigrams of text files with Beam",
        allow_abbrev=False,
        description="Count words and adjacent word pairs of text files (one document or sentence a line) "
        "with Beam; writes the count files `build` reads. Any Beam pipeline option may follow.",
    )
    count.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="GLOB",
        help="UTF-8 text files (.gz/.bz2 allowed, any Beam filesystem); repeat for more",
    )
    count.add_argument("--output_dir", required=True, metavar="DIR", help="where unigrams-*.txt and bigrams-*.txt go")
    count.add_argument(
        "--min_bigram_count",
        type=_non_negative,
        metavar="N",
        default=1,
        help="write only bigrams counted at least this often (default: 1, all)",
    )
    count.add_argument(
        "--num_shards",
        type=_non_negative,
        metavar="N",
        default=0,
        help="files per output; 0 lets the runner choose (default: 0)",
    )
    count.add_argument(
        "--overwrite", action="store_true", help="replace count files already in --output_dir (default: refuse)"
    )
    count.set_defaults(func=count_command)
    return top


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
