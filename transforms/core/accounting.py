"""Record accounting: every record read has exactly one fate, counted where it happens.

No Beam import. The pipeline counts (transforms.beam, curation/graph.py), as integers
summed exactly:

- `read`: the records the reader read, per file, rejected ones included (`read_figures`);
- `rejected`: the records of the reader's rejections;
- per stage, at its boundary (`boundary_figures`): the rows it hands on and how many of
  them have the keep flag cleared, and the rows of its `dropped` output (`dropped_figures`);
- per sharded output, the rows its writers wrote (`written_figures`).

`account` checks them and gives stats.json's `accounting` object, or raises
`AccountingError` with one line naming the figures that do not add up. A stage's fate (the
name its records count under: filtered, balanced_out, not_selected, deduplicated ...) is
the stage's own (`Stage.fate`): the records it drops plus those whose keep flag it
clears. So a new stage adds its fate without touching the check.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from transforms.core.columns import KEPT

ERROR_PREFIX = "records unaccounted for: "
# The one-line message inside whatever text a runner wraps the worker's error in.
_MESSAGE = re.compile(re.escape(ERROR_PREFIX) + r"[^\n\[\]]*[^\s\[\]]")

READ = "read"
REJECTED = "rejected"
KEPT_FATE = "kept"


class AccountingError(ValueError):
    """Records that reached no fate, or an output that holds another number of rows."""


def read_figures(records: int) -> Counter:
    """Figures of one input file: the records read from it, rejected ones included."""
    return Counter({READ: records})


def boundary_figures(batch: pa.RecordBatch, boundary: int) -> Counter:
    """Figures of one batch handed on at `boundary` (0: the reader's, i + 1: stage i's):
    its rows, and how many of them have the keep flag cleared (none before a flag exists)."""
    rows = batch.num_rows
    unkept = 0
    if KEPT in batch.schema.names:
        unkept = rows - int(np.count_nonzero(batch.column(KEPT).to_numpy(zero_copy_only=False)))
    return Counter({f"rows.{boundary}": rows, f"unkept.{boundary}": unkept})


def dropped_figures(batch: pa.RecordBatch, stage: int) -> Counter:
    """Figures of one batch of records stage `stage` dropped (its `dropped` output)."""
    return Counter({f"dropped.{stage}": batch.num_rows})


def output_name(directory: str) -> str:
    """A sharded output's name in the figures: its directory's last part (subset, matches ...)."""
    return directory.rstrip("/").rsplit("/", 1)[-1]


def written_figures(output: str, rows: int) -> Counter:
    """Figures of one shard of sharded output `output` (`output_name`): the rows written to it."""
    return Counter({f"written.{output}": rows})


def account(
    figures: Mapping[str, int],
    rejected: int,
    fates: Sequence[str],
    stage_names: Sequence[str],
    expected_rows: Mapping[str, str],
) -> dict:
    """stats.json's `accounting` object: {read, rejected, one per fate in chain order, kept}.

    `figures`: the summed figures above; `rejected`: the records rejected; `fates[i]` and
    `stage_names[i]`: stage i's fate ("" for a stage that keeps every record) and name;
    `expected_rows`: output -> the figure its rows must equal (`kept`; `accepted`: the rows
    that reach the end; `dropped`: the records the stages dropped), or a tuple of stage
    indices: the records those stages dropped (filtered/ and dedup's duplicates/ apart).
    Raises AccountingError when read != rejected + the fates + kept, when a stage hands on
    fewer or more rows than it took less those it dropped, or an output holds other rows.
    """
    get = figures.get
    read = get(READ, 0)
    problems = []
    entered = get("rows.0", 0)
    if read != rejected + entered:
        problems.append(f"read {read} != rejected {rejected} + reached the stages {entered}")
    counts: dict = {}
    for i, (fate, name) in enumerate(zip(fates, stage_names, strict=True)):
        taken, handed = get(f"rows.{i}", 0), get(f"rows.{i + 1}", 0)
        dropped = get(f"dropped.{i}", 0)
        cleared = get(f"unkept.{i + 1}", 0) - get(f"unkept.{i}", 0)
        if taken != handed + dropped:
            problems.append(f"{name} took {taken} != handed on {handed} + dropped {dropped}")
        if cleared < 0:
            problems.append(f"{name} set the keep flag of {-cleared} records another stage cleared")
        if fate:
            counts[fate] = counts.get(fate, 0) + dropped + cleared
        elif dropped + cleared:
            problems.append(f"{name}, which keeps every record, dropped {dropped + cleared}")
    end = len(fates)
    accepted = get(f"rows.{end}", 0)
    kept = accepted - get(f"unkept.{end}", 0)
    document = {READ: read, REJECTED: rejected, **counts, KEPT_FATE: kept}
    total = sum(value for name, value in document.items() if name != READ)
    if total != read and not problems:
        problems.append(f"read {read} != {' + '.join(f'{n} {v}' for n, v in document.items() if n != READ)}")
    wanted = {KEPT_FATE: kept, "accepted": accepted, "dropped": sum(get(f"dropped.{i}", 0) for i in range(end))}
    for output, figure in expected_rows.items():
        rows = get(f"written.{output}", 0)
        if isinstance(figure, tuple):
            want, figure = (
                sum(get(f"dropped.{i}", 0) for i in figure),
                f"dropped by {', '.join(stage_names[i] for i in figure)}",
            )
        else:
            want = wanted[figure]
        if rows != want:
            problems.append(f"{output}/ holds {rows} rows != {figure} {want}")
    if problems:
        raise AccountingError(ERROR_PREFIX + "; ".join(problems))
    return document


def accounting_failure(error: Optional[BaseException]) -> Optional[str]:
    """The one-line accounting message carried by `error` (however a runner wrapped it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _MESSAGE.search(str(error))
        if found:
            return found.group(0)
        error = error.__cause__ or error.__context__
    return None
