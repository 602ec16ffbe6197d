"""MetaClipBalance: the balancing stage (match, count, plan, sample) as one PTransform."""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.count import CountEntries
from transforms.beam.match import LocalWorkers, MatchEntries
from transforms.beam.modes import CurationMode
from transforms.beam.report_data import ExpectedSizes
from transforms.beam.sample import BalancedSample
from transforms.beam.spill import LoadBatches, StoreBatches
from transforms.core.columns import KEPT, KEY, KEY_HASH
from transforms.core.expected_size import threshold_grid
from transforms.core.hashing import key_hashes
from transforms.core.report_figures import finer_grid, threshold_for_target

__all__ = ["Balanced", "KeepAll", "MetaClipBalance"]


class Balanced(NamedTuple):
    """What the balancing stage hands on."""

    batches: PCollection  # [pa.RecordBatch]: + entry_ids, keep_prob, key hash, keep flag
    counts: Optional[PCollection]  # singleton np.ndarray: captions per entry (CountEntries); None: KeepAll
    plan: Optional[PCollection]  # singleton BalancingPlan: p_e of every entry, the t used; None: KeepAll


class MetaClipBalance(beam.PTransform):
    """MetaCLIP balancing: match every caption, count captions per entry, keep each with P = 1 - prod(1 - p_e).

    In: batches with `key` and `text`. Out: `Balanced`: the same batches with
    `entry_ids`, `keep_prob`, the key hash and the keep flag; the counts; the
    plan. Two passes over the pool: the first matches and counts, and keeps the
    matched batches (StoreBatches); the second samples them with the counts. With
    `spill_dir` the batches wait on disk between the passes (transforms.beam.spill).
    With `target_size`, t is the one whose expected subset size is closest to it
    (two more passes), instead of `threshold`.
    """

    def __init__(
        self,
        mode: CurationMode,
        threshold: int,
        seed: int,
        target_size: Optional[int] = None,
        spill_dir: Optional[str] = None,
        local: Optional[LocalWorkers] = None,
    ):
        super().__init__()
        self._mode = mode
        self._threshold = threshold
        self._seed = seed
        self._target_size = target_size
        self._spill_dir = spill_dir
        self._local = local

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Balanced:
        mode, spill_dir, threshold = self._mode, self._spill_dir, self._threshold
        matched = batches | "MatchEntries" >> MatchEntries(mode, self._local)
        counts = matched | "CountEntries" >> CountEntries(mode.num_entries)
        stored = matched | "StoreMatched" >> StoreBatches(
            spill_dir and FileSystems.join(spill_dir, "matched"), "matched"
        )
        if self._target_size is None:
            plan = counts | "PlanBalancing" >> beam.Map(lambda counts: mode.plan(counts, threshold))
        else:
            plan = _plan_for_target_size(stored, counts, mode, self._target_size, spill_dir)
        sampled = (
            stored | "LoadMatched" >> LoadBatches(spill_dir) | "BalancedSample" >> BalancedSample(plan, self._seed)
        )
        return Balanced(sampled, counts, plan)


def _plan_for_target_size(stored, counts, mode: CurationMode, target: int, spill_dir: Optional[str]) -> PCollection:
    """--target_size: two extra passes over the matched batches find t, then the plan.

    E(t) is nondecreasing in t: a coarse grid over 1 .. the largest count brackets
    the target, a fine grid inside the bracket picks the integer t whose E(t) is
    closest (transforms.core.expected_size). Modes with one t for every entry only.
    """
    coarse_grid = counts | "CoarseGrid" >> beam.Map(threshold_grid)
    coarse = (
        stored | "LoadForCoarseSizes" >> LoadBatches(spill_dir) | "CoarseSizes" >> ExpectedSizes(counts, coarse_grid)
    )
    # Each derived singleton takes the LATEST of its inputs as its main input and the
    # earlier ones as side inputs: the FnApiRunner may otherwise run a stage whose
    # side input is not computed yet, and hand it an empty one.
    fine_grid = coarse | "FineGrid" >> beam.Map(
        lambda sizes, grid: finer_grid(grid, sizes, target), beam.pvalue.AsSingleton(coarse_grid)
    )
    fine = stored | "LoadForFineSizes" >> LoadBatches(spill_dir) | "FineSizes" >> ExpectedSizes(counts, fine_grid)
    chosen = fine | "ChooseThreshold" >> beam.Map(
        lambda sizes, grid: threshold_for_target(grid, sizes, target), beam.pvalue.AsSingleton(fine_grid)
    )
    return chosen | "PlanBalancing" >> beam.Map(lambda t, counts: mode.plan(counts, t), beam.pvalue.AsSingleton(counts))


def _keep_every_row(batch: pa.RecordBatch) -> pa.RecordBatch:
    hashes = key_hashes(batch.column(KEY).to_pylist())
    return batch.append_column(KEY_HASH, pa.array(hashes, pa.uint64())).append_column(
        KEPT, pa.array(np.ones(batch.num_rows, dtype=bool))
    )


class KeepAll(beam.PTransform):
    """--balance none: every record that reaches the stage is kept.

    In: batches with `key`. Out: `Balanced` with the same batches plus the key hash and a
    set keep flag (what the writers read), and no counts or plan.
    """

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Balanced:
        return Balanced(batches | "KeepEveryRecord" >> beam.Map(_keep_every_row), None, None)
