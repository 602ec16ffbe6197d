"""The curation's pipeline graph: a chain of stages over record batches, then stats.json and the report.

    ReadCaptions      files -> Read(batches, rejected, listed_files)            transforms.beam.read
    Filter            batches -> Filtered(kept batches, filtered, threshold)    transforms.beam.filters (--filter)
    Balance           batches -> Balanced(batches + keep flag, counts, plan)    transforms.beam.balance
                      (KeepAll with --balance none: every record kept, no counts)
    Select            batches -> Selected(batches, keep flag narrowed; figures)  transforms.beam.select (--select)
    WriteOutputs      balanced batches -> every output but stats.json           (below)
    WriteStats        stats.json, after every other output: it marks a finished run
    WriteReport...    report.html and plots, from the written outputs; beside it, the spill
                      directory removed

Each stage is a PTransform over record batches with a typed `expand`; a new stage
(DataComp filters before Balance, a selection after it) is one more line in
`build_curation` and its own outputs in WriteOutputs and stats.json
(docs/architecture.md).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import PCollection

from beam_pipeline.curation.checks import absolute_path
from beam_pipeline.curation.config import CurationConfig
from beam_pipeline.curation.outputs import (
    FILTERED_DIR,
    IMG2DATASET_DIR,
    KEPT_KEYS_DIR,
    SHARDS_JSON,
    STATS_JSON,
    SUBSET_UIDS,
)
from beam_pipeline.report import write_report
from transforms.beam.balance import Balanced, KeepAll, MetaClipBalance
from transforms.beam.filters import FILTERED_SCHEMA, DataCompFilters, Filtered
from transforms.beam.handoff.datacomp import WriteSubsetUids
from transforms.beam.handoff.img2dataset import WriteImg2datasetShards
from transforms.beam.handoff.webdataset import WebdatasetHandoff
from transforms.beam.read import Read, ReadCaptions
from transforms.beam.report_data import ExpectedSizes, KeptEntryCounts, ReportFigures
from transforms.beam.select import CovarianceSelect, Selected
from transforms.beam.sink import ShardedOutput, WriteShards
from transforms.beam.spill import delete_spill_dir
from transforms.beam.stats import SumFigures
from transforms.beam.write import (
    ParquetShards,
    WriteJsonFile,
    WriteJsonFiles,
    WriteJsonLinesShards,
    WriteParquetShards,
)
from transforms.core.expected_size import threshold_grid
from transforms.core.report_figures import figures_document, size_table
from transforms.core.stats import (
    batch_figures,
    duplicate_figures,
    filtered_figures,
    kept_figures,
    rejection_figures,
    stats_document,
)
from transforms.formats.embeddings import without_npz_embeddings
from transforms.handoff.reshard import key_files_need_index


def build_curation(pipeline: beam.Pipeline, config: CurationConfig) -> dict:
    """Add the curation to `pipeline`; return its main PCollections by name."""
    read = pipeline | "ReadCaptions" >> ReadCaptions(
        config.input_patterns, config.layout, strict=config.strict, embeddings=config.embeddings
    )
    batches, filtered = read.batches, None
    if config.filters is not None:
        targets = config.target_clusters and np.asarray(config.target_clusters, dtype=np.int64)
        filtered = batches | "Filter" >> DataCompFilters(config.filters, targets)
        batches = filtered.batches
        if config.select is None and config.embeddings is not None:
            batches = batches | "DropEmbeddings" >> beam.Map(without_npz_embeddings)
    if config.mode is None:
        balanced = batches | "Balance" >> KeepAll()
    else:
        balanced = batches | "Balance" >> MetaClipBalance(
            config.mode, config.threshold, config.seed, config.target_size, config.spill_dir, config.local
        )
    final, selected = balanced.batches, None
    if config.select is not None:
        selected = final | "Select" >> CovarianceSelect(config.select)
        final = selected.batches
    written = final | "WriteOutputs" >> WriteOutputs(config, read, balanced, filtered)
    stats = _write_stats(pipeline, config, read, final, balanced, written, filtered, selected)
    # After stats.json, two independent tasks: the report (it reads stats.json; a failed
    # report leaves a finished run, and `python -m beam_pipeline.report OUTPUT_DIR` writes
    # it again) and removing the spill directory (~0.8 s for the 2.7 GB of a 4M-caption
    # run). As two elements after a Reshuffle they go to two workers and run side by side.
    tasks = ([("report", config.output_dir)] if config.report else []) + (
        [("delete_spill_dir", config.spill_dir)] if config.spill_dir else []
    )
    if tasks:
        (
            stats
            | "FinishingTasks" >> beam.FlatMap(lambda _: tasks)
            | "SpreadFinishingTasks" >> beam.Reshuffle()
            | "WriteReportDeleteSpill" >> beam.Map(_run_finishing_task)
        )
    return {
        "batches": read.batches,
        "rejected": read.rejected,
        "counts": balanced.counts,
        "sampled": balanced.batches,
        "stats": stats,
    }


class Written(NamedTuple):
    """What the write stage hands on: the outputs to wait for, and what the writers found."""

    files: list  # PCollections whose completion means an output is written (stats.json's `after`)
    duplicates: PCollection  # [dict]: repeated keys per matches/ shard


class WriteOutputs(beam.PTransform):
    """The write stage: every output of a run but stats.json and the report.

    In: the balanced batches (keep flag set). Out: `Written`. The counts and plan
    (entry_counts.json, figures.json) and the rejections come from the stages
    that made them (`read`, `balanced`).
    """

    def __init__(self, config: CurationConfig, read: Read, balanced: Balanced, filtered: Optional[Filtered] = None):
        super().__init__()
        self._config = config
        self._read = read
        self._balanced = balanced
        self._filtered = filtered

    def expand(self, sampled: PCollection[pa.RecordBatch]) -> Written:
        config, mode = self._config, self._config.mode
        files = []
        subset_format = ParquetShards(config.subset_schema, kept_only=True)
        if mode is None:
            shards = sampled | "WriteSubset" >> WriteShards(
                config.output("subset"), config.num_shards, subset_format, config.shards_spill_dir, "WriteSubset"
            )
        else:  # MetaCLIP balancing: the match index too, both in one stage; its shards report repeated keys
            shards = sampled | "WriteMatchesAndSubset" >> WriteShards(
                config.output("matches"),
                config.num_shards,
                ParquetShards(mode.matches_schema),
                config.shards_spill_dir,
                "WriteMatches",
                prepare=mode.match_rows,
                together=[ShardedOutput(config.output("subset"), config.num_shards, subset_format, "WriteSubset")],
            )
        duplicates = shards.figures
        rejected = (
            self._read.rejected
            | "RejectionsToJson" >> beam.Map(lambda rejection: rejection.to_json())
            | "WriteRejected" >> WriteJsonLinesShards(config.output("rejected"), max(1, config.num_shards // 16))
        )
        files += [shards.written, rejected.written]
        if self._filtered is not None:
            filtered = self._filtered.filtered | "WriteFiltered" >> WriteParquetShards(
                config.output(FILTERED_DIR),
                max(1, config.num_shards // 4),
                FILTERED_SCHEMA,
                spill_dir=config.shards_spill_dir,
                spill_label="WriteFiltered",
            )
            files.append(filtered.written)
        files += _write_handoff(sampled, self._read.listed_files, config)
        if mode is not None:
            documents, side_inputs = _balancing_documents(sampled, self._balanced, config)
            files.append(sampled.pipeline | "WriteDocuments" >> WriteJsonFiles(documents, side_inputs))
        return Written(files, duplicates)


def _write_handoff(sampled, listed_files, config: CurationConfig) -> list:
    """The training hand-off writers the config asks for; their outputs, for stats.json's `after`.

    `listed_files`: (index, path) of every input file (ReadCaptions' Read.listed_files).
    """
    written = []
    if "webdataset" in config.handoff or config.reshard_dir:
        keep_lists = "webdataset" in config.handoff
        source = {
            "output_dir": absolute_path(config.output_dir),
            "threshold": config.threshold,
            "seed": config.seed,
            "input_shards": len(config.paths),
        }
        written += sampled | "WebdatasetHandoff" >> WebdatasetHandoff(
            listed_files,
            config.output(KEPT_KEYS_DIR) if keep_lists else None,
            key_files_need_index(config.paths),
            config.output(SHARDS_JSON) if keep_lists else None,
            config.reshard_dir,
            config.samples_per_shard,
            manifest_extra={"source": source},
        )
    if "datacomp" in config.handoff:
        written.append(sampled | "WriteSubsetUids" >> WriteSubsetUids(config.output(SUBSET_UIDS), config.num_shards))
    if "img2dataset" in config.handoff:
        written.append(
            (
                sampled
                | "WriteImg2dataset"
                >> WriteImg2datasetShards(
                    config.output(IMG2DATASET_DIR),
                    config.num_shards,
                    config.img2dataset_key_column,
                    spill_dir=config.shards_spill_dir,
                )
            ).written
        )
    return written


def _balancing_documents(sampled, balanced: Balanced, config: CurationConfig) -> tuple[dict, dict]:
    """entry_counts.json, figures.json and entry_counts_kept.json, for one WriteJsonFiles:
    (documents, side inputs). E(t) over a grid around the run's t comes free with the
    sampling pass, for modes with one t for all.
    """
    mode, target, plan, counts = config.mode, config.target_size, balanced.plan, balanced.counts
    figures = sampled | "ReportFigures" >> ReportFigures()
    kept_counts = sampled | "KeptEntryCounts" >> KeptEntryCounts(mode.num_entries)
    if mode.single_threshold:
        grid = plan | "SizeGrid" >> beam.Map(
            lambda plan, counts: threshold_grid(counts, extra=[plan.threshold]), beam.pvalue.AsSingleton(counts)
        )
        sizes = sampled | "SizeVersusThreshold" >> ExpectedSizes(counts, grid)
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
        config.output("entry_counts.json"): (mode.counts_document, ("counts",)),
        config.output("figures.json"): (figures_json, ("figures", "grid", "sizes", "plan")),
        config.output("entry_counts_kept.json"): (kept_counts_json, ("kept_counts",)),
    }
    side_inputs = {
        "counts": counts,
        "kept_counts": kept_counts,
        "figures": figures,
        "grid": grid,
        "sizes": sizes,
        "plan": plan,
    }
    return documents, side_inputs


def _run_finishing_task(task: tuple[str, str]) -> None:
    name, path = task
    if name == "report":
        write_report(path)
    else:
        delete_spill_dir(path)


def _write_stats(
    pipeline,
    config: CurationConfig,
    read: Read,
    final: PCollection,
    balanced: Balanced,
    written: Written,
    filtered: Optional[Filtered],
    selected: Optional[Selected],
) -> PCollection:
    """stats.json, written after every other output: its presence marks a finished run.

    `final`: the batches with the run's last keep flag (after the selection, if any).
    """
    batch_stats = (
        (
            final | "BatchFigures" >> beam.Map(batch_figures if config.mode else kept_figures),
            written.duplicates | "DuplicateFigures" >> beam.Map(duplicate_figures),
        )
        | "AllBatchFigures" >> beam.Flatten()
        | "SumBatchFigures" >> beam.CombineGlobally(SumFigures())
    )
    rejected_stats = (
        read.rejected
        | "RejectionFigures" >> beam.Map(rejection_figures)
        | "SumRejectionFigures" >> beam.CombineGlobally(SumFigures())
    )
    run_figures = config.run_figures()
    side = {"batch": batch_stats, "rejected": rejected_stats}
    filters = config.filters.filters if config.filters else ()
    if filtered is not None:
        side["filtered"] = (
            filtered.filtered
            | "FilteredFigures" >> beam.Map(filtered_figures)
            | "SumFilteredFigures" >> beam.CombineGlobally(SumFigures())
        )
        if filtered.threshold is not None:
            side["clip_threshold"] = filtered.threshold
    if config.mode is not None:
        side.update(counts=balanced.counts, plan=balanced.plan)
    if selected is not None:
        side["selection"] = selected.figures

    def document(batch, rejected, filtered=None, clip_threshold=None, counts=None, plan=None, selection=None):
        run = run_figures if plan is None else _with_plan(run_figures, plan)
        if clip_threshold is not None:
            run = {**run, "clip_score_threshold": _json_float(clip_threshold)}
        if selection is not None:
            run = {**run, "selection": selection}
        head = None if plan is None else plan.entry_probs < 1.0
        return stats_document(batch, rejected, counts, run, head=head, filtered=filtered, filters=filters)

    return pipeline | "WriteStats" >> WriteJsonFile(config.output(STATS_JSON), document, side, after=written.files)


def _json_float(value: float):
    """A threshold for stats.json: NaN (nothing kept) as null, which JSON can hold."""
    return None if value != value else float(value)


def _with_plan(figures: dict, plan) -> dict:
    figures = {**figures, "threshold": plan.threshold}  # --target_size: the t it chose
    if plan.thresholds:  # metaclip2: each language's t (English's is --threshold)
        return {**figures, "thresholds_by_language": dict(sorted(plan.thresholds.items()))}
    return figures
