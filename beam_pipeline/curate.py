"""The curation pipeline: read, match, count, sample, write.

    python -m beam_pipeline.curate --input 'pool/*.parquet' --metadata metadata.json \\
        --threshold 20000 --output_dir out [Beam options]

Every check of options, inputs and metadata happens before the pipeline is
built; a failed check prints one line and exits with status 2.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.options import UsageError, parse_curation_args
from transforms.caption_files import InputError, InputLayout, infer_format, probe_layout
from transforms.columns import ENTRY_IDS, KEEP_PROB, KEY, TEXT
from transforms.count import CountEntries
from transforms.match import MatchEntries, load_metadata
from transforms.metadata_list import MetadataError
from transforms.read import ReadCaptions
from transforms.sample import BalancedSample
from transforms.stats import SumFigures, batch_figures, duplicate_figures, rejection_figures, stats_document
from transforms.write import WriteJsonFile, WriteJsonLinesShards, WriteParquetShards

MATCHES_SCHEMA = pa.schema([(KEY, pa.string()), (ENTRY_IDS, pa.list_(pa.int32())), (KEEP_PROB, pa.float64())])
BYTES_PER_SHARD = 256 << 20
OUTPUT_SUBDIRS = ("matches", "subset", "rejected")
OUTPUT_FILES = ("entry_counts.json", "stats.json")


@dataclass(frozen=True)
class CurationConfig:
    """Everything a run needs, checked: built by `prepare`, used by `build_curation`."""

    paths: tuple[str, ...]
    layout: InputLayout
    metadata_path: str
    metadata_sha256: str
    num_entries: int
    threshold: int
    seed: int
    output_dir: str
    num_shards: int

    @property
    def subset_schema(self) -> pa.Schema:
        return pa.schema([(KEY, pa.string()), (TEXT, pa.string())] + [pa.field(n, t) for n, t in self.layout.passthrough])

    def output(self, *parts: str) -> str:
        return FileSystems.join(self.output_dir, *parts)

    def run_figures(self) -> dict:
        return {
            "threshold": self.threshold,
            "seed": self.seed,
            "input_files": len(self.paths),
            "num_shards": self.num_shards,
            "metadata_sha256": self.metadata_sha256,
        }


def resolve_inputs(globs: Sequence[str]) -> tuple[list[str], int]:
    """Sorted unique paths matched by the globs, and their total size."""
    sizes: dict[str, int] = {}
    for pattern in globs:
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # noqa: BLE001 - e.g. gs:// without credentials
            raise UsageError(f"--input {pattern!r} cannot be listed: {error}") from None
        if not found:
            raise UsageError(f"--input {pattern!r} matches no file")
        for metadata in found:
            sizes[metadata.path] = metadata.size_in_bytes
    return sorted(sizes), sum(sizes.values())


def _input_format(paths: Sequence[str], given: Optional[str]) -> str:
    if given:
        return given
    formats = {}
    for path in paths:
        fmt = infer_format(path)
        if fmt is None:
            raise UsageError(f"cannot tell the format of {path} from its name; pass --input_format")
        formats.setdefault(fmt, path)
    if len(formats) > 1:
        raise UsageError(f"inputs mix formats ({', '.join(f'{f}: {p}' for f, p in formats.items())}); curate them separately or pass --input_format")
    return next(iter(formats))


def _probe(paths: Sequence[str], fmt: str, layout_options: dict) -> InputLayout:
    """The layout from the first input file that has readable columns."""
    problems = []
    for path in paths:
        compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
        try:
            with FileSystems.open(path, compression_type=compression) as handle:
                layout = probe_layout(handle, fmt, **layout_options)
        except InputError as error:
            raise UsageError(f"{error} (in {path})") from None
        except Exception as error:  # noqa: BLE001 - a corrupt file: try the next one
            problems.append(f"{path}: {type(error).__name__}: {error}")
            continue
        if layout is not None:
            return layout
        problems.append(f"{path}: no records")
    raise UsageError(f"no input file could be read ({problems[0]}{' ...' if len(problems) > 1 else ''})")


def _clear_unfinished_outputs(output_dir: str, overwrite: bool) -> None:
    """Refuse a finished run's directory unless --overwrite; remove leftovers of unfinished ones."""
    stats = FileSystems.join(output_dir, "stats.json")
    if FileSystems.exists(stats) and not overwrite:
        raise UsageError(f"--output_dir {output_dir} already holds a finished run (stats.json); pass --overwrite to replace it")
    stale = []
    for subdir in OUTPUT_SUBDIRS:
        for pattern in ("part-*", ".part-*"):
            stale += [m.path for m in FileSystems.match([FileSystems.join(output_dir, subdir, pattern)])[0].metadata_list]
    for name in OUTPUT_FILES:
        path = FileSystems.join(output_dir, name)
        if FileSystems.exists(path):
            stale.append(path)
        # Temporary files of a killed run (see transforms.write.write_atomically).
        stale += [m.path for m in FileSystems.match([FileSystems.join(output_dir, f".{name}.tmp-*")])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)


def prepare(argv: Optional[Sequence[str]]) -> tuple[CurationConfig, list[str]]:
    """Parse and check everything; return the run's config and the Beam arguments."""
    args, beam_args = parse_curation_args(argv)
    paths, total_bytes = resolve_inputs(args.input)
    fmt = _input_format(paths, args.input_format)
    layout = _probe(
        paths,
        fmt,
        dict(
            text_field=args.text_field,
            key_field=args.key_field,
            url_field=args.url_field,
            column_names=args.column_names,
            max_text_bytes=args.max_text_bytes,
            batch_size=args.batch_size,
        ),
    )
    try:
        metadata = load_metadata(args.metadata)
    except MetadataError as error:
        raise UsageError(str(error)) from None
    _clear_unfinished_outputs(args.output_dir, args.overwrite)
    num_shards = args.num_shards or max(1, math.ceil(total_bytes / BYTES_PER_SHARD))
    config = CurationConfig(
        paths=tuple(paths),
        layout=layout,
        metadata_path=args.metadata,
        metadata_sha256=metadata.sha256,
        num_entries=len(metadata),
        threshold=args.threshold,
        seed=args.seed,
        output_dir=args.output_dir,
        num_shards=num_shards,
    )
    return config, beam_args


def entry_counts_document(metadata_path: str, counts) -> dict:
    """entry_counts.json: every entry -> its caption count, in metadata order."""
    entries = load_metadata(metadata_path).entries
    return dict(zip(entries, counts.tolist()))


def build_curation(pipeline: beam.Pipeline, config: CurationConfig) -> dict:
    """Add the curation to `pipeline`; return its main PCollections by name."""
    read = pipeline | "ReadCaptions" >> ReadCaptions(config.paths, config.layout)
    matched = read.batches | "MatchEntries" >> MatchEntries(config.metadata_path, config.metadata_sha256)
    counts = matched | "CountEntries" >> CountEntries(config.num_entries)
    sampled = matched | "BalancedSample" >> BalancedSample(counts, config.threshold, config.seed)

    matches = sampled | "WriteMatches" >> WriteParquetShards(config.output("matches"), config.num_shards, MATCHES_SCHEMA)
    written = [
        matches.written,
        (sampled | "WriteSubset" >> WriteParquetShards(config.output("subset"), config.num_shards, config.subset_schema, kept_only=True)).written,
        read.rejected
        | "RejectionsToJson" >> beam.Map(lambda rejection: rejection.to_json())
        | "WriteRejected" >> WriteJsonLinesShards(config.output("rejected"), max(1, config.num_shards // 16)),
    ]
    metadata_path = config.metadata_path
    written.append(
        pipeline
        | "WriteEntryCounts"
        >> WriteJsonFile(config.output("entry_counts.json"), lambda counts: entry_counts_document(metadata_path, counts), {"counts": counts})
    )

    batch_stats = (
        (sampled | "BatchFigures" >> beam.Map(batch_figures), matches.duplicates | "DuplicateFigures" >> beam.Map(duplicate_figures))
        | "AllBatchFigures" >> beam.Flatten()
        | "SumBatchFigures" >> beam.CombineGlobally(SumFigures())
    )
    rejected_stats = read.rejected | "RejectionFigures" >> beam.Map(rejection_figures) | "SumRejectionFigures" >> beam.CombineGlobally(SumFigures())
    run_figures = config.run_figures()
    # stats.json is written after every other output: its presence marks a finished run.
    stats = pipeline | "WriteStats" >> WriteJsonFile(
        config.output("stats.json"),
        lambda batch, rejected, counts: stats_document(batch, rejected, counts, run_figures),
        {"batch": batch_stats, "rejected": rejected_stats, "counts": counts},
        after=written,
    )
    return {"batches": read.batches, "rejected": read.rejected, "matched": matched, "counts": counts, "sampled": sampled, "stats": stats}


def make_runner(options: PipelineOptions):
    """The DirectRunner's own engine, the Python FnApiRunner, chosen explicitly.

    Left to itself the DirectRunner first tries to download a Prism binary,
    which waits on the network where there is none; every other runner is
    used as given.
    """
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return None


def _runs_here(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner.endswith("PortableRunner"):
        from apache_beam.options.pipeline_options import PortableOptions

        return options.view_as(PortableOptions).job_endpoint == "embed"
    return runner in ("DirectRunner", "direct")


def _print_summary(config: CurationConfig, seconds: float) -> None:
    with FileSystems.open(config.output("stats.json")) as handle:
        stats = json.load(handle)
    read = stats["records_read"]
    rows = [
        ("records read", read),
        ("rejected", stats["records_rejected"]),
        ("matched (>= 1 entry)", stats["records_matched"]),
        ("kept", stats["records_kept"]),
        ("entries matched", f"{stats['entries_matched']} of {stats['entries']}"),
        (f"head entries (count > {config.threshold})", stats["entries_over_threshold"]),
        ("seconds", f"{seconds:.1f}"),
        ("captions/s", f"{read / seconds:,.0f}" if seconds > 0 else "-"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"curation finished: {config.output_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run a curation from command-line arguments; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config, _ = prepare(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = PipelineOptions(argv)
    runner = make_runner(options)
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_curation(pipeline, config)
    result = pipeline.run()
    if not _runs_here(options):
        # Dataflow, Flink, Spark: the job runs on without this process.
        print(f"submitted to {options.view_as(StandardOptions).runner}; stats.json in {config.output_dir} marks its end")
        return 0
    result.wait_until_finish()
    _print_summary(config, time.monotonic() - started)
    return 0


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run())


if __name__ == "__main__":
    main()
