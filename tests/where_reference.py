"""A literal per-row reading of --where (docs/datacomp.md), sharing no code with transforms.filters.where:
keep a row iff its value is neither null nor NaN and `value OP NUMBER` holds, Python's exact
int/float comparison being the reference."""

from __future__ import annotations

import math
import operator

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


def reference_holds(value, op: str, number: float) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return OPS[op](value, number)


def reference_first_failed(rows: list[dict], conditions) -> list[int]:
    """Per row, the index of the first condition (column, op, value) it fails; -1 if none."""
    out = []
    for row in rows:
        failed = [i for i, c in enumerate(conditions) if not reference_holds(row[c.column], c.op, c.value)]
        out.append(failed[0] if failed else -1)
    return out
