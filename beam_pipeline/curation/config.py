"""CurationConfig: everything a run needs, checked; `prepare` builds it without touching a file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.curation import checks, inputs
from beam_pipeline.curation.outputs import SPILL_DIR
from beam_pipeline.curation.runners import runner_name, spills
from beam_pipeline.options import CurationArgs, UsageError
from beam_pipeline.stages import configure_stages, wanted_embeddings
from beam_pipeline.stages.assets import embedding_width
from beam_pipeline.stages.base import RunContext, Stage, StageInputs
from transforms.beam.match import LocalWorkers
from transforms.core.columns import KEY, TEXT
from transforms.formats.embeddings import EmbeddingSource
from transforms.formats.layout import InputLayout, key_root
from transforms.formats.tar import WEBDATASET
from transforms.runtime.automaton_cache import default_cache_dir, unsafe_reason

# Caption data (in memory, uncompressed) per output shard: a shard writer holds
# its shard and sorts it (transforms.formats.input_size).
BYTES_PER_SHARD = 64 << 20


@dataclass(frozen=True)
class CurationConfig:
    """Everything a run needs, checked: built by `prepare`, used by `graph.build_curation`."""

    paths: tuple[str, ...]  # every input file, sorted, as listed before the run
    layout: InputLayout
    stages: tuple[Stage, ...]  # the chain, checked, in order (beam_pipeline/stages/)
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
    report: bool = True
    # Engines whose worker processes run on this machine: the automaton cache.
    local: Optional[LocalWorkers] = None
    # The CLIP embeddings the stages read, attached to each batch by ReadCaptions (None: none).
    embeddings: Optional[EmbeddingSource] = None
    # The --input values: the pipeline lists the files from them again (transforms.beam.read).
    input_patterns: tuple[str, ...] = ()

    @property
    def subset_schema(self) -> pa.Schema:
        return pa.schema(
            [(KEY, pa.string()), (TEXT, pa.string())]
            + [pa.field(n, t) for n, t in self.layout.passthrough]
            + list({field.name: field for stage in self.stages for field in stage.subset_fields()}.values())
        )

    @property
    def shards_spill_dir(self) -> Optional[str]:
        """Where the shard writers gather their rows through files (None: through the runner)."""
        return self.spill_dir and FileSystems.join(self.spill_dir, "shards")

    def output(self, *parts: str) -> str:
        return FileSystems.join(self.output_dir, *parts)

    def run_context(self) -> RunContext:
        """What the stages may use of the run."""
        return RunContext(
            self.output_dir, self.num_shards, self.seed, self.spill_dir, self.shards_spill_dir, self.local, self.output
        )

    def stage(self, kind: type) -> Optional[Stage]:
        """The run's stage of class `kind`, or None when the run has none."""
        return next((stage for stage in self.stages if isinstance(stage, kind)), None)


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
    if fmt == WEBDATASET:  # .json fields holding more texts, read as columns
        layout_options["extra_fields"] = tuple(getattr(args.flags, "extra_text_fields", None) or ())
    # Keys of records without one name their file below the inputs' common folder.
    layout = dataclasses.replace(inputs.probe(paths, fmt, layout_options), key_root=key_root(paths))
    handoff = checks.handoffs(args, fmt, layout)
    if "datacomp" in handoff:
        checks.check_uid_keys(paths, layout)
    embeddings, width = _embeddings(args.flags, layout, paths)
    stages = configure_stages(args.flags, StageInputs(layout, tuple(paths), args.seed, embeddings, width))
    if args.reshard_dir is not None:
        checks.check_reshard_dir(args.reshard_dir, paths, args.output_dir, args.overwrite)
    checks.check_output_dir(args.output_dir, args.overwrite)
    num_shards = args.num_shards or max(1, math.ceil(inputs.caption_bytes(paths, sizes, layout) / BYTES_PER_SHARD))
    local = spills(options)
    return CurationConfig(
        paths=tuple(paths),
        layout=layout,
        stages=stages,
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
        report=args.report,
        embeddings=embeddings,
        input_patterns=tuple(args.input),
    )


def _embeddings(flags, layout: InputLayout, paths) -> tuple[Optional[EmbeddingSource], int]:
    """(where the CLIP embeddings the stages read are, the image embeddings' width d), or (None, 0)."""
    names = wanted_embeddings(flags)
    if not names:
        return None, 0
    if layout.format != "parquet":
        raise UsageError(
            f"CLIP embeddings are read beside parquet shards (DataComp's pools); the input is {layout.format}"
        )
    kind = flags.embeddings or "npz"
    widths = [embedding_width(kind, layout, paths, name) for name in names]
    return EmbeddingSource(kind, names), widths[0]


def _local_workers(args: CurationArgs) -> LocalWorkers:
    if args.cache_dir is not None and args.cache_dir.strip().lower() == "none":
        return LocalWorkers(cache_dir=None)
    cache_dir = args.cache_dir or default_cache_dir()
    unsafe = unsafe_reason(cache_dir)
    if unsafe:
        raise UsageError(
            f"--cache_dir {cache_dir}: {unsafe}; the next run would load what another user put there. "
            "Use a directory only you can write (chmod 700), or --cache_dir none"
        )
    return LocalWorkers(cache_dir=cache_dir)
