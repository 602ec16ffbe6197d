"""Command-line options of a curation run, and their checks before any work.

`CurationOptions` makes the options Beam pipeline options (so Dataflow Flex
Templates and every runner see them); `parse_curation_args` parses them
strictly, so that a bad value or an unknown flag stops the run at once with
one line naming it.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.caption_files import FORMATS, PRESETS

HANDOFFS = ("webdataset", "datacomp", "img2dataset")
MODES = ("metaclip1", "metaclip2")
DEFAULT_SAMPLES_PER_SHARD = 10000


class UsageError(ValueError):
    """A bad option, input or metadata file: one line, exit status 2, no traceback."""


def add_curation_arguments(parser) -> None:
    """The curation's own options (Beam's options come on top)."""
    group = parser.add_argument_group

    inputs = group("input")
    inputs.add_argument("--input", action="append", default=None, metavar="GLOB",
                        help="caption files: a path, glob or brace pattern ({000000..000099}.tar), local or any Beam filesystem (gs://, s3://); repeat for more")
    inputs.add_argument("--input_format", default=None, choices=FORMATS,
                        help="format of every input file; default: from the file extension (.jsonl/.json, .parquet, .tsv, .csv, optionally compressed; .tar: webdataset)")
    inputs.add_argument("--input_preset", default=None, choices=PRESETS,
                        help="column names of a known pool: datacomp (uid, url, text; webdataset shards: .txt, uid and url in .json) "
                        "or img2dataset (url/caption or URL/TEXT); explicit --text_field/--key_field/--url_field win")
    inputs.add_argument("--text_field", default=None,
                        help="field or column holding the caption (default: text); webdataset: a member extension such as .txt "
                        "(the default) or a field of the .json member")
    inputs.add_argument("--key_field", default=None,
                        help="field or column holding the sample key; default: 'key' if present, else <file name>:<row>; "
                        "webdataset: a field of the .json member, default the sample's __key__")
    inputs.add_argument("--url_field", default=None,
                        help="field or column holding the image URL (webdataset: of the .json member); written as 'url' (default: none)")
    inputs.add_argument("--column_names", default=None, metavar="A,B,...",
                        help="names for the columns of header-less TSV/CSV files, in order (CC3M: caption,url); default: the first row is the header")
    inputs.add_argument("--max_text_bytes", default="65536",
                        help="captions longer than this many UTF-8 bytes are rejected as text_too_long (default: 65536)")
    inputs.add_argument("--strict", nargs="?", const="true", default="false", metavar="true|false",
                        help="fail the run at the first rejected record or file instead of writing it to rejected/ "
                        "(default: false; --strict alone means true)")

    metadata = group("metadata")
    metadata.add_argument("--metadata", default=None, metavar="FILE",
                          help="metadata entries: a JSON list of strings (MetaCLIP's metadata.json, .gz allowed); "
                          "--mode metaclip2: a directory of <lang>.json lists or one JSON object {lang: [entries]}; required")
    metadata.add_argument("--mode", default="metaclip1", choices=MODES,
                          help="metaclip1: one list for every caption; metaclip2: MetaCLIP 2 worldwide, each caption matched "
                          "only against its language's list, with a t per language (default: metaclip1)")
    metadata.add_argument("--lang_field", default=None,
                          help="metaclip2: field or column holding each caption's language code (default: none; "
                          "then --language_id decides)")
    metadata.add_argument("--language_id", default="auto", metavar="auto|none|MODEL",
                          help="metaclip2: language-id model for captions without a --lang_field value; auto: the bundled "
                          "model when there is no --lang_field, none otherwise; none: such captions get --default_language (default: auto)")
    metadata.add_argument("--language_map", default=None, metavar="FILE|A=B,...",
                          help="metaclip2: language codes to metadata languages, as a JSON object file or pairs "
                          "(zh-cn=zh,zh-tw=zh); codes neither mapped nor listed get --default_language (default: none)")
    metadata.add_argument("--default_language", default="other",
                          help="metaclip2: metadata language of captions whose language is unknown or has no list (default: other)")

    balancing = group("balancing")
    balancing.add_argument("--threshold", default="20000",
                           help="t: captions kept per head entry in expectation (MetaCLIP 400M: 20000) (default: 20000)")
    balancing.add_argument("--seed", default="0", help="seed of the keep decisions, a non-negative integer (default: 0)")
    balancing.add_argument("--target_size", default=None, metavar="N",
                           help="choose t so that the expected subset size is as close as possible to N captions, "
                           "print it and use it instead of --threshold (default: none)")

    output = group("output")
    output.add_argument("--output_dir", default=None, metavar="DIR", help="where every output goes; required")
    output.add_argument("--overwrite", nargs="?", const="true", default="false", metavar="true|false",
                        help="replace the outputs of a finished run already in --output_dir (default: refuse); "
                        "--overwrite alone means true (a Flex Template parameter always has a value: overwrite=true)")
    output.add_argument("--num_shards", default="0",
                        help="files per output directory; 0 picks one per 64 MiB of caption data as held in memory, estimated from a few input files (default: 0)")
    output.add_argument("--batch_size", default="4096", help="captions per batch inside the pipeline (default: 4096)")
    output.add_argument("--report", nargs="?", const="true", default="true", metavar="true|false",
                        help="write report.html and plots/*.png beside the outputs (default: true)")
    output.add_argument("--progress", default="10", metavar="SECONDS",
                        help="local runs: print records read, matched and kept every SECONDS; 0 turns it off (default: 10)")
    output.add_argument("--cache_dir", default=None, metavar="DIR|none",
                        help="local runs: keep the built automaton here (~130 MB per metadata list, the newest 3 kept) so that "
                        "the next run on the same metadata loads it in ~0.3 s instead of building it; none: build every time "
                        "(default: $BALANCEBEAM_CACHE_DIR, else ~/.cache/balancebeam)")

    handoff = group("training hand-off")
    handoff.add_argument("--handoff", default="auto", metavar="LIST",
                         help="training hand-off outputs, comma-separated: webdataset (kept keys per input shard), datacomp "
                         "(subset_uids.npy), img2dataset (img2dataset/*.parquet); or none. Default auto: webdataset for "
                         "webdataset inputs, datacomp and img2dataset for --input_preset datacomp (datacomp only for its "
                         "webdataset shards), img2dataset for --input_preset img2dataset")
    handoff.add_argument("--reshard_dir", default=None, metavar="DIR",
                         help="write new webdataset shards holding only the kept samples (every member copied byte for byte) "
                         "and their manifest.json to DIR; webdataset inputs only (default: no reshard)")
    handoff.add_argument("--samples_per_shard", default=str(DEFAULT_SAMPLES_PER_SHARD),
                         help=f"samples per resharded tar, all shards full but the last (default: {DEFAULT_SAMPLES_PER_SHARD})")


# Documentation only: shown in --help, still parsed by Beam itself.
BEAM_OPTIONS_HELP = (
    ("--runner", "DirectRunner (default; runs here on Beam's Python engine), DataflowRunner, PortableRunner, FlinkRunner, SparkRunner"),
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
    """The curation options as Beam pipeline options."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_curation_arguments(parser)


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
        "Beam options", "any Beam pipeline option may follow the curation options; the common ones:")
    for flag, text in BEAM_OPTIONS_HELP:
        beam.add_argument(flag, default=None, metavar="VALUE", help=text)
    return parser


def _beam_option_names() -> set[str]:
    """Every --flag some Beam PipelineOptions class defines."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return {option for action in parser._actions for option in action.option_strings}


def _boolean(name: str, value) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UsageError(f"--{name} must be true or false, got {value!r}")


def _integer(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise UsageError(f"--{name} must be >= {minimum}, got {number}")
    return number


def _seconds(name: str, value: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be a number of seconds, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise UsageError(f"--{name} must be a finite number of seconds >= 0, got {value!r}")
    return number


_WORLDWIDE_ONLY = ("lang_field", "language_map")


def _check_mode(args: argparse.Namespace) -> None:
    """Options that only mean something in one mode are refused in the other."""
    if args.mode == "metaclip1":
        for name in _WORLDWIDE_ONLY:
            if getattr(args, name) is not None:
                raise UsageError(f"--{name} is for --mode metaclip2 (per-language metadata); this run is --mode metaclip1")
        if args.language_id != "auto":
            raise UsageError("--language_id is for --mode metaclip2 (per-language metadata); this run is --mode metaclip1")
    elif args.target_size is not None:
        raise UsageError("--target_size is not supported with --mode metaclip2 yet: set --threshold (English's t)")
    if not args.default_language.strip():
        raise UsageError("--default_language must name a language")


def _handoff_list(value: str) -> Optional[tuple[str, ...]]:
    """None for auto; else the named hand-offs (empty for none)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["auto"]:
        return None
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in HANDOFFS]
    if unknown or not names:
        raise UsageError(f"--handoff takes auto, none, or a comma-separated list of {', '.join(HANDOFFS)}; got {value!r}")
    return tuple(dict.fromkeys(names))


def parse_curation_args(argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, list[str]]:
    """(curation options with typed numbers, the remaining Beam arguments).

    Raises UsageError for a missing or bad value, or a flag no one defines.
    """
    args, rest = curation_parser().parse_known_args(list(argv or []))
    known = _beam_option_names()
    for arg in rest:
        if arg.startswith("--") and arg.split("=", 1)[0] not in known:
            flag = arg.split("=", 1)[0]
            ours = [a for action in curation_parser()._actions for a in action.option_strings]
            close = difflib.get_close_matches(flag, ours + sorted(known), n=1)
            raise UsageError(f"unrecognised option {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    if not args.input:
        raise UsageError("--input is required: the caption files to curate")
    if not args.metadata:
        raise UsageError("--metadata is required: a JSON list of entry strings")
    if not args.output_dir:
        raise UsageError("--output_dir is required")
    args.overwrite = _boolean("overwrite", args.overwrite)
    args.threshold = _integer("threshold", args.threshold, 1)
    args.seed = _integer("seed", args.seed, 0)
    if args.seed >= 2**64:
        raise UsageError(f"--seed must be below 2**64, got {args.seed}")
    args.num_shards = _integer("num_shards", args.num_shards, 0)
    args.batch_size = _integer("batch_size", args.batch_size, 1)
    args.max_text_bytes = _integer("max_text_bytes", args.max_text_bytes, 1)
    args.samples_per_shard = _integer("samples_per_shard", args.samples_per_shard, 1)
    args.handoff = _handoff_list(args.handoff)
    args.strict = _boolean("strict", args.strict)
    args.report = _boolean("report", args.report)
    args.progress = _seconds("progress", args.progress)
    if args.target_size is not None:
        args.target_size = _integer("target_size", args.target_size, 1)
    _check_mode(args)
    if args.reshard_dir is not None and not args.reshard_dir.strip():
        raise UsageError("--reshard_dir must name a directory")
    if args.column_names is not None:
        args.column_names = tuple(name.strip() for name in args.column_names.split(","))
        if not all(args.column_names) or len(set(args.column_names)) != len(args.column_names):
            raise UsageError(f"--column_names must be distinct non-empty names separated by commas, got {','.join(args.column_names)!r}")
    return args, rest
