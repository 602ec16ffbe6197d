"""Command-line options of a curation run, each checked where it is declared.

`parse_curation_args` parses them once, strictly, into a frozen `CurationArgs`:
a bad value or an unknown flag stops the run at once with one line naming it.
`CurationOptions` declares the same flags to Beam, so that Dataflow Flex
Templates and every runner accept them; Beam carries their raw strings.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from typing import Callable, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.option_checks import (
    BadValue,
    UsageError,
    boolean,
    column_names,
    handoff_list,
    integer,
    non_blank,
    seconds,
)
from beam_pipeline.stage_options import add_stage_arguments, expand_recipe
from beam_pipeline.stages import check_stage_arguments
from transforms.core.matching import MATCHERS, PYAHOCORASICK
from transforms.formats.layout import FORMATS, PRESETS

MODES = ("metaclip1", "metaclip2")
DEFAULT_SAMPLES_PER_SHARD = 10000


def add_curation_arguments(parser, checked: bool = True) -> None:
    """The curation's own options (Beam's options come on top).

    `checked=False` declares the flags without their value checks: Beam's parser
    (CurationOptions) must carry the raw strings, since it hands every option to
    the workers and the job service, which only take plain strings and numbers.
    """

    def add(group, flag: str, check: Optional[Callable] = None, **kwargs) -> None:
        group.add_argument(flag, type=check if checked else None, **kwargs)

    inputs = parser.add_argument_group("input")
    add(
        inputs,
        "--input",
        action="append",
        default=None,
        metavar="GLOB",
        help="caption files: a path, glob or brace pattern ({000000..000099}.tar), local or any Beam filesystem "
        "(gs://, s3://); repeat for more",
    )
    add(
        inputs,
        "--input_format",
        default=None,
        choices=FORMATS,
        help="format of every input file; default: from the file extension (.jsonl/.json, .parquet, .tsv, .csv, "
        "optionally compressed; .tar: webdataset)",
    )
    add(
        inputs,
        "--input_preset",
        default=None,
        choices=PRESETS,
        help="column names of a known pool: datacomp (uid, url, text; webdataset shards: .txt, uid and url in .json) "
        "or img2dataset (url/caption or URL/TEXT); explicit --text_field/--key_field/--url_field win",
    )
    add(
        inputs,
        "--text_field",
        default=None,
        help="field or column holding the caption (default: text); webdataset: a member extension such as .txt "
        "(the default) or a field of the .json member",
    )
    add(
        inputs,
        "--key_field",
        default=None,
        help="field or column holding the sample key; default: 'key' if present, else <file>:<row>, <file> "
        "being the file's path below the inputs' common folder; "
        "webdataset: a field of the .json member, default the sample's __key__",
    )
    add(
        inputs,
        "--url_field",
        default=None,
        help="field or column holding the image URL (webdataset: of the .json member); written as 'url' "
        "(default: none)",
    )
    add(
        inputs,
        "--column_names",
        column_names,
        default=None,
        metavar="A,B,...",
        help="names for the columns of header-less TSV/CSV files, in order (CC3M: caption,url); default: the first "
        "row is the header",
    )
    add(
        inputs,
        "--max_text_bytes",
        integer("max_text_bytes", 1),
        default="65536",
        help="captions longer than this many UTF-8 bytes are rejected as text_too_long (default: 65536)",
    )
    add(
        inputs,
        "--strict",
        boolean("strict"),
        nargs="?",
        const="true",
        default="false",
        metavar="true|false",
        help="fail the run at the first rejected record or file instead of writing it to rejected/ "
        "(default: false; --strict alone means true)",
    )

    metadata = parser.add_argument_group("metadata")
    add(
        metadata,
        "--metadata",
        default=None,
        metavar="FILE",
        help="metadata entries: a JSON list of strings (MetaCLIP's metadata.json, .gz allowed); "
        "--mode metaclip2: a directory of <lang>.json lists or one JSON object {lang: [entries]}; required",
    )
    add(
        metadata,
        "--mode",
        default="metaclip1",
        choices=MODES,
        help="metaclip1: one list for every caption; metaclip2: MetaCLIP 2 worldwide, each caption matched "
        "only against its language's list, with a t per language (default: metaclip1)",
    )
    add(
        metadata,
        "--matcher",
        default=None,
        choices=MATCHERS,
        help="metaclip1: the Aho-Corasick library that matches captions; both give the same matches. "
        "daachorse: ~1.4x faster, smaller, its automaton cached and loaded in < 0.1 s; pyahocorasick: the "
        "reference (default: daachorse; --mode metaclip2 always uses pyahocorasick)",
    )
    add(
        metadata,
        "--lang_field",
        default=None,
        help="metaclip2: field or column holding each caption's language code (default: none; "
        "then --language_id decides)",
    )
    add(
        metadata,
        "--language_id",
        default="auto",
        metavar="auto|none|MODEL",
        help="metaclip2: language-id model for captions without a --lang_field value; auto: the bundled "
        "model when there is no --lang_field, none otherwise; none: such captions get --default_language "
        "(default: auto)",
    )
    add(
        metadata,
        "--language_map",
        default=None,
        metavar="FILE|A=B,...",
        help="metaclip2: language codes to metadata languages, as a JSON object file or pairs "
        "(zh-cn=zh,zh-tw=zh); codes neither mapped nor listed get --default_language (default: none)",
    )
    add(
        metadata,
        "--default_language",
        non_blank("default_language", "a language"),
        default="other",
        help="metaclip2: metadata language of captions whose language is unknown or has no list (default: other)",
    )

    balancing = parser.add_argument_group("balancing")
    add(
        balancing,
        "--threshold",
        integer("threshold", 1),
        default="20000",
        help="t: captions kept per head entry in expectation (MetaCLIP 400M: 20000) (default: 20000)",
    )
    add(
        balancing,
        "--seed",
        integer("seed", 0, below=2**64),
        default="0",
        help="seed of the keep decisions, a non-negative integer (default: 0)",
    )
    add(
        balancing,
        "--target_size",
        integer("target_size", 1),
        default=None,
        metavar="N",
        help="choose t so that the expected subset size is as close as possible to N captions, "
        "print it and use it instead of --threshold (default: none)",
    )

    output = parser.add_argument_group("output")
    add(output, "--output_dir", default=None, metavar="DIR", help="where every output goes; required")
    add(
        output,
        "--overwrite",
        boolean("overwrite"),
        nargs="?",
        const="true",
        default="false",
        metavar="true|false",
        help="replace the outputs of a finished run already in --output_dir (default: refuse); "
        "--overwrite alone means true (a Flex Template parameter always has a value: overwrite=true)",
    )
    add(
        output,
        "--num_shards",
        integer("num_shards", 0),
        default="0",
        help="files per output directory; 0 picks one per 64 MiB of caption data as held in memory, estimated "
        "from a few input files (default: 0)",
    )
    add(
        output,
        "--batch_size",
        integer("batch_size", 1),
        default="4096",
        help="captions per batch inside the pipeline (default: 4096)",
    )
    add(
        output,
        "--report",
        boolean("report"),
        nargs="?",
        const="true",
        default="true",
        metavar="true|false",
        help="write report.html and plots/*.png beside the outputs (default: true)",
    )
    add(
        output,
        "--progress",
        seconds("progress"),
        default="10",
        metavar="SECONDS",
        help="local runs: print records read, matched and kept every SECONDS; 0 turns it off (default: 10)",
    )
    add(
        output,
        "--cache_dir",
        default=None,
        metavar="DIR|none",
        help="local runs: keep the built automaton here (~52 MB for a 500k-entry list with daachorse, ~132 MB "
        "with pyahocorasick; the newest 3 kept) so that the next run on the same metadata loads it in ~0.1 s "
        "(pyahocorasick: ~0.3 s) instead of building it; none: build every time "
        "(default: $BALANCEBEAM_CACHE_DIR, else ~/.cache/balancebeam)",
    )

    handoff = parser.add_argument_group("training hand-off")
    add(
        handoff,
        "--handoff",
        handoff_list,
        default="auto",
        metavar="LIST",
        help="training hand-off outputs, comma-separated: webdataset (kept keys per input shard), datacomp "
        "(subset_uids.npy), img2dataset (img2dataset/*.parquet); or none. Default auto: webdataset for "
        "webdataset inputs, datacomp and img2dataset for --input_preset datacomp (datacomp only for its "
        "webdataset shards), img2dataset for --input_preset img2dataset",
    )
    add(
        handoff,
        "--reshard_dir",
        non_blank("reshard_dir", "a directory"),
        default=None,
        metavar="DIR",
        help="write new webdataset shards holding only the kept samples (every member copied byte for byte) "
        "and their manifest.json to DIR; webdataset inputs only (default: no reshard)",
    )
    add(
        handoff,
        "--samples_per_shard",
        integer("samples_per_shard", 1),
        default=str(DEFAULT_SAMPLES_PER_SHARD),
        help=f"samples per resharded tar, all shards full but the last (default: {DEFAULT_SAMPLES_PER_SHARD})",
    )
    add_stage_arguments(parser, add)


@dataclasses.dataclass(frozen=True)
class CurationArgs:
    """The curation's options, parsed and checked (parse_curation_args); flags without the dashes."""

    input: tuple[str, ...]
    input_format: Optional[str]
    input_preset: Optional[str]
    text_field: Optional[str]
    key_field: Optional[str]
    url_field: Optional[str]
    column_names: Optional[tuple[str, ...]]
    max_text_bytes: int
    strict: bool
    metadata: str
    mode: str
    matcher: Optional[str]  # None: the mode's default (transforms.core.matching)
    lang_field: Optional[str]
    language_id: str
    language_map: Optional[str]
    default_language: str
    threshold: int
    seed: int
    target_size: Optional[int]
    output_dir: str
    overwrite: bool
    num_shards: int
    batch_size: int
    report: bool
    progress: float
    cache_dir: Optional[str]
    handoff: Optional[tuple[str, ...]]  # None: auto
    reshard_dir: Optional[str]
    samples_per_shard: int
    # Every option, as parsed: what the stages read (beam_pipeline/stages/, each its own flags).
    flags: argparse.Namespace = dataclasses.field(default_factory=argparse.Namespace, compare=False)


# Documentation only: shown in --help, still parsed by Beam itself.
BEAM_OPTIONS_HELP = (
    (
        "--runner",
        "DirectRunner (default; runs here on Beam's Python engine), DataflowRunner, PortableRunner, "
        "FlinkRunner, SparkRunner",
    ),
    ("--direct_running_mode", "DirectRunner: in_memory (default), multi_threading or multi_processing (all cores)"),
    ("--direct_num_workers", "DirectRunner: parallel workers; 0 means one per core (default: 1)"),
    ("--project", "Dataflow: Google Cloud project (default: none)"),
    ("--region", "Dataflow: region of the job, e.g. us-central1 (default: none)"),
    ("--temp_location", "Dataflow: gs:// path for temporary files (default: none)"),
    ("--setup_file", "Dataflow: ./setup.py, to install BalanceBeam on the workers (default: none)"),
    ("--max_num_workers", "Dataflow: upper bound for autoscaling (default: the service's)"),
    ("--job_endpoint", "PortableRunner: job service address, or embed (default: none)"),
    ("--environment_type", "PortableRunner: DOCKER, PROCESS, EXTERNAL or LOOPBACK (default: DOCKER)"),
)


class CurationOptions(PipelineOptions):
    """The curation options as Beam pipeline options (raw strings; parse_curation_args checks them)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_curation_arguments(parser, checked=False)


class _StrictParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def curation_parser() -> argparse.ArgumentParser:
    parser = _StrictParser(
        prog="python -m beam_pipeline.curate",
        description="Curate an image-text pool the MetaCLIP way: match captions against metadata entries, "
        "count, and keep a balanced subset. Any Beam pipeline option (--runner, --direct_num_workers, "
        "--project, --region, ...) may follow.",
        allow_abbrev=False,
    )
    add_curation_arguments(parser)
    beam = parser.add_argument_group(
        "Beam options", "any Beam pipeline option may follow the curation options; the common ones:"
    )
    for flag, text in BEAM_OPTIONS_HELP:
        beam.add_argument(flag, default=None, metavar="VALUE", help=text)
    return parser


def beam_option_names() -> set[str]:
    """Every --flag some Beam PipelineOptions class defines."""
    # _BeamArgumentParser is private to Beam: this relies on the Beam version pinned in
    # requirements.txt (a test parses every curation and Beam flag through it).
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return {option for action in parser._actions for option in action.option_strings}


_WORLDWIDE_ONLY = ("lang_field", "language_map")


def _check_combinations(args: argparse.Namespace) -> None:
    """What no single flag can check: required options, and options that only mean something in one mode
    (the stages check their own: beam_pipeline.stages.check_stage_arguments)."""
    if not args.output_dir:
        raise UsageError("--output_dir is required")
    if args.mode == "metaclip1":
        for name in _WORLDWIDE_ONLY:
            if getattr(args, name) is not None:
                raise UsageError(
                    f"--{name} is for --mode metaclip2 (per-language metadata); this run is --mode metaclip1"
                )
        if args.language_id != "auto":
            raise UsageError(
                "--language_id is for --mode metaclip2 (per-language metadata); this run is --mode metaclip1"
            )
    elif args.target_size is not None:
        raise UsageError("--target_size is not supported with --mode metaclip2 yet: set --threshold (English's t)")
    elif args.matcher not in (None, PYAHOCORASICK):
        raise UsageError(f"--matcher {args.matcher}: --mode metaclip2 matches with pyahocorasick only")


def _refuse_unknown_flags(rest: Sequence[str]) -> None:
    known = beam_option_names()
    for arg in rest:
        flag = arg.split("=", 1)[0]
        if arg.startswith("--") and flag not in known:
            ours = [option for action in curation_parser()._actions for option in action.option_strings]
            close = difflib.get_close_matches(flag, ours + sorted(known), n=1)
            raise UsageError(f"unrecognised option {flag}" + (f" (did you mean {close[0]}?)" if close else ""))


def parse_curation_args(argv: Optional[Sequence[str]]) -> tuple[CurationArgs, list[str]]:
    """(the curation options, checked and typed; the remaining Beam arguments).

    Raises UsageError for a missing or bad value, or a flag no one defines.
    """
    try:
        args, rest = curation_parser().parse_known_args(expand_recipe(argv or []))
        _refuse_unknown_flags(rest)
        if not args.input:
            raise UsageError("--input is required: the caption files to curate")
        check_stage_arguments(args)
        _check_combinations(args)
    except BadValue as error:
        raise UsageError(str(error)) from None
    args.input = tuple(args.input)
    args.default_language = args.default_language.strip()
    named = [field.name for field in dataclasses.fields(CurationArgs) if field.name != "flags"]
    values = {name: getattr(args, name) for name in named}
    return CurationArgs(**values, flags=args), rest
