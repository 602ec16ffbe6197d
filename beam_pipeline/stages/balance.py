"""Balancing as a stage: --balance metaclip (MetaCLIP's, docs/curation.md) or none (every record kept).

The metadata and balancing flags (--metadata, --mode, --threshold, ...) are declared in
beam_pipeline.options with the run's; --balance is declared here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.option_checks import BadValue, UsageError
from beam_pipeline.stage_rows import metaclip_rows, no_balancing_rows
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.balance import KeepAll, MetaClipBalance
from transforms.beam.modes import CurationMode, MetaClip1, MetaClip2, WorldwideSettings
from transforms.beam.report_data import ExpectedSizes, KeptEntryCounts, ReportFigures
from transforms.beam.sink import ShardedOutput
from transforms.beam.write import ParquetShards, WriteJsonFiles
from transforms.core.expected_size import threshold_grid
from transforms.core.matching import DAACHORSE
from transforms.core.report_figures import figures_document, size_table
from transforms.core.stats import balancing_sections, batch_figures
from transforms.metadata.lists import MetadataError
from transforms.worldwide.language_id import language_identifier
from transforms.worldwide.language_map import LanguageMap

BALANCES = ("metaclip", "none")
# The flags only MetaCLIP balancing reads: refused with --balance none.
METACLIP_FLAGS = ("metadata", "target_size", "mode", "matcher")


class MetaClipBalancing(Stage):
    """--balance metaclip: match every caption, count per entry, keep each with P = 1 - prod(1 - p_e)."""

    name = "Balance"
    fate = "balanced_out"

    def __init__(self, mode: CurationMode, threshold: int, seed: int, target_size: Optional[int]):
        self.mode = mode
        self.threshold = threshold
        self.seed = seed
        self.target_size = target_size

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--balance",
            default="metaclip",
            choices=BALANCES,
            help="metaclip: MetaCLIP balancing (needs --metadata); none: keep every record the filters pass "
            "(default: metaclip)",
        )

    @classmethod
    def check_arguments(cls, args) -> None:
        if args.balance == "none":
            hint = _recipe_hint(args)
            for name in METACLIP_FLAGS:
                default = {"mode": "metaclip1"}.get(name)
                if getattr(args, name) != default:
                    raise BadValue(f"--{name} is for MetaCLIP balancing; this run is --balance none{hint}")
        elif not args.metadata:
            raise BadValue("--metadata is required: a JSON list of entry strings (or --balance none)")

    @classmethod
    def used(cls, args) -> bool:
        return args.balance == "metaclip"

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "MetaClipBalancing":
        try:
            if args.mode == "metaclip2":
                settings = worldwide_settings(args, inputs.layout)
                mode = dataclasses.replace(MetaClip2.load(args.metadata), settings=settings)
            else:
                mode = MetaClip1.load(args.metadata, args.matcher or DAACHORSE)
        except MetadataError as error:
            raise UsageError(str(error)) from None
        return cls(mode, args.threshold, args.seed, args.target_size)

    def apply(self, batches, run: RunContext) -> StageOutput:
        balanced = batches | self.name >> MetaClipBalance(
            self.mode, self.threshold, self.seed, self.target_size, run.spill_dir, run.local
        )
        return StageOutput(balanced.batches, {"counts": balanced.counts, "plan": balanced.plan})

    def sharded_outputs(self, run: RunContext, subset_schema: pa.Schema) -> list[ShardedOutput]:
        # The match index: every record that reached balancing, its entries and keep draw.
        matches = ParquetShards(self.mode.matches_schema)
        return [ShardedOutput(run.output("matches"), run.num_shards, matches, "WriteMatches", self.mode.match_rows)]

    def write(self, final, output: StageOutput, run: RunContext) -> list:
        documents, side_inputs = _balancing_documents(final, output.figures, self.mode, self.target_size, run)
        return [final.pipeline | "WriteDocuments" >> WriteJsonFiles(documents, side_inputs)]

    def final_figures(self, batch: pa.RecordBatch) -> Counter:
        return batch_figures(batch)

    def stats(self, figures: dict, final: dict) -> dict:
        counts, plan = figures["counts"], figures["plan"]
        sections = balancing_sections(final, counts, plan.entry_probs < 1.0)
        sections["method"] = {"threshold": plan.threshold, "seed": self.seed}  # --target_size: the t it chose
        inputs = {"metadata_sha256": self.mode.metadata_sha256, "mode": self.mode.name}
        if self.target_size is not None:
            inputs["target_size"] = self.target_size
        sections["inputs"] = inputs
        if plan.thresholds:  # metaclip2: each language's t (English's is --threshold)
            sections["plan"] = {"thresholds_by_language": dict(sorted(plan.thresholds.items()))}
        return sections

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return metaclip_rows(stats)


class NoBalancing(Stage):
    """--balance none: every record that reaches the stage is kept (the writers read the keep flag it sets)."""

    name = "Balance"
    fate = ""
    keeps_every_record = True

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "NoBalancing":
        return cls()

    @classmethod
    def used(cls, args) -> bool:
        return args.balance == "none"

    def apply(self, batches, run: RunContext) -> StageOutput:
        return StageOutput((batches | self.name >> KeepAll()).batches)

    def stats(self, figures: dict, final: dict) -> dict:
        return {"method": {"balance": "none"}}

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return no_balancing_rows(stats)


def worldwide_settings(args, layout) -> WorldwideSettings:
    """--mode metaclip2's language options, checked (the language-id model is loaded now)."""
    if args.lang_field is not None and args.lang_field not in [name for name, _ in layout.passthrough]:
        fields = ", ".join(name for name, _ in layout.passthrough) or "none besides key and text"
        raise UsageError(f"--lang_field {args.lang_field!r} is not a field of the input (its fields: {fields})")
    language_map = args.language_map
    if language_map is not None and "=" not in language_map and not language_map.lstrip().startswith("{"):
        try:
            with FileSystems.open(language_map, compression_type="uncompressed") as handle:
                language_map = handle.read().decode("utf-8")
        except Exception as error:  # noqa: BLE001 - one clear line
            raise UsageError(
                f"--language_map {args.language_map!r} is neither A=B pairs nor a readable JSON file: {error}"
            ) from None
    try:
        LanguageMap.parse(language_map)
        identifier = language_identifier(args.language_id, args.lang_field)
        if identifier is not None:
            identifier.load()
    except (ValueError, ImportError) as error:
        raise UsageError(f"{error}") from None
    return WorldwideSettings(args.lang_field, args.language_id, language_map, args.default_language)


def _recipe_hint(args) -> str:
    if not args.recipe:
        return ""
    return f" (--recipe {args.recipe} implies it: add --balance metaclip to balance the filtered pool)"


def _balancing_documents(final, figures: dict, mode: CurationMode, target: Optional[int], run: RunContext):
    """entry_counts.json, figures.json and entry_counts_kept.json, for one WriteJsonFiles:
    (documents, side inputs). E(t) over a grid around the run's t comes free with the
    sampling pass, for modes with one t for all.
    """
    plan, counts = figures["plan"], figures["counts"]
    report_figures = final | "ReportFigures" >> ReportFigures()
    kept_counts = final | "KeptEntryCounts" >> KeptEntryCounts(mode.num_entries)
    if mode.single_threshold:
        grid = plan | "SizeGrid" >> beam.Map(
            lambda plan, counts: threshold_grid(counts, extra=[plan.threshold]), beam.pvalue.AsSingleton(counts)
        )
        sizes = final | "SizeVersusThreshold" >> ExpectedSizes(counts, grid)
    else:  # a t per language: E as a function of English's t is not computed
        grid = plan | "NoGrid" >> beam.Map(lambda _: np.zeros(0, dtype=np.int64))
        sizes = grid | "NoSizes" >> beam.Map(lambda _: None)

    def figures_json(figures, grid, sizes, plan):
        table = size_table(grid, sizes)
        chosen = {"threshold": plan.threshold, "target_size": target, "expected_kept": dict(table).get(plan.threshold)}
        return figures_document(figures, mode.entry_names(), table, chosen)

    def kept_counts_json(kept_counts):
        return mode.counts_document(kept_counts)

    documents = {
        run.output("entry_counts.json"): (mode.counts_document, ("counts",)),
        run.output("figures.json"): (figures_json, ("figures", "grid", "sizes", "plan")),
        run.output("entry_counts_kept.json"): (kept_counts_json, ("kept_counts",)),
    }
    side_inputs = {
        "counts": counts,
        "kept_counts": kept_counts,
        "figures": report_figures,
        "grid": grid,
        "sizes": sizes,
        "plan": plan,
    }
    return documents, side_inputs
