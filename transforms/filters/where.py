"""--where COLUMN OP NUMBER: keep a record when its numeric column compares true (docs/datacomp.md).

No Beam import. OP is one of <, <=, >, >=, ==, != (LAION's subsets are cut this way:
`aesthetic > 7`, `pwatermark < 0.8`, `punsafe < 0.5`). A null or NaN value fails every
comparison, != included: a record whose score is unknown is not kept by a rule on it.
Integer columns are compared exactly with an integral NUMBER (no rounding through float).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OPERATORS = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal", "==": "equal", "!=": "not_equal"}
_CONDITION = re.compile(r"^\s*([^\s<>=!]+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Condition:
    """One --where: `column op value`; `text` is how filtered/ and stats.json name it."""

    column: str
    op: str
    value: float

    @property
    def text(self) -> str:
        number = int(self.value) if self.value.is_integer() and abs(self.value) < 2**53 else self.value
        return f"where {self.column} {self.op} {number}"


def parse_condition(text: str) -> Condition:
    """`COLUMN OP NUMBER` -> Condition; ValueError with one line naming the text otherwise."""
    found = _CONDITION.match(text or "")
    if not found:
        raise ValueError(
            f"--where takes COLUMN OP NUMBER with OP one of {' '.join(OPERATORS)} (e.g. 'aesthetic > 7'); got {text!r}"
        )
    column, op, number = found.groups()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"--where {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"--where {text!r}: the number must be finite")
    return Condition(column, op, value)


def is_comparable(dtype: pa.DataType) -> bool:
    """Whether --where can compare a column of this type (integers and floats)."""
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)


def holds(values: pa.Array, condition: Condition) -> np.ndarray:
    """A bool per row: the condition is true of the row's value (False for null and NaN)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    value = condition.value
    exact = pa.types.is_integer(values.type) and values.type != pa.uint64() and value.is_integer()
    if exact and abs(value) < 2**63:  # an int64 above 2**53 is compared without rounding
        values, scalar = values.cast(pa.int64()), pa.scalar(int(value), pa.int64())
    else:
        values, scalar = values.cast(pa.float64()), pa.scalar(value)
    result = getattr(pc, OPERATORS[condition.op])(values, scalar)
    if pa.types.is_floating(values.type):
        result = pc.and_kleene(result, pc.invert(pc.is_nan(values)))
    return result.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def first_failed(columns: dict, conditions: tuple) -> np.ndarray:
    """The index of the first condition each row fails, -1 when it passes all; `columns`: name -> array."""
    rows = len(next(iter(columns.values()))) if columns else 0
    failed = np.full(rows, -1, dtype=np.int64)
    for index, condition in enumerate(conditions):
        alive = failed < 0
        if not alive.any():
            break
        failed[alive & ~holds(columns[condition.column], condition)] = index
    return failed
