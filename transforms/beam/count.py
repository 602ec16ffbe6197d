"""CountEntries: per-entry caption counts, exact int64, as one numpy array."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import PCollection

from transforms.core.columns import ENTRY_IDS
from transforms.core.counting import (
    DEFAULT_BLOCK_SIZE,
    assemble_counts,
    sparse_block_counts,
)

__all__ = ["CountEntries"]


class _BlockCountsFn(beam.CombineFn):
    """Sums sparse (ids, counts) pairs of one block into a dense int64 vector."""

    def __init__(self, block_size: int):
        self._block_size = block_size

    def create_accumulator(self):
        return np.zeros(self._block_size, dtype=np.int64)

    def add_input(self, accumulator, sparse):
        ids, counts = sparse
        accumulator[ids] += counts  # ids are unique within one input
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators)
        for accumulator in accumulators:
            total += accumulator
        return total

    def extract_output(self, accumulator):
        return accumulator


class _AssembleCountsFn(beam.CombineFn):
    """Collects the per-block vectors into one array of every entry's count."""

    def __init__(self, num_entries: int, block_size: int):
        self._num_entries = num_entries
        self._block_size = block_size

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, block_and_vector):
        accumulator.append(block_and_vector)
        return accumulator

    def merge_accumulators(self, accumulators):
        return [item for accumulator in accumulators for item in accumulator]

    def extract_output(self, accumulator):
        return assemble_counts(accumulator, self._num_entries, self._block_size)


class CountEntries(beam.PTransform):
    """Count captions per entry.

    In: batches with an `entry_ids` column. Out: a single-element PCollection,
    an np.int64 array of length num_entries (zero for unmatched entries), ready
    for `beam.pvalue.AsSingleton`. 500k entries take 4 MB.
    """

    def __init__(self, num_entries: int, block_size: int = DEFAULT_BLOCK_SIZE):
        super().__init__()
        self._num_entries = num_entries
        self._block_size = block_size

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection[np.ndarray]:
        block_size = self._block_size
        return (
            batches
            | "SparseBlockCounts" >> beam.FlatMap(lambda batch: sparse_block_counts(_flat_ids(batch), block_size))
            | "SumPerBlock" >> beam.CombinePerKey(_BlockCountsFn(block_size))
            | "AssembleCounts" >> beam.CombineGlobally(_AssembleCountsFn(self._num_entries, block_size))
        )


def _flat_ids(batch: pa.RecordBatch) -> np.ndarray:
    return batch.column(ENTRY_IDS).flatten().to_numpy(zero_copy_only=False)
