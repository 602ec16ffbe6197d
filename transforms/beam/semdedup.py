"""SemanticDedup: the `semantic` dedup kind (SemDeDup), spread so that no element is large.

In: batches carrying each record's image embedding (column `embedding_column`). Out: a
KindOutput (transforms/beam/dedup_kinds.py). The rules are docs/dedup.md, section 2; the
pure pieces are transforms.dedup (semdedup, pairwise, kmeans, semdedup_stage), and the whole
equals transforms.dedup.local.semdedup_in_memory record for record:

    centroids  given: read and prepared once per worker (Shared); or fitted: a Beam loop of
               `iterations` exact k-means rounds (transforms/beam/semdedup_fit.py)
    assign     batch -> its member blocks by cluster (the image filter's kernel), buffered per
               bundle and cut into one block per cluster a flush; the batch itself, keyed by
               its first record's id, waits for the join (spilled on local engines)
    sizes      CombinePerKey of block rows by cluster -> every cluster's size (a small side input)
    split      each block -> ((cluster, part), its rows in the part), where it is made
    judge      GroupByKey on (cluster, part) -> deduplicate_members -> scores, duplicates,
               the duplicates' ids by the batch they came from, the eps curve's counts
    mark       CoGroupByKey on batch id of each batch and its duplicates' ids (a keyed join,
               not a side input of every duplicate) -> the batch less its duplicates
    figures    the sizes, the summed counts and the fit -> `deduplicated`, `judged`, `semdedup`
"""

from __future__ import annotations

import io
import uuid
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, PCollection
from apache_beam.utils import shared

from transforms.beam import metrics
from transforms.beam.dedup_kinds import KindOutput
from transforms.beam.semdedup_blocks import (
    BatchBuffer,
    MemberBuffer,
    load_batch,
    load_members,
    rows_of,
    split_member,
)
from transforms.beam.semdedup_fit import FitCentroids
from transforms.beam.spill import _in_global_window
from transforms.dedup.kmeans import DEFAULT_ITERATIONS
from transforms.dedup.semdedup import DEFAULT_EPS, DEFAULT_MAX_CLUSTER_SIZE, EASY, HARD, prepare_centroids
from transforms.dedup.semdedup_stage import (
    Tally,
    assign_batch,
    batch_id,
    drop_marked,
    eps_grid,
    judge_part,
    semdedup_figures,
)
from transforms.filters.clusters import load_centroids

__all__ = ["SemanticDedup"]

RECORDS, SIZES, TALLY = "records", "sizes", "tally"
SCORES, DUPLICATES, MARKS = "scores", "duplicates", "marks"


def read_centroids(path: str) -> np.ndarray:
    """The K x d centroids of a .npy file (a finite float array), as stored."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return load_centroids(handle, path)


class _Prepared:
    """Prepared centroids held by Shared (one copy per worker process, whatever the threads)."""

    def __init__(self, path: str):
        self.centroids = prepare_centroids(read_centroids(path))


class _AssignFn(beam.DoFn):
    """Batch -> (cluster, member block or ref) per cluster, flushed per bundle; RECORDS: (batch id,
    the batch or its ref); SIZES: (cluster, rows) per flush; TALLY: the rows left out (unusable)."""

    def __init__(self, centroids_path, column, seed, spill_dir):
        self._path = centroids_path
        self._column = column
        self._seed = seed
        self._spill = spill_dir
        self._shared = shared.Shared()
        self._assigned = Metrics.counter(metrics.CURATION, "records_semdedup_assigned")

    def setup(self):
        self._given = None
        if self._path is not None:
            # Shared holds it weakly: keep the holder, so every thread of the process shares one copy.
            self._holder = self._shared.acquire(lambda: _Prepared(self._path), tag=self._path)
            self._given = self._holder.centroids
        self._fitted = (None, None)  # (the side input's array, its prepared form)

    def start_bundle(self):
        spill = self._spill
        self._members = MemberBuffer(spill and FileSystems.join(spill, "members"), "SemDedupMembers")
        self._batches = BatchBuffer(spill and FileSystems.join(spill, "batches"), "SemDedupBatches")
        self._unusable = 0

    def _centroids(self, fitted):
        if fitted is None:
            return self._given
        seen, prepared = self._fitted
        if seen is not fitted and not (seen is not None and np.array_equal(seen, fitted)):
            self._fitted = (fitted, prepare_centroids(fitted))
        return self._fitted[1]

    def process(self, batch: pa.RecordBatch, fitted=None):
        if batch.num_rows == 0:
            return
        assigned = assign_batch(batch, self._column, self._centroids(fitted), self._seed)
        self._unusable += assigned.unusable
        self._assigned.inc(batch.num_rows - assigned.unusable)
        for item in self._batches.add(batch_id(batch), batch):
            yield beam.pvalue.TaggedOutput(RECORDS, item)
        for cluster, block in assigned.blocks:
            for cluster_member in self._members.add(cluster, block):
                yield cluster_member
                yield beam.pvalue.TaggedOutput(SIZES, (cluster_member[0], rows_of(cluster_member[1])))

    def finish_bundle(self):
        for cluster, member in self._members.flush():
            yield _in_global_window((cluster, member))
            yield _tagged_in_global_window(beam.pvalue.TaggedOutput(SIZES, (cluster, rows_of(member))))
        for item in self._batches.flush():
            yield _tagged_in_global_window(beam.pvalue.TaggedOutput(RECORDS, item))
        if self._unusable:
            yield _tagged_in_global_window(beam.pvalue.TaggedOutput(TALLY, Tally(0, 0, self._unusable)))


def _tagged_in_global_window(tagged: beam.pvalue.TaggedOutput):
    return beam.pvalue.TaggedOutput(tagged.tag, _in_global_window(tagged.value))


class _SplitFn(beam.DoFn):
    """(cluster, block or ref), the cluster sizes -> ((cluster, part), its rows in that part)."""

    def __init__(self, max_cluster_size: Optional[int]):
        self._max = max_cluster_size

    def process(self, element, sizes: dict):
        cluster, member = element
        for part, piece in split_member(member, sizes[cluster], self._max):
            yield (cluster, part), piece


class _JudgeFn(beam.DoFn):
    """((cluster, part), its members) -> SCORES and DUPLICATES batches, MARKS (batch id, ids) per
    bundle, TALLY (members, duplicates at each grid eps) per bundle."""

    def __init__(self, eps: float, keep: str):
        self._eps = eps
        self._keep = keep
        self._judged = Metrics.counter(metrics.CURATION, "records_semdedup_judged")
        self._removed = Metrics.counter(metrics.CURATION, "records_semdedup_duplicates")

    def start_bundle(self):
        self._marks: dict = {}
        self._tally = Tally(0, np.zeros(len(eps_grid(self._eps)), np.int64), 0)

    def process(self, element):
        (cluster, _part), pieces = element
        members = load_members(list(pieces))
        judged = judge_part(members, cluster, eps=self._eps, keep=self._keep)
        self._judged.inc(members.num_rows)
        self._removed.inc(judged.duplicates.num_rows)
        self._tally = self._tally.merge(Tally(members.num_rows, judged.removed, 0))
        for batch, ids in judged.marks:
            self._marks.setdefault(batch, []).append(ids)
        yield beam.pvalue.TaggedOutput(SCORES, judged.scores)
        if judged.duplicates.num_rows:
            yield beam.pvalue.TaggedOutput(DUPLICATES, judged.duplicates)

    def finish_bundle(self):
        for batch, ids in self._marks.items():
            yield _tagged_in_global_window(beam.pvalue.TaggedOutput(MARKS, (batch, np.concatenate(ids))))
        if self._tally.judged:
            yield _tagged_in_global_window(beam.pvalue.TaggedOutput(TALLY, self._tally))


def _drop_duplicates(element):
    """(batch id, {batch: [it], marks: [id arrays]}) -> the batch less its marked records."""
    key, grouped = element
    batches = list(grouped["batch"])
    if len(batches) != 1:
        raise ValueError(f"semantic dedup: {len(batches)} batches with id {key} where one was expected")
    batch = load_batch(batches[0])
    marks = list(grouped["marks"])
    if not marks:
        return batch
    return drop_marked(batch, np.concatenate(marks))


class _SumTally(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, tally):
        return tally if accumulator is None else accumulator.merge(tally)

    def merge_accumulators(self, accumulators):
        total = None
        for a in accumulators:
            total = a if total is None else (total if a is None else total.merge(a))
        return total

    def extract_output(self, accumulator):
        return accumulator


def _to_dict(pairs) -> dict:
    merged = {}
    for part in pairs:
        merged.update(part)
    return merged


def _write_npy(path: str, values: np.ndarray) -> str:
    """`values` as a .npy at `path`, atomically: written beside it, then renamed over it."""
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(buffer.getvalue())
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])
    return path


class SemanticDedup(beam.PTransform):
    """SemDeDup over record batches (docs/dedup.md, section 2).

    In: batches with `key`, the source columns and the image embedding in `embedding_column`.
    Out: KindOutput: survivors (the batches less the duplicates, same schema), duplicates
    (DUPLICATES_SCHEMA, kind "semantic", duplicate_of the earlier member with the largest
    similarity), scores (key, cluster, score: largest similarity to an earlier member of its
    part, null for a part's first) and figures ({"deduplicated", "judged", "semdedup"}).
    Centroids: `centroids_path` (.npy, given) or `clusters` = K fitted in `iterations` rounds;
    the ones used are written to `centroids_output` (given: as given; fitted: float64).
    Rows with a NaN, infinite or zero embedding (the reader rejects them first) are kept,
    not judged, and counted in `semdedup.not_judged`.
    """

    def __init__(
        self,
        centroids_path: Optional[str] = None,
        clusters: Optional[int] = None,
        iterations: int = DEFAULT_ITERATIONS,
        eps: float = DEFAULT_EPS,
        keep: str = HARD,
        max_cluster_size: Optional[int] = DEFAULT_MAX_CLUSTER_SIZE,
        seed: int = 0,
        embedding_column: str = "embedding",
        centroids_output: Optional[str] = None,
        spill_dir: Optional[str] = None,
    ):
        super().__init__()
        if (centroids_path is None) == (clusters is None):
            raise ValueError("semantic dedup needs exactly one of centroids_path and clusters")
        if keep not in (HARD, EASY):
            raise ValueError(f"keep must be {HARD!r} or {EASY!r}, not {keep!r}")
        if clusters is not None and clusters < 1:
            raise ValueError(f"clusters must be at least 1, not {clusters}")
        self._path = centroids_path
        self._k = clusters
        self._iterations = int(iterations)
        self._eps = float(eps)
        self._keep = keep
        self._max = max_cluster_size
        self._seed = int(seed)
        self._column = embedding_column
        self._output = centroids_output
        self._spill = spill_dir

    def expand(self, batches: PCollection[pa.RecordBatch]) -> KindOutput:
        pipeline = batches.pipeline
        if self._path is None:
            fit_spill = self._spill and FileSystems.join(self._spill, "fit")
            fit = batches | "Fit" >> FitCentroids(self._k, self._iterations, self._column, self._seed, fit_spill)
            centroids = fit | "FittedCentroids" >> beam.Map(lambda state: state.centroids)
            fit_figures = fit | "FitFigures" >> beam.Map(
                lambda state: {"iterations": state.iterations, "converged": state.done}
            )
            side = (AsSingleton(centroids),)
            k_of = fit | "K" >> beam.Map(lambda state: len(state.centroids))
        else:
            given = pipeline | "CentroidsPath" >> beam.Create([self._path])
            centroids = given | "ReadCentroids" >> beam.Map(read_centroids)
            fit_figures = pipeline | "NoFit" >> beam.Create([None])
            side = ()
            k_of = centroids | "K" >> beam.Map(len)
        if self._output is not None:
            _ = centroids | "WriteCentroids" >> beam.Map(lambda values, path: _write_npy(path, values), self._output)

        assigned = batches | "Assign" >> beam.ParDo(
            _AssignFn(self._path, self._column, self._seed, self._spill), *side
        ).with_outputs(RECORDS, SIZES, TALLY, main="members")
        sizes = (
            assigned[SIZES]
            | "ClusterSizes" >> beam.CombinePerKey(sum)
            | "SizesAsDict" >> beam.Map(lambda item: {item[0]: item[1]})
            | "AllSizes" >> beam.CombineGlobally(_to_dict)
        )
        judged = (
            assigned["members"]
            | "SplitParts" >> beam.ParDo(_SplitFn(self._max), AsSingleton(sizes))
            | "GroupParts" >> beam.GroupByKey()
            | "Judge" >> beam.ParDo(_JudgeFn(self._eps, self._keep)).with_outputs(SCORES, DUPLICATES, MARKS, TALLY)
        )
        survivors = (
            {"batch": assigned[RECORDS], "marks": judged[MARKS]}
            | "JoinDuplicates" >> beam.CoGroupByKey()
            | "DropDuplicates" >> beam.Map(_drop_duplicates)
        )
        tally = (
            (assigned[TALLY], judged[TALLY])
            | "Tallies" >> beam.Flatten()
            | "SumTally" >> beam.CombineGlobally(_SumTally())
        )
        eps, keep, cap = self._eps, self._keep, self._max
        figures = k_of | "Figures" >> beam.Map(
            lambda k, sizes, tally, fit: semdedup_figures(
                sizes, k, tally or Tally(0, np.zeros(len(eps_grid(eps)), np.int64), 0),
                eps=eps, keep=keep, max_cluster_size=cap, fit=fit,
            ),
            AsSingleton(sizes), AsSingleton(tally), AsSingleton(fit_figures),
        )  # fmt: skip
        return KindOutput(survivors, judged[DUPLICATES], figures, judged[SCORES])
