"""The curation pipeline: read, match, count, sample, write.

    python -m beam_pipeline.curate --input 'pool/*.parquet' --metadata metadata.json \\
        --threshold 20000 --output_dir out [Beam options]

Every check of options, inputs and metadata happens before the pipeline is
built; a failed check prints one line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from beam_pipeline.options import UsageError, parse_curation_args
from beam_pipeline.progress import ProgressReporter
from beam_pipeline.report import write_report
from transforms.beam.count import CountEntries
from transforms.beam.handoff_write import (
    WebdatasetHandoff,
    WriteImg2datasetShards,
    WriteSubsetUids,
)
from transforms.beam.io import load_language_metadata, load_metadata, write_atomically
from transforms.beam.match import LocalWorkers, MatchEntries, WorldwideSettings
from transforms.beam.read import ReadCaptions
from transforms.beam.report_data import ExpectedSizes, KeptEntryCounts, ReportFigures
from transforms.beam.sample import BalancedSample
from transforms.beam.spill import LoadBatches, StoreBatches, delete_spill_dir
from transforms.beam.stats import SumFigures
from transforms.beam.write import (
    WriteJsonFile,
    WriteJsonLinesShards,
    WriteParquetShards,
)
from transforms.caption_files import (
    InputError,
    InputLayout,
    infer_format,
    preset_fields,
    probe_columns,
    probe_layout,
    read_caption_file,
    strict_failure,
)
from transforms.core.arrow import list_layout
from transforms.core.columns import (
    ENTRY_IDS,
    KEEP_PROB,
    KEY,
    KEY_HASH,
    LANG,
    LANGUAGE,
    SOURCE_FILE,
    SOURCE_ROW,
    TEXT,
)
from transforms.core.expected_size import threshold_grid
from transforms.core.plan import plan_for_languages, plan_for_threshold
from transforms.core.report_figures import (
    figures_document,
    finer_grid,
    size_table,
    threshold_for_target,
)
from transforms.core.stats import (
    batch_figures,
    duplicate_figures,
    rejection_figures,
    stats_document,
)
from transforms.formats.input_size import data_bytes
from transforms.formats.tar import TXT_MEMBER, WEBDATASET, expand_braces
from transforms.handoff.reshard import (
    FRAGMENTS,
    MANIFEST,
    RESHARD_MARKER,
    key_files_need_index,
)
from transforms.handoff.uids import UidError, check_uids
from transforms.language_id import language_identifier
from transforms.metadata.lists import MetadataError
from transforms.runtime.automaton_cache import default_cache_dir
from transforms.worldwide import LanguageMap, require_language

MATCHES_SCHEMA = pa.schema([(KEY, pa.string()), (ENTRY_IDS, pa.list_(pa.int32())), (KEEP_PROB, pa.float64())])
# metaclip2: the language each caption was matched against; entry ids index that language's list.
WORLDWIDE_MATCHES_SCHEMA = pa.schema([(KEY, pa.string()), (LANG, pa.string()), (ENTRY_IDS, pa.list_(pa.int32())), (KEEP_PROB, pa.float64())])
# Caption data (in memory, uncompressed) per output shard: a shard writer holds
# its shard and sorts it (transforms.formats.input_size).
BYTES_PER_SHARD = 64 << 20
WEBDATASET_BYTES_PER_CAPTION_BYTE = 64
OUTPUT_SUBDIRS = ("matches", "subset", "rejected")
# Batches between the passes, on local engines (transforms.beam.spill); deleted at the end.
SPILL_DIR = ".balancebeam-work"
OUTPUT_FILES = ("entry_counts.json", "stats.json", "figures.json", "entry_counts_kept.json", "report.html", "size_vs_threshold.csv")
# Training hand-off outputs (docs/training-handoff.md), cleared like the others.
SUBSET_UIDS = "subset_uids.npy"
IMG2DATASET_DIR = "img2dataset"
KEPT_KEYS_DIR = "webdataset/kept_keys"
SHARDS_JSON = "webdataset/shards.json"
HANDOFF_GLOBS = ("img2dataset/part-*", "img2dataset/.part-*", "webdataset/kept_keys/*", ".subset_uids/*", "plots/*.png", "plots/.*.png.tmp-*")
HANDOFF_FILES = (SUBSET_UIDS, SHARDS_JSON)


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
    # Training hand-off: which of webdataset, datacomp, img2dataset; a reshard directory.
    handoff: frozenset = frozenset()
    reshard_dir: Optional[str] = None
    samples_per_shard: int = 10000
    img2dataset_key_column: str = "source_key"
    # Where batches wait between passes on engines that would hold them in memory.
    spill_dir: Optional[str] = None
    strict: bool = False
    target_size: Optional[int] = None
    report: bool = True
    # --mode metaclip2: where languages come from, and each language's first global id.
    worldwide: Optional[WorldwideSettings] = None
    language_offsets: tuple = ()
    # Engines whose worker processes run on this machine: the automaton cache.
    local: Optional[LocalWorkers] = None

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
            "mode": "metaclip2" if self.worldwide else "metaclip1",
            **({"target_size": self.target_size} if self.target_size is not None else {}),
        }


def resolve_inputs(globs: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted unique paths matched by the globs, and each one's size.

    Brace patterns (`shards/{000000..000099}.tar`, webdataset's shard lists) are expanded
    first; every name they spell must exist: a shard list with holes is refused.
    """
    sizes: dict[str, int] = {}
    for pattern in globs:
        names = expand_braces(pattern)
        missing = []
        for name in names:
            try:
                found = FileSystems.match([name])[0].metadata_list
            except Exception as error:  # noqa: BLE001 - e.g. gs:// without credentials
                raise UsageError(f"--input {pattern!r} cannot be listed: {error}") from None
            if not found:
                missing.append(name)
            for metadata in found:
                sizes[metadata.path] = metadata.size_in_bytes
        if missing and len(names) == 1:
            raise UsageError(f"--input {pattern!r} matches no file")
        if missing:
            raise UsageError(f"--input {pattern!r}: {len(missing)} of its {len(names)} names match no file (first: {missing[0]})")
    return sorted(sizes), sizes


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


def _first_columns(paths: Sequence[str], fmt: str, column_names) -> list:
    """The columns of the first input file that has some (for --input_preset)."""
    for path in paths:
        compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
        try:
            with FileSystems.open(path, compression_type=compression) as handle:
                columns = probe_columns(handle, fmt, column_names)
        except Exception:  # noqa: BLE001 - a corrupt file: try the next one
            continue
        if columns:
            return columns
    return []


def _fields(paths: Sequence[str], fmt: str, args) -> dict:
    """text/key/url fields: the format's defaults, then the preset's, then explicit flags."""
    fields = {"text_field": TXT_MEMBER if fmt == WEBDATASET else TEXT, "key_field": None, "url_field": None}
    if args.input_preset:
        columns = [] if fmt == WEBDATASET else _first_columns(paths, fmt, args.column_names)
        try:
            fields.update(preset_fields(args.input_preset, fmt, columns))
        except InputError as error:
            raise UsageError(str(error)) from None
    for name in fields:
        given = getattr(args, name)
        if given is not None:
            fields[name] = given
    return fields


def _handoffs(args, fmt: str, layout: InputLayout) -> frozenset:
    """The hand-off outputs asked for (or the defaults of `auto`), checked against the input."""
    if args.handoff is None:  # auto
        chosen = set()
        if fmt == WEBDATASET:
            chosen.add("webdataset")
        if args.input_preset == "datacomp":
            chosen.add("datacomp")
        if args.input_preset in ("datacomp", "img2dataset") and fmt != WEBDATASET:
            chosen.add("img2dataset")
    else:
        chosen = set(args.handoff)
    if "webdataset" in chosen and fmt != WEBDATASET:
        raise UsageError(f"--handoff webdataset lists kept keys per input tar shard; the input is {fmt}, not webdataset")
    if "img2dataset" in chosen and not any(name == "url" for name, _ in layout.passthrough):
        raise UsageError("--handoff img2dataset needs image URLs: pass --url_field (or --input_preset datacomp|img2dataset)")
    if args.reshard_dir is not None and fmt != WEBDATASET:
        raise UsageError(f"--reshard_dir writes new webdataset shards from webdataset input shards; the input is {fmt}")
    return frozenset(chosen)


def _check_uid_keys(paths: Sequence[str], layout: InputLayout) -> None:
    """The first keys of the run must be DataComp uids: fail now, not after hours of work
    (a later key that is not one still fails the run, naming it)."""
    for path in paths[:3]:
        compression = CompressionTypes.UNCOMPRESSED if layout.format == "parquet" else CompressionTypes.AUTO
        try:
            handle = FileSystems.open(path, compression_type=compression)
        except Exception:  # noqa: BLE001 - the run will report it as unreadable_file
            continue
        with handle:
            for item in read_caption_file(handle, path, 0, layout):
                if isinstance(item, pa.RecordBatch):
                    try:
                        check_uids(item.column(KEY).to_pylist(), f" (a key of {path})")
                    except UidError as error:
                        raise UsageError(f"--handoff datacomp: {error}") from None
                    return


def _img2dataset_key_column(layout: InputLayout) -> str:
    """Named after the input's key field (`uid` for DataComp); `source_key` when that would be
    `key`, which img2dataset overwrites with its own sample key."""
    name = layout.key_field
    if name and not name.startswith(".") and name not in ("key", "url", "caption"):
        return name
    return "source_key"


def _check_reshard_dir(reshard_dir: str, paths: Sequence[str], output_dir: str, overwrite: bool) -> None:
    """Refuse a directory that holds inputs, files of someone else, or a reshard finished by
    another run (without --overwrite). A reshard of this very output directory whose run
    did not finish (no stats.json) is a leftover, replaced like the other outputs."""
    directory = reshard_dir.rstrip("/")
    for path in paths:
        if path.startswith(directory + "/"):
            raise UsageError(f"--reshard_dir {reshard_dir} holds input shards ({path}); choose a new directory")
    manifest = FileSystems.join(directory, MANIFEST)
    finished = FileSystems.exists(manifest)
    if finished and not overwrite:
        try:
            with FileSystems.open(manifest) as handle:
                source = json.load(handle).get("source", {}).get("output_dir")
        except Exception:  # noqa: BLE001 - unreadable: treat as finished by someone else
            source = None
        if source != output_dir or FileSystems.exists(FileSystems.join(output_dir, "stats.json")):
            raise UsageError(f"--reshard_dir {reshard_dir} already holds a finished reshard ({MANIFEST}); pass --overwrite to replace it")
    ours = finished or FileSystems.exists(FileSystems.join(directory, RESHARD_MARKER))
    if not ours and FileSystems.exists(directory) and FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list:
        raise UsageError(f"--reshard_dir {reshard_dir} is not empty and is not a BalanceBeam reshard; choose an empty or new directory")


def _clear_reshard_dir(reshard_dir: str) -> None:
    """Remove an earlier reshard's shards, fragments and manifest; mark the directory ours."""
    directory = reshard_dir.rstrip("/")
    stale = []
    for pattern in ("[0-9][0-9][0-9][0-9][0-9][0-9]*.tar", ".[0-9]*.tar.tmp-*", f"{FRAGMENTS}/*", MANIFEST, f".{MANIFEST}.tmp-*"):
        stale += [m.path for m in FileSystems.match([FileSystems.join(directory, pattern)])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)
    marker = FileSystems.join(directory, RESHARD_MARKER)
    if not FileSystems.exists(marker):
        write_atomically(marker, lambda handle: handle.write(b"BalanceBeam reshard directory: reruns replace its *.tar and manifest.json\n"))


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
        # Temporary files of a killed run (see transforms.beam.io.write_atomically).
        stale += [m.path for m in FileSystems.match([FileSystems.join(output_dir, f".{name}.tmp-*")])[0].metadata_list]
    for pattern in HANDOFF_GLOBS:
        stale += [m.path for m in FileSystems.match([FileSystems.join(output_dir, pattern)])[0].metadata_list]
    for name in HANDOFF_FILES:
        directory, _, base = FileSystems.join(output_dir, name).rpartition("/")
        for pattern in (base, f".{base}.tmp-*"):
            stale += [m.path for m in FileSystems.match([FileSystems.join(directory, pattern)])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)
    delete_spill_dir(FileSystems.join(output_dir, SPILL_DIR))


def _spills(options: PipelineOptions) -> bool:
    """Whether the engine keeps a PCollection in memory between stages.

    True for Beam's Python FnApiRunner: the DirectRunner's engine and the
    embedded portable job service. Dataflow, Flink and Spark materialise
    between stages themselves.
    """
    name = _runner_name(options)
    if name == "direct":
        return True
    return name == "portable" and options.view_as(PortableOptions).job_endpoint == "embed"


def prepare(argv: Optional[Sequence[str]]) -> tuple[CurationConfig, list[str]]:
    """Parse and check everything; return the run's config and the Beam arguments."""
    args, beam_args = parse_curation_args(argv)
    options = PipelineOptions(list(argv or []))
    paths, sizes = resolve_inputs(args.input)
    fmt = _input_format(paths, args.input_format)
    layout = _probe(
        paths,
        fmt,
        dict(
            **_fields(paths, fmt, args),
            column_names=args.column_names,
            max_text_bytes=args.max_text_bytes,
            batch_size=args.batch_size,
        ),
    )
    handoff = _handoffs(args, fmt, layout)
    if "datacomp" in handoff:
        _check_uid_keys(paths, layout)
    worldwide, language_offsets = None, ()
    try:
        if args.mode == "metaclip2":
            metadata = load_language_metadata(args.metadata)
            require_language(metadata, "en")
            worldwide = _worldwide_settings(args, layout)
            language_offsets = tuple(zip(metadata.languages, metadata.offsets))
        else:
            metadata = load_metadata(args.metadata)
    except MetadataError as error:
        raise UsageError(str(error)) from None
    if args.reshard_dir is not None:
        _check_reshard_dir(args.reshard_dir, paths, args.output_dir, args.overwrite)
    _clear_unfinished_outputs(args.output_dir, args.overwrite)
    if args.reshard_dir is not None:
        _clear_reshard_dir(args.reshard_dir)
    num_shards = args.num_shards or max(1, math.ceil(_caption_bytes(paths, sizes, layout) / BYTES_PER_SHARD))
    config = CurationConfig(
        paths=tuple(paths),
        layout=layout,
        metadata_path=args.metadata,
        metadata_sha256=metadata.sha256,
        num_entries=metadata.num_entries if worldwide else len(metadata),
        threshold=args.threshold,
        seed=args.seed,
        output_dir=args.output_dir,
        num_shards=num_shards,
        handoff=handoff,
        reshard_dir=args.reshard_dir.rstrip("/") if args.reshard_dir else None,
        samples_per_shard=args.samples_per_shard,
        img2dataset_key_column=_img2dataset_key_column(layout),
        spill_dir=FileSystems.join(args.output_dir, SPILL_DIR) if _spills(options) else None,
        local=_local_workers(args) if _spills(options) else None,
        strict=args.strict,
        target_size=args.target_size,
        report=args.report,
        worldwide=worldwide,
        language_offsets=language_offsets,
    )
    return config, beam_args


def _caption_bytes(paths: Sequence[str], sizes: dict, layout: InputLayout) -> int:
    """The input's bytes of caption data, as a shard writer holds them (transforms.formats.input_size)."""
    if layout.format == WEBDATASET:
        # Webdataset shards are mostly image bytes: count ~1/64 of them as caption data.
        return sum(sizes[path] for path in paths) // WEBDATASET_BYTES_PER_CAPTION_BYTE
    columns = [layout.text_field, layout.key_column] + [
        layout.url_field if name == "url" and layout.url_field else name for name, _ in layout.passthrough
    ]
    compression = CompressionTypes.UNCOMPRESSED
    return data_bytes(paths, sizes, layout.format, columns, lambda path: FileSystems.open(path, compression_type=compression))


def _local_workers(args) -> LocalWorkers:
    if args.cache_dir is not None and args.cache_dir.strip().lower() == "none":
        return LocalWorkers(cache_dir=None)
    return LocalWorkers(cache_dir=args.cache_dir or default_cache_dir())


def _worldwide_settings(args, layout: InputLayout) -> WorldwideSettings:
    """--mode metaclip2's language options, checked (the language-id model is loaded now)."""
    if args.lang_field is not None and args.lang_field not in [name for name, _ in layout.passthrough]:
        raise UsageError(f"--lang_field {args.lang_field!r} is not a field of the input (its fields: "
                         f"{', '.join(name for name, _ in layout.passthrough) or 'none besides key and text'})")
    language_map = args.language_map
    if language_map is not None and "=" not in language_map and not language_map.lstrip().startswith("{"):
        try:
            with FileSystems.open(language_map, compression_type="uncompressed") as handle:
                language_map = handle.read().decode("utf-8")
        except Exception as error:  # noqa: BLE001 - one clear line
            raise UsageError(f"--language_map {args.language_map!r} is neither A=B pairs nor a readable JSON file: {error}") from None
    try:
        LanguageMap.parse(language_map)
        identifier = language_identifier(args.language_id, args.lang_field)
        if identifier is not None:
            identifier.load()
    except (ValueError, ImportError) as error:
        raise UsageError(f"{error}") from None
    return WorldwideSettings(args.lang_field, args.language_id, language_map, args.default_language.strip())


def entry_counts_document(metadata_path: str, counts, worldwide: bool = False, checked_sha256: str = "") -> dict:
    """entry_counts.json: every entry -> its caption count, in metadata order.

    metaclip2: {language: {entry: count}}, languages sorted (the global id order).
    """
    if not worldwide:
        entries = load_metadata(metadata_path, checked_sha256).entries
        return dict(zip(entries, counts.tolist()))
    metadata = load_language_metadata(metadata_path)
    counts = counts.tolist()
    document = {}
    for language in metadata.languages:
        span = metadata.entry_range(language)
        document[language] = dict(zip(metadata.entries[language], counts[span.start : span.stop]))
    return document


def _plan(counts, config: "CurationConfig"):
    if config.worldwide is None:
        return plan_for_threshold(counts, config.threshold)
    return plan_for_languages(counts, load_language_metadata(config.metadata_path), config.threshold)


def _matches_with_local_ids(batch: pa.RecordBatch, language_offsets: tuple) -> pa.RecordBatch:
    """metaclip2's matches/ rows: `lang` and entry ids into that language's own list."""
    offsets = dict(language_offsets)
    languages = batch.column(LANGUAGE).to_pylist()
    list_offsets, flat = list_layout(batch.column(ENTRY_IDS))
    row_offsets = np.fromiter((offsets.get(language, 0) for language in languages), dtype=np.int64, count=len(languages))
    local = flat.astype(np.int64) - np.repeat(row_offsets, np.diff(list_offsets))
    entry_ids = pa.ListArray.from_arrays(pa.array(list_offsets.astype(np.int32)), pa.array(local.astype(np.int32), pa.int32()))
    names = [KEY, LANG, ENTRY_IDS, KEEP_PROB, KEY_HASH, SOURCE_FILE, SOURCE_ROW]
    columns = [batch.column(KEY), batch.column(LANGUAGE), entry_ids, batch.column(KEEP_PROB),
               batch.column(KEY_HASH), batch.column(SOURCE_FILE), batch.column(SOURCE_ROW)]
    return pa.RecordBatch.from_arrays(columns, names=names)


def build_curation(pipeline: beam.Pipeline, config: CurationConfig) -> dict:
    """Add the curation to `pipeline`; return its main PCollections by name.

    Two passes over the pool: the first reads, matches and counts, and keeps
    the matched batches (StoreBatches); the second samples them with the
    counts and writes every output. With `config.spill_dir` the batches wait
    on disk between the passes (transforms.beam.spill).
    """
    spill_dir = config.spill_dir
    reader = ReadCaptions(config.paths, config.layout, strict=config.strict)
    read = pipeline | "ReadCaptions" >> reader
    matched = read.batches | "MatchEntries" >> MatchEntries(config.metadata_path, config.metadata_sha256, config.worldwide, config.local)
    counts = matched | "CountEntries" >> CountEntries(config.num_entries)
    stored = matched | "StoreMatched" >> StoreBatches(spill_dir and FileSystems.join(spill_dir, "matched"), "matched")

    if config.target_size is None:
        plan = counts | "PlanBalancing" >> beam.Map(_plan, config)
    else:
        plan = _plan_for_target_size(stored, counts, config)
    sampled = (
        stored
        | "LoadMatched" >> LoadBatches(spill_dir)
        | "BalancedSample" >> BalancedSample(plan, config.seed)
    )

    shards_dir = spill_dir and FileSystems.join(spill_dir, "shards")
    match_rows, matches_schema = sampled, MATCHES_SCHEMA
    if config.worldwide:
        match_rows = sampled | "LocalEntryIds" >> beam.Map(_matches_with_local_ids, config.language_offsets)
        matches_schema = WORLDWIDE_MATCHES_SCHEMA
    matches = match_rows | "WriteMatches" >> WriteParquetShards(config.output("matches"), config.num_shards, matches_schema, spill_dir=shards_dir)
    written = [
        matches.written,
        (
            sampled
            | "WriteSubset" >> WriteParquetShards(config.output("subset"), config.num_shards, config.subset_schema, kept_only=True, spill_dir=shards_dir)
        ).written,
        read.rejected
        | "RejectionsToJson" >> beam.Map(lambda rejection: rejection.to_json())
        | "WriteRejected" >> WriteJsonLinesShards(config.output("rejected"), max(1, config.num_shards // 16)),
    ]
    written += build_handoff(sampled, reader.listed_files, config)
    written += build_report_data(sampled, counts, plan, config)
    metadata_path, worldwide, sha256 = config.metadata_path, config.worldwide is not None, config.metadata_sha256
    written.append(
        pipeline
        | "WriteEntryCounts"
        >> WriteJsonFile(config.output("entry_counts.json"), lambda counts: entry_counts_document(metadata_path, counts, worldwide, sha256), {"counts": counts})
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
        lambda batch, rejected, counts, plan: stats_document(batch, rejected, counts, _run_figures(run_figures, plan), head=plan.entry_probs < 1.0),
        {"batch": batch_stats, "rejected": rejected_stats, "counts": counts, "plan": plan},
        after=written,
    )
    if config.report:
        # After stats.json: the report reads it. A failed report leaves a finished run;
        # `python -m beam_pipeline.report OUTPUT_DIR` writes it again.
        output_dir = config.output_dir
        stats | "WriteReport" >> beam.Map(lambda _: write_report(output_dir))
    if spill_dir:
        stats | "DeleteSpillFiles" >> beam.Map(lambda _: delete_spill_dir(spill_dir))
    return {"batches": read.batches, "rejected": read.rejected, "matched": matched, "counts": counts, "sampled": sampled, "stats": stats}


def _run_figures(figures: dict, plan) -> dict:
    figures = {**figures, "threshold": plan.threshold}  # --target_size: the t it chose
    if plan.thresholds:  # metaclip2: each language's t (English's is --threshold)
        return {**figures, "thresholds_by_language": dict(sorted(plan.thresholds.items()))}
    return figures


def _plan_for_target_size(stored, counts, config: "CurationConfig"):
    """--target_size: two extra passes over the matched batches find t, then the plan.

    E(t) is nondecreasing in t: a coarse grid over 1 .. the largest count brackets
    the target, a fine grid inside the bracket picks the integer t whose E(t) is
    closest (transforms.core.expected_size).
    """
    target = config.target_size
    coarse_grid = counts | "CoarseGrid" >> beam.Map(threshold_grid)
    coarse = (
        stored
        | "LoadForCoarseSizes" >> LoadBatches(config.spill_dir)
        | "CoarseSizes" >> ExpectedSizes(counts, coarse_grid)
    )
    # Each derived singleton takes the LATEST of its inputs as its main input and the
    # earlier ones as side inputs: the FnApiRunner may otherwise run a stage whose
    # side input is not computed yet, and hand it an empty one.
    fine_grid = coarse | "FineGrid" >> beam.Map(lambda sizes, grid: finer_grid(grid, sizes, target), beam.pvalue.AsSingleton(coarse_grid))
    fine = (
        stored
        | "LoadForFineSizes" >> LoadBatches(config.spill_dir)
        | "FineSizes" >> ExpectedSizes(counts, fine_grid)
    )
    chosen = fine | "ChooseThreshold" >> beam.Map(lambda sizes, grid: threshold_for_target(grid, sizes, target), beam.pvalue.AsSingleton(fine_grid))
    return chosen | "PlanBalancing" >> beam.Map(lambda t, counts: plan_for_threshold(counts, t), beam.pvalue.AsSingleton(counts))


def _figure_entries(metadata_path: str, worldwide: bool, checked_sha256: str) -> list[str]:
    """Entry names by id for figures.json: the list, or (metaclip2) 'language:entry' by global id."""
    if not worldwide:
        return load_metadata(metadata_path, checked_sha256).entries
    metadata = load_language_metadata(metadata_path)
    return [f"{language}:{entry}" for language in metadata.languages for entry in metadata.entries[language]]


def build_report_data(sampled, counts, plan, config: "CurationConfig") -> list:
    """figures.json and entry_counts_kept.json, from the sampling pass; their outputs, for stats.json's `after`.

    E(t) over a grid around the run's t comes free here (metaclip1: one t for all).
    """
    metadata_path, worldwide, target = config.metadata_path, config.worldwide is not None, config.target_size
    sha256 = config.metadata_sha256
    figures = sampled | "ReportFigures" >> ReportFigures()
    kept_counts = sampled | "KeptEntryCounts" >> KeptEntryCounts(config.num_entries)
    if worldwide:  # a t per language: E as a function of English's t is not computed
        grid = plan | "NoGrid" >> beam.Map(lambda _: np.zeros(0, dtype=np.int64))
        sizes = grid | "NoSizes" >> beam.Map(lambda _: None)
    else:
        grid = plan | "SizeGrid" >> beam.Map(lambda plan, counts: threshold_grid(counts, extra=[plan.threshold]), beam.pvalue.AsSingleton(counts))
        sizes = sampled | "SizeVersusThreshold" >> ExpectedSizes(counts, grid)

    def figures_json(figures, grid, sizes, plan):
        table = size_table(grid, sizes)
        expected = dict(table).get(plan.threshold)
        chosen = {"threshold": plan.threshold, "target_size": target, "expected_kept": expected}
        return figures_document(figures, _figure_entries(metadata_path, worldwide, sha256), table, chosen)

    return [
        sampled.pipeline
        | "WriteFigures"
        >> WriteJsonFile(config.output("figures.json"), figures_json, {"figures": figures, "grid": grid, "sizes": sizes, "plan": plan}),
        sampled.pipeline
        | "WriteKeptEntryCounts"
        >> WriteJsonFile(config.output("entry_counts_kept.json"), lambda counts: entry_counts_document(metadata_path, counts, worldwide, sha256),
                         {"counts": kept_counts}),
    ]



def build_handoff(sampled, listed_files, config: CurationConfig) -> list:
    """The training hand-off writers the config asks for; their outputs, for stats.json's `after`.

    `listed_files`: (index, path) of every input file (ReadCaptions.listed_files).
    """
    written = []
    if "webdataset" in config.handoff or config.reshard_dir:
        keep_lists = "webdataset" in config.handoff
        written += sampled | "WebdatasetHandoff" >> WebdatasetHandoff(
            listed_files,
            config.output(KEPT_KEYS_DIR) if keep_lists else None,
            key_files_need_index(config.paths),
            config.output(SHARDS_JSON) if keep_lists else None,
            config.reshard_dir,
            config.samples_per_shard,
            manifest_extra={"source": {"output_dir": config.output_dir, "threshold": config.threshold, "seed": config.seed,
                                       "input_shards": len(config.paths)}},
        )
    if "datacomp" in config.handoff:
        written.append(sampled | "WriteSubsetUids" >> WriteSubsetUids(config.output(SUBSET_UIDS), config.num_shards))
    if "img2dataset" in config.handoff:
        written.append(
            sampled
            | "WriteImg2dataset"
            >> WriteImg2datasetShards(
                config.output(IMG2DATASET_DIR), config.num_shards, config.img2dataset_key_column,
                spill_dir=config.spill_dir and FileSystems.join(config.spill_dir, "shards"),
            )
        )
    return written


def _runner_name(options: PipelineOptions) -> str:
    """The runner as Beam resolves --runner: class name, lower case, no 'runner' suffix ('direct', 'dataflow')."""
    name = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    return name[: -len("runner")] if name.endswith("runner") else name


def make_runner(options: PipelineOptions):
    """The DirectRunner's own engine, the Python FnApiRunner, chosen explicitly.

    Left to itself the DirectRunner first tries to download a Prism binary,
    which waits on the network where there is none; every other runner is
    used as given. As the DirectRunner does, the runner hands the pipeline
    options to the SDK worker processes of --direct_running_mode=multi_processing
    (filesystem settings such as --s3_endpoint_url, the pickler).
    """
    if _runner_name(options) == "direct":
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=provision_info)
    return None


def _runs_here(options: PipelineOptions) -> bool:
    """Whether the job needs this process until it ends: on every runner but Dataflow.

    A Dataflow job (a Flex Template launch included) runs on in the service.
    Everywhere else the submitter must wait: the DirectRunner and an embedded
    job service run the job here, a LOOPBACK environment runs the SDK workers
    here, and FlinkRunner, SparkRunner and PrismRunner start their job server
    as a child of this process; all of them end when it exits.
    """
    return _runner_name(options) not in ("dataflow", "testdataflow")


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
        (f"head entries (count > {stats['threshold']})" if not config.worldwide else "head entries (count > their language's t)",
         stats["entries_over_threshold"]),
        ("seconds", f"{seconds:.1f}"),
        ("captions/s", f"{read / seconds:,.0f}" if seconds > 0 else "-"),
    ]
    if stats.get("target_size") is not None:
        rows.insert(0, (f"t chosen for --target_size {stats['target_size']:,}", f"{stats['threshold']:,} (expected size {stats['expected_kept']:,.0f})"))
    if config.report:
        rows.append(("report", config.output("report.html")))
    if stats.get("thresholds_by_language"):
        shown = sorted(stats["thresholds_by_language"].items(), key=lambda item: item[0] != "en")[:8]
        more = len(stats["thresholds_by_language"]) - len(shown)
        rows.append(("t per language", ", ".join(f"{lang} {t}" for lang, t in shown) + (f", ... ({more} more in stats.json)" if more > 0 else "")))
    rows += _handoff_summary(config)
    width = max(len(name) for name, _ in rows)
    print(f"curation finished: {config.output_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _handoff_summary(config: CurationConfig) -> list[tuple[str, str]]:
    rows = []
    if "webdataset" in config.handoff:
        with FileSystems.open(config.output(SHARDS_JSON)) as handle:
            shards = json.load(handle)
        rows.append(("webdataset key lists", f"{shards['kept']:,} kept keys of {len(shards['shards'])} input shards in {KEPT_KEYS_DIR}/"))
    if config.reshard_dir:
        with FileSystems.open(FileSystems.join(config.reshard_dir, MANIFEST)) as handle:
            manifest = json.load(handle)
        rows.append(("resharded", f"{manifest['train_num_samples']:,} samples in {manifest['num_shards']} shards: {manifest['train_data']}"))
    if "datacomp" in config.handoff:
        rows.append(("DataComp uids", config.output(SUBSET_UIDS)))
    if "img2dataset" in config.handoff:
        rows.append(("img2dataset list", config.output(IMG2DATASET_DIR, "*.parquet")))
    return rows


@contextlib.contextmanager
def _quiet_beam_errors(quiet: bool):
    logger = logging.getLogger("apache_beam")
    level = logger.level
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run a curation from command-line arguments; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config, _ = prepare(argv)
        progress_seconds = parse_curation_args(argv)[0].progress
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = PipelineOptions(argv)
    runner = make_runner(options)
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_curation(pipeline, config)
    try:
        # Beam logs a failing step's traceback before raising; a --strict stop is
        # a finding about the data, told in one line below.
        progress = ProgressReporter(config.spill_dir, progress_seconds) if config.spill_dir else contextlib.nullcontext()
        with _quiet_beam_errors(config.strict), progress:
            result = pipeline.run()
            if not _runs_here(options):
                # Dataflow: the job runs on in the service, without this process.
                print(f"submitted to {options.view_as(StandardOptions).runner}; stats.json in {config.output_dir} marks its end")
                return 0
            result.wait_until_finish()
    except Exception as error:  # noqa: BLE001 - only a --strict rejection is handled
        message = strict_failure(error) if config.strict else None
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    _print_summary(config, time.monotonic() - started)
    return 0


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run())


if __name__ == "__main__":
    main()
