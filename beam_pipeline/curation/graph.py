"""The curation's pipeline graph: ReadCaptions, the run's stages in order, the writers, stats.json, the report.

    ReadCaptions      files -> Read(batches, rejected, listed_files)            transforms.beam.read
    each stage        batches -> StageOutput(batches, figures, dropped)        beam_pipeline/stages/
                      (Filter, Balance, Select ...: the registry's order, those the flags ask for)
    WriteOutputs      the final batches -> every output but stats.json           (below)
    WriteStats        stats.json, after every other output: it marks a finished run
    WriteReport...    report.html and plots, from the written outputs; beside it, the spill
                      directory removed

The graph knows no stage by name: a new stage is a module and a line in
beam_pipeline/stages/__init__.py (docs/architecture.md, "Adding a stage").
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
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
from beam_pipeline.stages.base import Stage
from transforms.beam.filters import FILTERED_SCHEMA
from transforms.beam.handoff.img2dataset import WriteImg2datasetShards
from transforms.beam.handoff.subset_uids import WriteSubsetUids
from transforms.beam.handoff.webdataset import WebdatasetHandoff
from transforms.beam.read import Read, ReadCaptions
from transforms.beam.sink import ShardedOutput, WriteShards
from transforms.beam.spill import delete_spill_dir
from transforms.beam.stats import SumFigures
from transforms.beam.write import (
    ParquetShards,
    WriteJsonFile,
    WriteJsonLinesShards,
    WriteParquetShards,
)
from transforms.core.accounting import account, boundary_figures, dropped_figures, output_name
from transforms.core.columns import TEXTS
from transforms.core.stats import (
    duplicate_figures,
    filtered_figures,
    kept_figures,
    merge_sections,
    rejection_figures,
    run_sections,
)
from transforms.formats.embeddings import without_npz_embeddings
from transforms.handoff.reshard import key_files_need_index


class Chain(NamedTuple):
    """The stages a run applied, each with what it handed on, and the batches at the end."""

    applied: list  # [(Stage, StageOutput)], in order
    final: PCollection  # [pa.RecordBatch]: the batches after the last stage, keep flag set
    dropped: Optional[PCollection]  # [pa.RecordBatch]: key, filter of every record a stage dropped (None: none)
    # Dropped records of the stages with an output of their own (Stage.dropped_dir: dedup's
    # duplicates/): directory -> (schema, [pa.RecordBatch]); never in filtered/.
    routed: dict = {}


def apply_stages(batches: PCollection, config: CurationConfig) -> Chain:
    """Each configured stage on the batches the one before handed on."""
    run = config.run_context()
    # The embedding columns travel only as far as the last stage that reads them.
    readers = [i for i, stage in enumerate(config.stages) if stage.embedding_keys]
    applied = []
    for i, stage in enumerate(config.stages):
        output = stage.apply(batches, run)
        applied.append((stage, output))
        batches = output.batches
        if config.embeddings is not None and readers and i == readers[-1] and i < len(config.stages) - 1:
            batches = batches | "DropEmbeddings" >> beam.Map(without_npz_embeddings)
    dropped = [output.dropped for stage, output in applied if output.dropped is not None and _filtered(stage)]
    if len(dropped) > 1:
        dropped = [tuple(dropped) | "AllDropped" >> beam.Flatten()]
    routed = {
        stage.dropped_dir: (stage.dropped_schema, output.dropped)
        for stage, output in applied
        if output.dropped is not None and not _filtered(stage)
    }
    return Chain(applied, batches, dropped[0] if dropped else None, routed)


def _filtered(stage: Stage) -> bool:
    """Whether the records `stage` drops go to filtered/ (else to its own output, Stage.dropped_dir)."""
    return stage.dropped_dir == FILTERED_DIR


def build_curation(pipeline: beam.Pipeline, config: CurationConfig) -> dict:
    """Add the curation to `pipeline`; return its main PCollections by name."""
    read = pipeline | "ReadCaptions" >> ReadCaptions(
        config.input_patterns, config.layout, strict=config.strict, embeddings=config.embeddings
    )
    chain = apply_stages(read.batches, config)
    written = chain.final | "WriteOutputs" >> WriteOutputs(config, read, chain)
    stats = _write_stats(pipeline, config, read, chain, written)
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
    return {"batches": read.batches, "rejected": read.rejected, "final": chain.final, "stats": stats}


class Written(NamedTuple):
    """What the write stage hands on: the outputs to wait for, and what the writers found."""

    files: list  # PCollections whose completion means an output is written (stats.json's `after`)
    duplicates: PCollection  # [dict]: repeated keys per shard of the first sharded output
    rows: list  # PCollections of [Counter]: the rows each sharded output's writers wrote


class WriteOutputs(beam.PTransform):
    """The write stage: every output of a run but stats.json and the report.

    In: the final batches (keep flag set). Out: `Written`. subset/ and the sharded outputs
    of the stages (matches/) in one shuffle, rejected/ from ReadCaptions, filtered/ from
    the stages that drop records, the hand-offs, and each stage's own files.
    """

    def __init__(self, config: CurationConfig, read: Read, chain: Chain):
        super().__init__()
        self._config = config
        self._read = read
        self._chain = chain

    def expand(self, final: PCollection[pa.RecordBatch]) -> Written:
        config, run = self._config, self._config.run_context()
        subset = ShardedOutput(
            config.output("subset"),
            config.num_shards,
            ParquetShards(config.subset_schema, kept_only=True),
            "WriteSubset",
        )
        # Repeated keys are counted in the first of these (a stage's, holding every record, else subset/).
        outputs = [out for stage, _ in self._chain.applied for out in stage.sharded_outputs(run, config.subset_schema)]
        first, *together = outputs + [subset]
        label = "Write" + "And".join(out.label.removeprefix("Write") for out in [first, *together])
        shards = final | label >> WriteShards(
            first.directory,
            first.num_shards,
            first.format,
            config.shards_spill_dir,
            first.label,
            prepare=first.prepare,
            together=together,
        )
        rejections = [self._read.rejected] + [o.rejected for _, o in self._chain.applied if o.rejected is not None]
        if len(rejections) > 1:  # a stage's own files' lines (records 0): written, not counted as records
            rejections = [tuple(rejections) | "AllRejections" >> beam.Flatten()]
        rejected = (
            rejections[0]
            | "RejectionsToJson" >> beam.Map(lambda rejection: rejection.to_json())
            | "WriteRejected" >> WriteJsonLinesShards(config.output("rejected"), max(1, config.num_shards // 16))
        )
        files = [shards.written, rejected.written]
        rows = [shards.rows]
        dropped = self._chain.dropped
        if dropped is not None:
            filtered = dropped | "WriteFiltered" >> WriteParquetShards(
                config.output(FILTERED_DIR),
                max(1, config.num_shards // 4),
                FILTERED_SCHEMA,
                spill_dir=config.shards_spill_dir,
                spill_label="WriteFiltered",
            )
            files.append(filtered.written)
            rows.append(filtered.rows)
        for directory, (schema, records) in self._chain.routed.items():
            label = "Write" + directory.title().replace("/", "")
            routed = records | label >> WriteParquetShards(
                config.output(directory),
                max(1, config.num_shards // 4),
                schema,
                spill_dir=config.shards_spill_dir,
                spill_label=label,
            )
            files.append(routed.written)
            rows.append(routed.rows)
        handoff, handoff_rows = _write_handoff(final, self._read.listed_files, config)
        files += handoff
        rows += handoff_rows
        for stage, output in self._chain.applied:
            files += stage.write(final, output, run)
        return Written(files, shards.figures, rows)


def _write_handoff(final, listed_files, config: CurationConfig) -> list:
    """The training hand-off writers the config asks for; their outputs, for stats.json's `after`.

    `listed_files`: (index, path) of every input file (ReadCaptions' Read.listed_files).
    Also the rows written per shard of img2dataset/ (for the accounting).
    """
    written, rows = [], []
    if "webdataset" in config.handoff or config.reshard_dir:
        keep_lists = "webdataset" in config.handoff
        source = {
            "output_dir": absolute_path(config.output_dir),
            "threshold": config.threshold,
            "seed": config.seed,
            "input_shards": len(config.paths),
        }
        written += final | "WebdatasetHandoff" >> WebdatasetHandoff(
            listed_files,
            config.output(KEPT_KEYS_DIR) if keep_lists else None,
            key_files_need_index(config.paths),
            config.output(SHARDS_JSON) if keep_lists else None,
            config.reshard_dir,
            config.samples_per_shard,
            manifest_extra={"source": source},
        )
    if "datacomp" in config.handoff:
        written.append(final | "WriteSubsetUids" >> WriteSubsetUids(config.output(SUBSET_UIDS), config.num_shards))
    if "img2dataset" in config.handoff:
        img2dataset = final | "WriteImg2dataset" >> WriteImg2datasetShards(
            config.output(IMG2DATASET_DIR),
            config.num_shards,
            config.img2dataset_key_column,
            spill_dir=config.shards_spill_dir,
            with_texts=TEXTS in config.subset_schema.names,
        )
        written.append(img2dataset.written)
        rows.append(img2dataset.rows)
    return written, rows


def _run_finishing_task(task: tuple[str, str]) -> None:
    name, path = task
    if name == "report":
        write_report(path)
    else:
        delete_spill_dir(path)


def _counts_final_batches(stage: Stage) -> bool:
    return type(stage).final_figures is not Stage.final_figures


def _final_figures(batch: pa.RecordBatch, counting: list) -> dict:
    """The run's figures of one final batch, and those of each stage that counts them (keys prefixed by its place)."""
    figures = dict(kept_figures(batch))
    for i, stage in counting:
        figures.update({f"{i}|{key}": value for key, value in stage.final_figures(batch).items()})
    return figures


def _expected_rows(config: CurationConfig, chain: Chain) -> dict:
    """Sharded output -> the accounting figure its rows must equal: subset/ and img2dataset/ the
    kept records, the stages' outputs (the match index) every record at the end, filtered/ the dropped."""
    run = config.run_context()
    stages = [stage for stage, _ in chain.applied]
    expected = {
        output_name(out.directory): "accepted"
        for stage in stages
        for out in stage.sharded_outputs(run, config.subset_schema)
    }
    expected["subset"] = "kept"
    if chain.dropped is not None:  # filtered/ holds what the stages routed there dropped, the others' elsewhere
        expected[FILTERED_DIR] = tuple(i for i, stage in enumerate(stages) if _filtered(stage))
    for directory in chain.routed:
        expected[output_name(directory)] = tuple(i for i, stage in enumerate(stages) if stage.dropped_dir == directory)
    if "img2dataset" in config.handoff:
        expected[IMG2DATASET_DIR] = "kept"
    return expected


def _accounting_figures(read: Read, chain: Chain, written: Written) -> PCollection:
    """The accounting's figures (transforms.core.accounting), summed: counted at the reader per
    file, at each stage's boundary and of its dropped records, and by each sharded output's writers."""
    parts = [read.counted, read.batches | "AccountRead" >> beam.Map(boundary_figures, 0)]
    for i, (stage, output) in enumerate(chain.applied):
        parts.append(output.batches | f"Account{i}{stage.name}" >> beam.Map(boundary_figures, i + 1))
        if output.dropped is not None:
            parts.append(output.dropped | f"AccountDropped{i}{stage.name}" >> beam.Map(dropped_figures, i))
    parts += written.rows
    return tuple(parts) | "AllAccounting" >> beam.Flatten() | "SumAccounting" >> beam.CombineGlobally(SumFigures())


def _write_stats(pipeline, config: CurationConfig, read: Read, chain: Chain, written: Written) -> PCollection:
    """stats.json, written after every other output: its presence marks a finished run.

    One merge (transforms.core.stats.merge_sections) of each stage's figures and the run's,
    and the accounting (transforms.core.accounting.account): records unaccounted for fail the
    run here, before stats.json is written.
    """
    counting = [(i, stage) for i, (stage, _) in enumerate(chain.applied) if _counts_final_batches(stage)]
    final_stats = (
        (
            chain.final | "BatchFigures" >> beam.Map(_final_figures, counting),
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
    side = {"final": final_stats, "rejected": rejected_stats}
    dropped = chain.dropped
    if dropped is not None:
        side["dropped"] = (
            dropped
            | "FilteredFigures" >> beam.Map(filtered_figures)
            | "SumFilteredFigures" >> beam.CombineGlobally(SumFigures())
        )
    for i, (_, output) in enumerate(chain.applied):
        side.update({f"{i}|{name}": figures for name, figures in output.figures.items()})
    side["accounting"] = _accounting_figures(read, chain, written)
    stages = [stage for stage, _ in chain.applied]
    reasons = [reason for stage in stages for reason in stage.reasons]
    files = {"input_files": len(config.paths), "num_shards": config.num_shards}

    fates = [stage.fate for stage in stages]
    names = [stage.name for stage in stages]
    expected_rows = _expected_rows(config, chain)
    elsewhere = [i for i, stage in enumerate(stages) if not _filtered(stage)]

    def document(final, rejected, accounting, dropped=None, **figures):
        # First: a run whose records do not add up raises here, and writes no stats.json.
        records = account(accounting, rejected.get("records_rejected", 0), fates, names, expected_rows)
        run = {key: value for key, value in final.items() if "|" not in key}
        parts = []
        for i, stage in enumerate(stages):
            own = {name.split("|", 1)[1]: value for name, value in figures.items() if name.startswith(f"{i}|")}
            counted = {key.split("|", 1)[1]: value for key, value in final.items() if key.startswith(f"{i}|")}
            parts.append(stage.stats(own, counted))
        routed = sum(accounting.get(f"dropped.{i}", 0) for i in elsewhere)
        parts.append(run_sections(run, rejected, dropped or {}, reasons, files, dropped_elsewhere=routed))
        parts.append({"accounting": {"accounting": records}})
        return merge_sections(parts)

    return pipeline | "WriteStats" >> WriteJsonFile(config.output(STATS_JSON), document, side, after=written.files)
