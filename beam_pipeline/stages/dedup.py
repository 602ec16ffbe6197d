"""--dedup url,text,semantic: duplicates removed right after reading, before the filters (docs/dedup.md).

The kinds run in the order url, text, semantic, each on the survivors of the one before
(docs/dedup.md, section 4). The exact kinds are transforms.beam.dedup.ExactDedup, one
transform for both (it chains them and reads the batches once); the semantic kind is
transforms.beam.semdedup.SemanticDedup (a KindOutput, transforms.beam.dedup_kinds),
imported only when asked for. The records a kind removes are this stage's dropped records,
routed to duplicates/ (never filtered/) and counted under their own fate, `deduplicated`:
read = rejected + deduplicated + filtered + ...
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_pipeline.option_checks import BadValue, UsageError, integer, number
from beam_pipeline.stage_rows import dedup_rows
from beam_pipeline.stages.assets import column_type, open_asset
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.dedup import CAPTION, DUPLICATE_OF_CAPTION, EXACT_KINDS, URL, ExactDedup, key_shards
from transforms.beam.dedup_kinds import DUPLICATES_SCHEMA
from transforms.beam.write import WriteParquetShards
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes
from transforms.dedup.kmeans import DEFAULT_ITERATIONS
from transforms.dedup.semdedup import DEFAULT_EPS, DEFAULT_MAX_CLUSTER_SIZE, EASY, HARD

KINDS = ("url", "text", "semantic")  # the order they run in
SEMANTIC_FLAGS = (
    "semdedup_centroids",
    "semdedup_clusters",
    "semdedup_iterations",
    "semdedup_eps",
    "semdedup_keep",
    "max_cluster_size",
)
# duplicates/: DUPLICATES_SCHEMA, then the two captions of the pair (null where a kind does
# not carry them), for the report's examples and for reading the pairs without a join.
DUPLICATES_OUTPUT_SCHEMA = pa.schema(
    list(DUPLICATES_SCHEMA) + [pa.field(CAPTION, pa.string()), pa.field(DUPLICATE_OF_CAPTION, pa.string())]
)
SCORES_DIR = "semdedup/scores"


def kind_list(value: str) -> tuple[str, ...]:
    """--dedup: comma-separated kinds, returned in the order they run (KINDS)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in KINDS]
    if unknown or not names:
        raise BadValue(f"--dedup takes a comma-separated list of {', '.join(KINDS)}; got {value!r}")
    return tuple(kind for kind in KINDS if kind in names)


def eps_value(value: str) -> float:
    """--semdedup_eps: 0 < eps < 1 (a duplicate is a similarity above 1 - eps)."""
    eps = number("semdedup_eps")(value)
    if not 0 < eps < 1:
        raise BadValue(f"--semdedup_eps must be above 0 and below 1, got {value!r}")
    return eps


class SemanticSpec(NamedTuple):
    """The semantic kind's checked flags (the stage passes them to SemanticDedup)."""

    centroids_path: Optional[str]
    clusters: Optional[int]
    iterations: int
    eps: float
    keep: str
    max_cluster_size: int
    embedding_column: str  # the batch column of the image embeddings (EmbeddingSource.column)
    embedding_key: str  # --image_embedding_key


def with_output_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A kind's duplicates rows as duplicates/ takes them: DUPLICATES_OUTPUT_SCHEMA's columns
    (captions null where the kind has none), plus the writer's key hash and source columns
    (-1 where the kind does not carry them: such rows sort by key alone)."""
    n = batch.num_rows
    names = batch.schema.names
    columns = {}
    for field in DUPLICATES_OUTPUT_SCHEMA:
        columns[field.name] = batch.column(field.name) if field.name in names else pa.nulls(n, field.type)
    for name, dtype in ((SOURCE_FILE, pa.int32()), (SOURCE_ROW, pa.int64())):
        columns[name] = batch.column(name) if name in names else pa.array(np.full(n, -1), dtype)
    if KEY_HASH in names:
        columns[KEY_HASH] = batch.column(KEY_HASH)
    else:
        columns[KEY_HASH] = pa.array(key_hashes(batch.column(KEY).to_pylist()), pa.uint64())
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


class Dedup(Stage):
    """--dedup: exact (url, text) and semantic (SemDeDup) duplicates removed, in that order."""

    name = "Dedup"
    main_flag = "--dedup"
    fate = "deduplicated"
    dropped_dir = "duplicates"
    dropped_schema = DUPLICATES_OUTPUT_SCHEMA
    worker_path_flags = ("semdedup_centroids",)

    def __init__(self, kinds: tuple[str, ...], semantic: Optional[SemanticSpec], input_files: int = 1):
        self.kinds = kinds
        self.semantic = semantic
        self.input_files = input_files
        self.embedding_keys = (semantic.embedding_key,) if semantic else ()

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--dedup",
            kind_list,
            default=None,
            metavar="LIST",
            help="remove duplicates right after reading, comma-separated kinds run in the order url (same URL "
            "key), text (same caption up to case and white space), semantic (SemDeDup on the image "
            "embeddings), each on the survivors of the one before; docs/dedup.md (default: none)",
        )
        add(
            group,
            "--semdedup_centroids",
            default=None,
            metavar="FILE.npy",
            help="--dedup semantic: the K x d cluster centroids to use (else --semdedup_clusters K fits them)",
        )
        add(
            group,
            "--semdedup_clusters",
            integer("semdedup_clusters", 1),
            default=None,
            metavar="K",
            help="--dedup semantic: fit K centroids by spherical k-means (written to semdedup/centroids.npy)",
        )
        add(
            group,
            "--semdedup_iterations",
            integer("semdedup_iterations", 1),
            default=None,
            metavar="N",
            help=f"--semdedup_clusters: at most N k-means updates (default: {DEFAULT_ITERATIONS})",
        )
        add(
            group,
            "--semdedup_eps",
            eps_value,
            default=None,
            metavar="EPS",
            help=f"--dedup semantic: a record is a duplicate of an earlier one of its cluster when their "
            f"similarity is above 1 - EPS, 0 < EPS < 1 (default: {DEFAULT_EPS})",
        )
        add(
            group,
            "--semdedup_keep",
            default=None,
            choices=(HARD, EASY),
            help="--dedup semantic: keep the members farthest from their centroid first (hard, SemDeDup's) or "
            f"nearest first (easy) (default: {HARD})",
        )
        add(
            group,
            "--max_cluster_size",
            integer("max_cluster_size", 1),
            default=None,
            metavar="N",
            help="--dedup semantic: larger clusters are split into parts of about N, each deduplicated alone "
            f"(pairs across parts are never compared) (default: {DEFAULT_MAX_CLUSTER_SIZE})",
        )

    @classmethod
    def check_arguments(cls, args) -> None:
        kinds = args.dedup or ()
        if "semantic" not in kinds:
            given = [f"--{name}" for name in SEMANTIC_FLAGS if getattr(args, name) is not None]
            if given:
                raise BadValue(f"{'/'.join(given)} {'is' if len(given) == 1 else 'are'} for --dedup semantic")
            return
        if (args.semdedup_centroids is None) == (args.semdedup_clusters is None):
            raise BadValue(
                "--dedup semantic needs one of --semdedup_centroids FILE.npy (given centroids) or "
                "--semdedup_clusters K (fitted)"
            )
        if args.semdedup_iterations is not None and args.semdedup_clusters is None:
            raise BadValue("--semdedup_iterations is for --semdedup_clusters K (fitted centroids)")

    @classmethod
    def used(cls, args) -> bool:
        return bool(args.dedup)

    @classmethod
    def wanted_embeddings(cls, args) -> tuple[str, ...]:
        return (args.image_embedding_key,) if "semantic" in (args.dedup or ()) else ()

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "Dedup":
        kinds = args.dedup
        if "url" in kinds:
            dtype = column_type(inputs.layout, URL, "--dedup url: the URL column")
            if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
                raise UsageError(f"--dedup url: the URL column is {dtype}, not text")
        semantic = None
        if "semantic" in kinds:
            if args.semdedup_centroids is not None:
                check_centroids(args.semdedup_centroids, inputs.embedding_width)
            semantic = SemanticSpec(
                centroids_path=args.semdedup_centroids,
                clusters=args.semdedup_clusters,
                iterations=args.semdedup_iterations or DEFAULT_ITERATIONS,
                eps=DEFAULT_EPS if args.semdedup_eps is None else args.semdedup_eps,
                keep=args.semdedup_keep or HARD,
                max_cluster_size=args.max_cluster_size or DEFAULT_MAX_CLUSTER_SIZE,
                embedding_column=inputs.embeddings.column(args.image_embedding_key),
                embedding_key=args.image_embedding_key,
            )
        return cls(kinds, semantic, len(inputs.paths))

    def apply(self, batches, run: RunContext) -> StageOutput:
        figures, duplicates, scores = {}, [], []
        exact = tuple(kind for kind in self.kinds if kind in EXACT_KINDS)
        if exact:  # the exact kinds chained in one transform: the batches are read once for all
            shards = key_shards(self.input_files)
            out = batches | "DedupExact" >> ExactDedup(exact, run.seed, spill_dir=run.spill_dir, shards=shards)
            batches = out.survivors
            figures.update(out.figures)
            duplicates.append(out.duplicates | "DedupExactRows" >> beam.Map(with_output_columns))
        if "semantic" in self.kinds:
            out = batches | "DedupSemantic" >> self._semantic(run)
            batches = out.survivors
            figures["semantic"] = out.figures
            duplicates.append(out.duplicates | "DedupSemanticRows" >> beam.Map(with_output_columns))
            if out.scores is not None:
                scores.append(out.scores)
        if len(duplicates) > 1:
            duplicates = [tuple(duplicates) | "AllDuplicates" >> beam.Flatten()]
        outputs = {"scores": scores[0]} if scores else {}
        return StageOutput(batches, figures, duplicates[0], outputs)

    def _semantic(self, run: RunContext):
        from transforms.beam.semdedup import SemanticDedup  # the semantic kind's own module, built apart

        spec = self.semantic
        return SemanticDedup(
            centroids_path=spec.centroids_path,
            clusters=spec.clusters,
            iterations=spec.iterations,
            eps=spec.eps,
            keep=spec.keep,
            max_cluster_size=spec.max_cluster_size,
            seed=run.seed,
            embedding_column=spec.embedding_column,
            centroids_output=run.output("semdedup", "centroids.npy"),
            spill_dir=run.spill_dir,
        )

    def write(self, final, output: StageOutput, run: RunContext) -> list:
        scores = output.outputs.get("scores")
        if scores is None:
            return []
        written = (
            scores
            | "SemdedupScoresColumns" >> beam.Map(_scores_columns)
            | "WriteSemdedupScores"
            >> (
                WriteParquetShards(
                    run.output(SCORES_DIR),
                    max(1, run.num_shards // 4),
                    _scores_schema(),
                    spill_dir=run.shards_spill_dir,
                    spill_label="WriteSemdedupScores",
                )
            )
        )
        return [written.written]

    def stats(self, figures: dict, final: dict) -> dict:
        by_kind = {kind: int(figures[kind]["deduplicated"]) for kind in self.kinds}
        section: dict = {
            "records_deduplicated": sum(by_kind.values()),
            "deduplicated_by_kind": by_kind,
            "judged_by_kind": {kind: int(figures[kind]["judged"]) for kind in self.kinds},
        }
        if "semantic" in self.kinds and "semdedup" in figures["semantic"]:
            section["semdedup"] = figures["semantic"]["semdedup"]
        return {"dedup": section}

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return dedup_rows(stats)


def _scores_schema() -> pa.Schema:
    return pa.schema([pa.field(KEY, pa.string()), pa.field("cluster", pa.int64()), pa.field("score", pa.float64())])


def _scores_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A scores batch (key, cluster, score) with the writer's key hash and source columns."""
    n = batch.num_rows
    names = batch.schema.names
    columns = [batch.column(field.name).cast(field.type) for field in _scores_schema()]
    for name, dtype in ((SOURCE_FILE, pa.int32()), (SOURCE_ROW, pa.int64())):
        columns.append(batch.column(name) if name in names else pa.array(np.full(n, -1), dtype))
    columns.append(pa.array(key_hashes(batch.column(KEY).to_pylist()), pa.uint64()))
    return pa.RecordBatch.from_arrays(columns, names=_scores_schema().names + [SOURCE_FILE, SOURCE_ROW, KEY_HASH])


def check_centroids(path: str, width: int) -> None:
    """--semdedup_centroids: a readable .npy of a K x d float array, d the image embeddings'
    width, finite, no zero row (it could not be normalised); UsageError with one line."""
    name = f"--semdedup_centroids {path}"
    with open_asset(path, "--semdedup_centroids") as handle:
        try:
            centroids = np.load(handle, allow_pickle=False)
        except Exception as error:  # noqa: BLE001 - not a .npy, truncated, pickled objects
            raise UsageError(f"{name} is not a readable .npy file: {error}") from None
    if centroids.ndim != 2 or centroids.dtype.kind != "f" or centroids.shape[0] == 0 or centroids.shape[1] == 0:
        raise UsageError(f"{name} must hold a K x d float array; it holds {centroids.dtype} {centroids.shape}")
    if width > 0 and centroids.shape[1] != width:
        raise UsageError(f"{name}: centroids are {centroids.shape[1]}-d but the image embeddings are {width}-d")
    finite = np.isfinite(centroids).all(axis=1)
    if not finite.all():
        raise UsageError(f"{name}: row {int(np.flatnonzero(~finite)[0])} holds NaN or infinity")
    zero = ~np.any(centroids != 0, axis=1)
    if zero.any():
        raise UsageError(f"{name}: row {int(np.flatnonzero(zero)[0])} is all zeros (it has no direction)")
    if not math.isfinite(float(np.linalg.norm(centroids.astype(np.float64), axis=1).max())):
        raise UsageError(f"{name}: a row's norm overflows")
