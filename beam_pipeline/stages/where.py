"""--where COLUMN OP NUMBER, repeatable: keep the records whose numeric columns compare true.

The rule is transforms.filters.where (pure); the transform transforms.beam.drop.DropRecords.
A dropped record goes to filtered/ with the first condition it fails, named as
`where COLUMN OP NUMBER`; the conditions are tried in the order given.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from beam_pipeline.option_checks import BadValue, UsageError
from beam_pipeline.stages.assets import column_type
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.drop import DropRecords, DropRule
from transforms.filters.where import Condition, first_failed, is_comparable, parse_condition


def condition(value: str) -> Condition:
    try:
        return parse_condition(value)
    except ValueError as error:
        raise BadValue(str(error)) from None


class _WhereRule(DropRule):
    def __init__(self, conditions: tuple[Condition, ...]):
        self.conditions = conditions
        self.names = tuple(c.text for c in conditions)

    def first_failed(self, batch: pa.RecordBatch) -> np.ndarray:
        columns = {c.column: batch.column(c.column) for c in self.conditions}
        return first_failed(columns, self.conditions) if columns else np.full(batch.num_rows, -1)


class Where(Stage):
    """--where: numeric conditions on the input's columns, all of which a kept record meets."""

    name = "Where"
    main_flag = "--where"

    def __init__(self, conditions: tuple[Condition, ...]):
        self.conditions = conditions
        self.reasons = tuple(c.text for c in conditions)

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--where",
            condition,
            action="append",
            default=None,
            metavar="EXPR",
            help="keep records whose numeric column compares true: 'COLUMN OP NUMBER', OP one of < <= > >= == != "
            "(LAION: 'aesthetic > 7', 'punsafe < 0.5'); null or NaN fails; repeat for more, all must hold",
        )

    @classmethod
    def used(cls, args) -> bool:
        return bool(args.where)

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "Where":
        conditions = tuple(dict.fromkeys(args.where))  # a condition given twice is one condition
        for c in conditions:
            dtype = column_type(inputs.layout, c.column, f"--where '{c.text[len('where ') :]}': column")
            if not is_comparable(dtype):
                raise UsageError(f"--where '{c.text[len('where ') :]}': column {c.column!r} is {dtype}, not a number")
        return cls(conditions)

    def apply(self, batches, run: RunContext) -> StageOutput:
        kept = batches | self.name >> DropRecords(_WhereRule(self.conditions))
        return StageOutput(kept.batches, dropped=kept.dropped)

    def stats(self, figures: dict, final: dict) -> dict:
        return {"filters": {"where": [c.text[len("where ") :] for c in self.conditions]}}
