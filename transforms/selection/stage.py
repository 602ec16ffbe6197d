"""The selection stage's pieces between Beam steps: member blocks, the plan, one part's greedy, the figures.

Pure numpy and pyarrow, no Beam import: transforms.beam.select wires these into
CombinePerKey / GroupByKey steps; `transforms.selection.local` is the same selection in
one process. docs/selection.md.

A record is identified by its place in the input, `record_ids` = file index << 40 | row
(unique, whatever its key), and ordered by its tie key (seed and key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa

from transforms.core.columns import KEPT, KEY, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes
from transforms.formats.embeddings import embedding_matrix
from transforms.selection.budgets import class_budgets, num_parts, part_budgets, split_parts
from transforms.selection.covariance import (
    CrossCovSum,
    greedy_select,
    normalise_rows,
    objective,
    pseudo_classes,
    tie_keys,
)

ROW_BITS = 40


@dataclass(frozen=True)
class SelectSpec:
    """What the selection needs; small and picklable (the class embeddings travel by path)."""

    fraction: float
    seed: int
    image_column: str
    text_column: str
    class_embeddings: Optional[str] = None  # K x d .npy; None: one class
    max_class_size: Optional[int] = None
    # Local engines: where member blocks and batches wait between steps (None: in the runner).
    spill_dir: Optional[str] = None


@dataclass
class MemberBlock:
    """Some members of one class: ids, tie keys and normalised embeddings (float32 holds the
    2**-20 multiples exactly, at half the bytes)."""

    ids: np.ndarray  # uint64
    ties: np.ndarray  # uint64
    x: np.ndarray  # float32, n x d
    y: np.ndarray  # float32, n x d

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "MemberBlock":
        return MemberBlock(self.ids[rows], self.ties[rows], self.x[rows], self.y[rows])

    @staticmethod
    def concat(blocks: list["MemberBlock"]) -> "MemberBlock":
        return MemberBlock(
            np.concatenate([b.ids for b in blocks]),
            np.concatenate([b.ties for b in blocks]),
            np.concatenate([b.x for b in blocks]),
            np.concatenate([b.y for b in blocks]),
        )


def record_ids(batch: pa.RecordBatch) -> np.ndarray:
    files = batch.column(SOURCE_FILE).to_numpy().astype(np.uint64)
    rows = batch.column(SOURCE_ROW).to_numpy().astype(np.uint64)
    return (files << np.uint64(ROW_BITS)) | rows


def class_blocks(batch: pa.RecordBatch, spec: SelectSpec, class_embeddings) -> list[tuple[int, MemberBlock]]:
    """The batch's kept records, normalised and classed: one (class, MemberBlock) per class present."""
    kept = batch.column(KEPT).to_numpy(zero_copy_only=False)
    if not kept.any():
        return []
    batch = batch.filter(pa.array(kept))
    x = normalise_rows(embedding_matrix(batch, spec.image_column))
    y = normalise_rows(embedding_matrix(batch, spec.text_column))
    classes = pseudo_classes(x, class_embeddings)
    block = MemberBlock(
        record_ids(batch),
        tie_keys(key_hashes(batch.column(KEY).to_pylist()), spec.seed),
        x.astype(np.float32),
        y.astype(np.float32),
    )
    return [(int(c), block.take(np.flatnonzero(classes == c))) for c in np.unique(classes).tolist()]


def block_sum(block: MemberBlock) -> CrossCovSum:
    return CrossCovSum().add_batch(block.x.astype(np.float64), block.y.astype(np.float64))


@dataclass(frozen=True)
class SelectionPlan:
    """Every class's size, budget and number of parts (from the class sizes alone)."""

    sizes: dict
    budgets: dict
    parts: dict

    @classmethod
    def from_sizes(cls, sizes: dict, fraction: float, max_class_size: Optional[int]) -> "SelectionPlan":
        sizes = {int(c): int(n) for c, n in sorted(sizes.items())}
        budgets = class_budgets(sizes, fraction) if sizes else {}
        parts = {c: num_parts(n, max_class_size) for c, n in sizes.items()}
        return cls(sizes, budgets, parts)


@dataclass
class PartWork:
    """One part's greedy, self-contained: its members, the class sum and size, its budget."""

    members: MemberBlock
    class_matrix: np.ndarray
    class_size: int
    budget: int


def split_class(members: MemberBlock, class_sum: CrossCovSum, budget: int, max_class_size: Optional[int]):
    """(part, PartWork) for each part of a class: members split by tie key (budgets.split_parts,
    as local.py splits them), each part's budget the largest-remainder share of the class budget."""
    matrix = class_sum.matrix()
    part_of = split_parts(members.ties, class_sum.count, max_class_size)
    sizes = np.bincount(part_of, minlength=num_parts(class_sum.count, max_class_size)).tolist()
    if len(sizes) == 1:
        yield 0, PartWork(members, matrix, class_sum.count, budget)
        return
    for part, share in enumerate(part_budgets(sizes, budget)):
        if sizes[part]:
            yield part, PartWork(members.take(np.flatnonzero(part_of == part)), matrix, class_sum.count, share)


def select_part(block: MemberBlock, class_matrix: np.ndarray, class_size: int, budget: int) -> MemberBlock:
    """The greedy picks of one class part (all of a class when it is not split)."""
    picks = greedy_select(
        block.x.astype(np.float64), block.y.astype(np.float64), class_matrix, class_size, budget, block.ties
    )
    return block.take(np.sort(picks))


def mark_selected(batch: pa.RecordBatch, selected: np.ndarray) -> pa.RecordBatch:
    """The batch with its keep flag cleared for the kept records the selection did not pick."""
    kept = batch.column(KEPT).to_numpy(zero_copy_only=False)
    if not kept.any():
        return batch
    picked = np.isin(record_ids(batch), selected, assume_unique=False)
    index = batch.schema.get_field_index(KEPT)
    return batch.set_column(index, KEPT, pa.array(kept & picked))


def _mean_cosine(total: CrossCovSum) -> Optional[float]:
    """trace(sum x_i y_i^T) / n: the mean image-caption cosine, exact from the class sum."""
    return float(np.trace(total.matrix()) / total.count) if total.count else None


def class_figures(cls: int, pool: CrossCovSum, selected: CrossCovSum, budget: int, parts: int) -> dict:
    """One class's row of the `selection` figures: size, budget, selected, parts, the objective
    F reached and its maximum ||T_c||^2 (reached when the selection's mean equals the class's)."""
    target = pool.matrix() * budget / pool.count
    chosen = selected.matrix() if selected.count else np.zeros_like(target)
    return {
        "class": cls,
        "size": pool.count,
        "budget": budget,
        "selected": selected.count,
        "parts": parts,
        "objective": objective(target, chosen),
        "objective_max": float(np.sum(target * target)),
    }


@dataclass
class SelectionTotals:
    """The per-class rows and the whole pool's and selection's exact sums (mergeable)."""

    rows: list = field(default_factory=list)
    pool: CrossCovSum = field(default_factory=CrossCovSum)
    selected: CrossCovSum = field(default_factory=CrossCovSum)

    def merge(self, other: "SelectionTotals") -> "SelectionTotals":
        self.rows += other.rows
        self.pool.merge(other.pool)
        self.selected.merge(other.selected)
        return self


def selection_document(fraction: float, totals: SelectionTotals) -> dict:
    """stats.json's `selection`: the per-class rows (by class), their objective summed, the same
    objective over the whole pool (its mean against all picks), and the mean image-caption
    cosine before and after."""
    per_class = sorted(totals.rows, key=lambda row: row["class"])
    reached = sum(row["objective"] for row in per_class)
    best = sum(row["objective_max"] for row in per_class)
    pool, selected = totals.pool, totals.selected
    document = {
        "method": "covariance",
        "fraction": fraction,
        "records_in": pool.count,
        "records_selected": selected.count,
        "classes": len(per_class),
        "objective": reached,
        "objective_max": best,
        "objective_ratio": reached / best if best > 0 else None,
        "mean_cosine_before": _mean_cosine(pool),
        "mean_cosine_after": _mean_cosine(selected),
    }
    if pool.count:
        target = pool.matrix() * selected.count / pool.count
        chosen = selected.matrix() if selected.count else np.zeros_like(target)
        best_pool = float(np.sum(target * target))
        document["pool_objective"] = objective(target, chosen)
        document["pool_objective_max"] = best_pool
        document["pool_objective_ratio"] = document["pool_objective"] / best_pool if best_pool > 0 else None
    document["per_class"] = per_class
    return document
