"""FitCentroids: SemDeDup's spherical k-means as a Beam loop, bit-identical to kmeans.fit_centroids.

docs/dedup.md, "Fitting the centroids (ours)". The loop is unrolled in the graph:

    start      per batch its K smallest (order bits, file, row) claims -> CombineGlobally keeps
               the K smallest overall: kmeans.initial_indices' records, whatever the batching
    round r    per bundle, kmeans.step_sums of its batches against the state's centroids (a
               singleton side input), with the centroids before them for the changed count ->
               CombineGlobally of kmeans.merge_sums: exact integer sums, so any merge tree and
               any worker count give the same bits -> the next state (kmeans.next_centroids)

The state stops changing once a round's assignment equals the one before (fit_centroids'
early stop): later rounds read it, see it done and emit nothing. The rows each round needs
(key, position, embedding) are stored once (spilled on local engines) and read per round.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import AsSingleton, PCollection

from transforms.beam.spill import LoadBatches, StoreBatches, _in_global_window
from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW
from transforms.dedup.kmeans import merge_sums, next_centroids, step_sums
from transforms.dedup.semdedup import prepare_centroids
from transforms.dedup.semdedup_stage import Starts, batch_starts, normalised_rows, start_centroids
from transforms.formats.embeddings import embedding_matrix

__all__ = ["FitCentroids", "FitState"]


class FitState(NamedTuple):
    """The loop's state after some rounds."""

    centroids: np.ndarray  # K x d float64, unit rows
    previous: Optional[np.ndarray]  # the centroids before the last update (None before the first)
    iterations: int  # updates made
    done: bool  # an assignment equalled the one before: the fit has converged


def _advance(state: FitState, sums, round_index: int) -> FitState:
    """One round of kmeans.fit_centroids' loop, from the round's merged sums."""
    if state.done:
        return state
    if sums is None:
        raise ValueError("semantic dedup: a k-means round summed no rows")
    if state.previous is not None and sums.changed == 0:
        return state._replace(done=True, iterations=round_index)
    return FitState(next_centroids(sums, state.centroids), state.centroids, round_index + 1, False)


class _StartsFn(beam.DoFn):
    """Batches -> one Starts per bundle: its K smallest start claims."""

    def __init__(self, column: str, seed: int, k: int):
        self._column, self._seed, self._k = column, seed, k

    def start_bundle(self):
        self._held = None

    def process(self, batch: pa.RecordBatch):
        found = batch_starts(batch, self._column, self._seed, self._k)
        self._held = Starts.merge([self._held, found], self._k)

    def finish_bundle(self):
        if self._held is not None:
            yield _in_global_window(self._held)


class _SmallestStarts(beam.CombineFn):
    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, starts):
        return Starts.merge([accumulator, starts], self._k)

    def merge_accumulators(self, accumulators):
        return Starts.merge(list(accumulators), self._k)

    def extract_output(self, accumulator):
        return accumulator


class _RoundSumsFn(beam.DoFn):
    """Batches, the state -> one exact ClusterSums per bundle (nothing once the state is done)."""

    def __init__(self, column: str):
        self._column = column

    def setup(self):
        self._prepared = (None, None, None)  # (state centroids seen, prepared, prepared previous)

    def start_bundle(self):
        self._sums = None

    def _centroids(self, state: FitState):
        seen = self._prepared[0]
        if seen is not state.centroids and not (seen is not None and np.array_equal(seen, state.centroids)):
            before = None if state.previous is None else prepare_centroids(state.previous)
            self._prepared = (state.centroids, prepare_centroids(state.centroids), before)
        return self._prepared[1], self._prepared[2]

    def process(self, batch: pa.RecordBatch, state: FitState):
        if state.done or batch.num_rows == 0:
            return
        current, previous = self._centroids(state)
        xn, usable = normalised_rows(embedding_matrix(batch, self._column))
        sums = step_sums(xn, usable, current, previous)
        self._sums = sums if self._sums is None else merge_sums([self._sums, sums])

    def finish_bundle(self):
        if self._sums is not None:
            yield _in_global_window(self._sums)


class _MergeSums(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, sums):
        return sums if accumulator is None else merge_sums([accumulator, sums])

    def merge_accumulators(self, accumulators):
        present = [a for a in accumulators if a is not None]
        return merge_sums(present) if present else None

    def extract_output(self, accumulator):
        return accumulator


class FitCentroids(beam.PTransform):
    """Batches with `key`, the source columns and the embedding column -> singleton FitState:
    kmeans.fit_centroids' centroids (bit for bit), the updates made and whether it converged."""

    def __init__(self, k: int, iterations: int, column: str, seed: int, spill_dir: Optional[str] = None):
        super().__init__()
        self._k, self._iterations, self._column, self._seed = k, iterations, column, seed
        self._spill = spill_dir

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection:
        column, k = self._column, self._k
        rows = (
            batches
            | "FitRows" >> beam.Map(lambda b: b.select([KEY, SOURCE_FILE, SOURCE_ROW, column]))
            | "StoreFitRows" >> StoreBatches(self._spill, "SemDedupFit")
        )
        starts = (
            rows
            | "LoadForStart" >> LoadBatches(self._spill)
            | "BatchStarts" >> beam.ParDo(_StartsFn(column, self._seed, k))
            | "SmallestStarts" >> beam.CombineGlobally(_SmallestStarts(k))
        )
        state = starts | "Start" >> beam.Map(lambda s: FitState(start_centroids(s, k), None, 0, False))
        for r in range(self._iterations):
            sums = (
                rows
                | f"LoadRound{r}" >> LoadBatches(self._spill)
                | f"SumsRound{r}" >> beam.ParDo(_RoundSumsFn(column), AsSingleton(state))
                | f"MergeRound{r}" >> beam.CombineGlobally(_MergeSums())
            )
            state = state | f"Round{r}" >> beam.Map(_advance, AsSingleton(sums), r)
        return state
