"""The whole cross-covariance selection of an in-memory pool, composed from the pure parts.

Pure numpy, no Beam import (docs/selection.md). This is what the Beam
wrapper does across workers (class sums by CombinePerKey over batches, then a GroupByKey
per (class, part) and `greedy_select`), in one process: the tests compare it with the
independent reference in tests/covariance_reference.py, and it shows the order of calls.
Ours: the split of a class above `max_class_size` uses the members' tie keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transforms.selection.budgets import class_budgets, part_budgets, split_parts
from transforms.selection.covariance import (
    BATCH_ROWS,
    CrossCovSum,
    greedy_select,
    normalise_rows,
    pseudo_classes,
    tie_keys,
)


@dataclass
class Selection:
    """Result of select_in_memory: kept row indices (sorted), classes, budgets, parts."""

    kept: np.ndarray
    classes: np.ndarray
    budgets: dict[int, int]
    part_budgets: dict[int, list[int]] = field(default_factory=dict)


def select_in_memory(
    key_hashes,
    x,
    y,
    fraction: float,
    seed: int,
    class_embeddings=None,
    max_class_size: int | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Selection:
    """Cross-covariance selection of a fraction of the rows (raw image and caption embeddings).

    key_hashes: hashing.key_hashes of the sample keys. Class sums are built from batches of
    `batch_rows` rows, as the combiner would see them; the result does not depend on it.
    """
    xq = normalise_rows(x)
    yq = normalise_rows(y)
    classes = pseudo_classes(xq, class_embeddings)
    ties = tie_keys(key_hashes, seed)
    present, counts = np.unique(classes, return_counts=True)
    budgets = class_budgets({int(c): int(n) for c, n in zip(present, counts, strict=True)}, fraction)
    kept: list[np.ndarray] = []
    parts_of: dict[int, list[int]] = {}
    for c in present.tolist():
        members = np.flatnonzero(classes == c)
        total = CrossCovSum()
        for start in range(0, len(members), batch_rows):
            rows = members[start : start + batch_rows]
            total.merge(CrossCovSum().add_batch(xq[rows], yq[rows]))
        class_matrix = total.matrix()
        part = split_parts(ties[members], len(members), max_class_size)
        sizes = np.bincount(part, minlength=int(part.max()) + 1).tolist()
        shares = part_budgets(sizes, budgets[c])
        parts_of[c] = shares
        for p, share in enumerate(shares):
            rows = members[part == p]
            picks = greedy_select(xq[rows], yq[rows], class_matrix, len(members), share, ties[rows])
            kept.append(rows[picks])
    all_kept = np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
    return Selection(kept=all_kept, classes=classes, budgets=budgets, part_budgets=parts_of)
