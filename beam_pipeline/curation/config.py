"""CurationConfig: everything a run needs, checked; `prepare` builds it without touching a file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.curation import checks, inputs, stage_checks
from beam_pipeline.curation.outputs import SPILL_DIR
from beam_pipeline.curation.runners import runner_name, spills
from beam_pipeline.options import CurationArgs, UsageError
from transforms.beam.match import LocalWorkers
from transforms.beam.modes import CurationMode, MetaClip1, MetaClip2
from transforms.core.columns import KEY, TEXT
from transforms.core.matching import DAACHORSE
from transforms.core.stats import filter_run_figures
from transforms.filters.datacomp import FilterSpec
from transforms.formats.embeddings import EmbeddingSource
from transforms.formats.layout import InputLayout, key_root
from transforms.metadata.lists import MetadataError
from transforms.runtime.automaton_cache import default_cache_dir
from transforms.selection.stage import SelectSpec

# Caption data (in memory, uncompressed) per output shard: a shard writer holds
# its shard and sorts it (transforms.formats.input_size).
BYTES_PER_SHARD = 64 << 20


@dataclass(frozen=True)
class CurationConfig:
    """Everything a run needs, checked: built by `prepare`, used by `graph.build_curation`."""

    paths: tuple[str, ...]  # every input file, sorted, as listed before the run
    layout: InputLayout
    mode: Optional[CurationMode]  # metaclip1 or metaclip2; None: --balance none (no MetaCLIP balancing)
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
    # Engines whose worker processes run on this machine: the automaton cache.
    local: Optional[LocalWorkers] = None
    # DataComp filters before balancing (None: no filter stage); where the embeddings are;
    # the image filter's target clusters when given as ids (else computed from features).
    filters: Optional[FilterSpec] = None
    embeddings: Optional[EmbeddingSource] = None
    target_clusters: Optional[tuple] = None
    # The --input values: the pipeline lists the files from them again (transforms.beam.read).
    input_patterns: tuple[str, ...] = ()
    # Cross-covariance selection after balancing (None: no selection stage).
    select: Optional[SelectSpec] = None

    @property
    def subset_schema(self) -> pa.Schema:
        return pa.schema(
            [(KEY, pa.string()), (TEXT, pa.string())] + [pa.field(n, t) for n, t in self.layout.passthrough]
        )

    @property
    def shards_spill_dir(self) -> Optional[str]:
        """Where the shard writers gather their rows through files (None: through the runner)."""
        return self.spill_dir and FileSystems.join(self.spill_dir, "shards")

    def output(self, *parts: str) -> str:
        return FileSystems.join(self.output_dir, *parts)

    def run_figures(self) -> dict:
        files = {"input_files": len(self.paths), "num_shards": self.num_shards}
        if self.mode is None:  # --balance none
            figures = {"balance": "none", **files}
            if self.select is not None:
                figures["seed"] = self.seed  # the selection's tie keys depend on it
        else:  # keys in the order stats.json has always had them
            figures = {
                "threshold": self.threshold,
                "seed": self.seed,
                **files,
                "metadata_sha256": self.mode.metadata_sha256,
                "mode": self.mode.name,
                **({"target_size": self.target_size} if self.target_size is not None else {}),
            }
        return {**figures, **filter_run_figures(self.filters)} if self.filters else figures


def prepare(args: CurationArgs, options: PipelineOptions) -> CurationConfig:
    """Check inputs, metadata and outputs against the options; return the run's config.

    Reads what it must (input listings, first rows and footers, the metadata) and
    writes nothing: clearing an earlier run's outputs is outputs.clear_outputs.
    Raises UsageError with one line.
    """
    checks.check_remote_paths(args, runner_name(options), bool(options.get_all_options().get("dry_run")))
    paths, sizes = inputs.resolve_inputs(args.input)
    fmt = inputs.input_format(paths, args.input_format)
    layout_options = dict(
        **inputs.fields(paths, fmt, args),
        column_names=args.column_names,
        max_text_bytes=args.max_text_bytes,
        batch_size=args.batch_size,
    )
    # Keys of records without one name their file below the inputs' common folder.
    layout = dataclasses.replace(inputs.probe(paths, fmt, layout_options), key_root=key_root(paths))
    handoff = checks.handoffs(args, fmt, layout)
    if "datacomp" in handoff:
        checks.check_uid_keys(paths, layout)
    stages = stage_checks.stages_of(args.stages, layout, paths, args.seed)
    mode = _mode(args, layout) if args.stages.balance == "metaclip" else None
    if args.reshard_dir is not None:
        checks.check_reshard_dir(args.reshard_dir, paths, args.output_dir, args.overwrite)
    checks.check_output_dir(args.output_dir, args.overwrite)
    num_shards = args.num_shards or max(1, math.ceil(inputs.caption_bytes(paths, sizes, layout) / BYTES_PER_SHARD))
    local = spills(options)
    return CurationConfig(
        paths=tuple(paths),
        layout=layout,
        mode=mode,
        threshold=args.threshold,
        seed=args.seed,
        output_dir=args.output_dir,
        num_shards=num_shards,
        handoff=handoff,
        # Absolute: manifest.json's train_data must be readable from any working directory.
        reshard_dir=checks.absolute_path(args.reshard_dir.rstrip("/")) if args.reshard_dir else None,
        samples_per_shard=args.samples_per_shard,
        img2dataset_key_column=checks.img2dataset_key_column(layout),
        spill_dir=FileSystems.join(args.output_dir, SPILL_DIR) if local else None,
        local=_local_workers(args) if local else None,
        strict=args.strict,
        target_size=args.target_size,
        report=args.report,
        filters=stages.filters,
        embeddings=stages.embeddings,
        target_clusters=stages.target_clusters,
        # The selection's member blocks wait in files on local engines (transforms.beam.select_parts).
        select=stages.select
        and dataclasses.replace(
            stages.select, spill_dir=FileSystems.join(args.output_dir, SPILL_DIR, "select") if local else None
        ),
        input_patterns=tuple(args.input),
    )


def _mode(args: CurationArgs, layout: InputLayout) -> CurationMode:
    try:
        if args.mode == "metaclip2":
            return dataclasses.replace(MetaClip2.load(args.metadata), settings=checks.worldwide_settings(args, layout))
        return MetaClip1.load(args.metadata, args.matcher or DAACHORSE)
    except MetadataError as error:
        raise UsageError(str(error)) from None


def _local_workers(args: CurationArgs) -> LocalWorkers:
    if args.cache_dir is not None and args.cache_dir.strip().lower() == "none":
        return LocalWorkers(cache_dir=None)
    return LocalWorkers(cache_dir=args.cache_dir or default_cache_dir())
