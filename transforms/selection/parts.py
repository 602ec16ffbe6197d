"""A class's parts, assigned before any grouping: the split of member blocks, the part targets.

Pure numpy and pyarrow, no Beam import (docs/selection.md, "In the pipeline"). The part of a
member is `tie key % ceil(n_c / max_class_size)` (budgets.split_parts, the rule local.py and
every earlier version use): it needs the class size n_c, which the plan gives from the class
counts alone, so each block can be split where it is made and no worker ever holds a whole
class. Each part's greedy then needs its members, the class sum (as a matrix), n_c and its
share of the class budget, which comes from the part sizes (budgets.part_budgets).

`block_table` / `block_from_table` carry a MemberBlock as an Arrow record batch, for the
spill files of local engines (transforms.beam.select).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np
import pyarrow as pa

from transforms.selection.budgets import num_parts, part_budgets, split_parts
from transforms.selection.covariance import CrossCovSum
from transforms.selection.stage import ROW_BITS, MemberBlock


def split_block(block: MemberBlock, class_size: int, max_class_size: Optional[int]) -> list[tuple[int, MemberBlock]]:
    """(part, the block's members in that part) for each part present in the block."""
    if num_parts(class_size, max_class_size) == 1:
        return [(0, block)]
    part_of = split_parts(block.ties, class_size, max_class_size)
    return [(int(p), block.take(np.flatnonzero(part_of == p))) for p in np.unique(part_of).tolist()]


@dataclass
class PartTarget:
    """What a part's greedy needs beside its members: the class sum C_c, n_c, its budget."""

    # float64 d x d; on local engines where the class sum waits instead (a spill file's
    # reference, transforms.beam.select_parts.SumRef), read by the greedy's worker.
    class_matrix: object
    class_size: int
    budget: int
    part_size: int  # how many members the part must hold (a check against lost elements)


def part_targets(
    class_size: int, class_matrix: object, budget: int, parts: int, part_sizes: Mapping[int, int]
) -> Iterable[tuple[int, PartTarget]]:
    """(part, PartTarget) for each non-empty part of a class of `class_size` members: the class
    budget split over the `parts` parts by their sizes (largest remainder, as split_class did
    on the whole class). `class_matrix` goes to every part as it is."""
    sizes = [int(part_sizes.get(p, 0)) for p in range(parts)]
    if sum(sizes) != class_size or any(p >= parts for p in part_sizes):
        raise ValueError(f"part sizes {dict(part_sizes)} do not add up to the class's {class_size} members")
    for part, share in enumerate(part_budgets(sizes, budget)):
        if sizes[part]:
            yield part, PartTarget(class_matrix, class_size, share, sizes[part])


def ids_by_file(ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(file index, its sorted record ids) for each input file the ids come from."""
    ids = np.sort(np.asarray(ids, dtype=np.uint64))
    if not len(ids):  # a part that picked nothing (--select_fraction 0)
        return []
    files = ids >> np.uint64(ROW_BITS)
    starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    return [(int(files[a]), ids[a:b]) for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]


def _matrix_column(values: np.ndarray) -> pa.FixedSizeListArray:
    width = values.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), width)


def block_table(block: MemberBlock) -> pa.RecordBatch:
    """A MemberBlock as an Arrow record batch (ids, ties, x, y; the embeddings as fixed-size lists)."""
    return pa.RecordBatch.from_arrays(
        [pa.array(block.ids), pa.array(block.ties), _matrix_column(block.x), _matrix_column(block.y)],
        names=["ids", "ties", "x", "y"],
    )


def _matrix(column: pa.FixedSizeListArray) -> np.ndarray:
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def block_from_table(batch: pa.RecordBatch) -> MemberBlock:
    """The MemberBlock of a `block_table` record batch."""
    return MemberBlock(
        batch.column(0).to_numpy(zero_copy_only=False),
        batch.column(1).to_numpy(zero_copy_only=False),
        _matrix(batch.column(2)),
        _matrix(batch.column(3)),
    )


class ClassSumAccumulator:
    """A class sum being built: rows held as they are until holding them costs more than the
    d x d sum, then folded into an exact CrossCovSum.

    A combiner sends one accumulator per class per input bundle; a bundle that holds a few
    rows of a class should send those rows (6 KB each at d = 768), not a 4.7 MB matrix, so the
    bytes on the wire never exceed the members' own. Exact either way: the fold is the
    integer sum of the same rows (covariance.CrossCovSum), in any order.
    """

    __slots__ = ("_blocks", "_rows", "total")

    def __init__(self) -> None:
        self._blocks: list = []  # (x, y) float32 normalise_rows output
        self._rows = 0
        self.total = CrossCovSum()

    def add(self, x: np.ndarray, y: np.ndarray) -> "ClassSumAccumulator":
        if len(x):
            self._blocks.append((x, y))
            self._rows += len(x)
            if self._rows * (x.shape[1] + y.shape[1]) > 2 * x.shape[1] * y.shape[1]:
                self._fold()
        return self

    def _fold(self) -> None:
        for x, y in self._blocks:
            self.total.add_batch(x.astype(np.float64), y.astype(np.float64))
        self._blocks, self._rows = [], 0

    def merge(self, other: "ClassSumAccumulator") -> "ClassSumAccumulator":
        self.total.merge(other.total)
        for x, y in other._blocks:
            self.add(x, y)
        return self

    def result(self) -> CrossCovSum:
        self._fold()
        return self.total

    def __getstate__(self):
        return (self._blocks, self._rows, self.total)

    def __setstate__(self, state) -> None:
        self._blocks, self._rows, self.total = state
