"""The figures behind report.html, computed in the sampling pass, and E(t) for --target_size.

The arithmetic is in transforms.core.report_figures and transforms.core.expected_size
(no Beam there); these transforms only run it per batch and merge exactly.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import PCollection

from transforms.beam.count import CountEntries
from transforms.core.arrow import list_layout
from transforms.core.columns import ENTRY_IDS, KEPT
from transforms.core.expected_size import add_fixed, expected_sizes_fixed
from transforms.core.report_figures import batch_figures, empty_figures, merge_figures

__all__ = ["ExpectedSizes", "KeptEntryCounts", "ReportFigures"]


class _MergeFiguresFn(beam.CombineFn):
    def create_accumulator(self):
        return empty_figures()

    def add_input(self, accumulator, figures):
        return merge_figures([accumulator, figures])

    def merge_accumulators(self, accumulators):
        return merge_figures(list(accumulators))

    def extract_output(self, accumulator):
        return accumulator


class ReportFigures(beam.PTransform):
    """Sampled batches -> one dict of mergeable figures (histograms, examples)."""

    def expand(self, sampled: PCollection[pa.RecordBatch]) -> PCollection[dict]:
        return (
            sampled
            | "BatchFigures" >> beam.Map(batch_figures)
            | "MergeFigures" >> beam.CombineGlobally(_MergeFiguresFn())
        )


class KeptEntryCounts(beam.PTransform):
    """Sampled batches -> per-entry counts among the kept captions (an int64 array, like CountEntries)."""

    def __init__(self, num_entries: int):
        super().__init__()
        self._num_entries = num_entries

    def expand(self, sampled: PCollection[pa.RecordBatch]) -> PCollection[np.ndarray]:
        return (
            sampled
            # Only the entry ids are counted: filter them alone, not the captions' text.
            | "KeptRows" >> beam.Map(lambda batch: batch.select([ENTRY_IDS]).filter(batch.column(KEPT)))
            | "CountKept" >> CountEntries(self._num_entries)
        )


class _AddFixedFn(beam.CombineFn):
    """Sums fixed-point vectors as Python ints: a pool's total outgrows int64."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, sizes):
        return list(map(int, sizes)) if accumulator is None else add_fixed(accumulator, sizes)

    def merge_accumulators(self, accumulators):
        total = None
        for accumulator in accumulators:
            if accumulator is not None:
                total = accumulator if total is None else add_fixed(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


def _batch_sizes(batch: pa.RecordBatch, counts: np.ndarray, grid: np.ndarray):
    offsets, flat_ids = list_layout(batch.column(ENTRY_IDS))
    return expected_sizes_fixed(offsets, flat_ids, counts, grid)


class ExpectedSizes(beam.PTransform):
    """Matched batches + counts + a threshold grid -> E(t) for each t of the grid.

    In: batches with `entry_ids`; `counts` (CountEntries' output) and `grid`
    (an int64 array of t values), both single-element PCollections. Out: one
    list of fixed-point sums (transforms.core.expected_size.PROB_SCALE), one per t,
    exact and independent of the order of the batches.
    """

    def __init__(self, counts, grid):
        super().__init__()
        self._counts = counts
        self._grid = grid

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection[list]:
        return (
            batches
            | "BatchSizes"
            >> beam.Map(_batch_sizes, beam.pvalue.AsSingleton(self._counts), beam.pvalue.AsSingleton(self._grid))
            | "SumSizes" >> beam.CombineGlobally(_AddFixedFn())
        )
