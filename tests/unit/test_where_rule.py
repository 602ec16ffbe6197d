"""--where's rule (transforms.filters.where) against a literal per-row reading (tests/where_reference.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from where_reference import OPS, reference_first_failed

from transforms.filters.where import Condition, first_failed, holds, is_comparable, parse_condition


@pytest.mark.parametrize(
    "text, column, op, value, name",
    [
        ("aesthetic > 7", "aesthetic", ">", 7.0, "where aesthetic > 7"),
        ("pwatermark<0.8", "pwatermark", "<", 0.8, "where pwatermark < 0.8"),
        ("  punsafe <= 0.5 ", "punsafe", "<=", 0.5, "where punsafe <= 0.5"),
        ("n == -1e3", "n", "==", -1000.0, "where n == -1000"),
        ("x!=2.5", "x", "!=", 2.5, "where x != 2.5"),
        ("w >= 200", "w", ">=", 200.0, "where w >= 200"),
    ],
)
def test_parse(text, column, op, value, name):
    condition = parse_condition(text)
    assert (condition.column, condition.op, condition.value, condition.text) == (column, op, value, name)


@pytest.mark.parametrize("text", ["", "aesthetic", "x ~ 3", "x = 3", "x > abc", "x > nan", "x > inf", "> 3", "x > 1 2"])
def test_parse_refuses_what_is_not_column_op_number(text):
    with pytest.raises(ValueError, match="--where"):
        parse_condition(text)


def test_types_it_compares():
    assert is_comparable(pa.int8()) and is_comparable(pa.uint64()) and is_comparable(pa.float16())
    assert not any(is_comparable(t) for t in (pa.string(), pa.bool_(), pa.list_(pa.float32()), pa.timestamp("s")))


def test_null_and_nan_fail_every_comparison_and_ties_follow_the_operator():
    values = pa.array([None, float("nan"), 0.5, 0.5000001, 0.4999999], pa.float64())
    expected = {
        "<": [False, False, False, False, True],
        "<=": [False, False, True, False, True],
        ">": [False, False, False, True, False],
        ">=": [False, False, True, True, False],
        "==": [False, False, True, False, False],
        "!=": [False, False, False, True, True],  # NaN != 0.5 is true in IEEE, not here
    }
    for op, rows in expected.items():
        assert holds(values, Condition("s", op, 0.5)).tolist() == rows, op


def test_large_integers_compare_exactly():
    big = 2**53 + 1  # not a float64: a comparison through float would call it equal to 2**53
    values = pa.array([big, 2**53, None], pa.int64())
    assert holds(values, Condition("n", ">", float(2**53))).tolist() == [True, False, False]
    assert holds(values, Condition("n", "==", float(2**53))).tolist() == [False, True, False]


def _columns():
    ints = st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=0, max_size=40)
    floats = st.lists(
        st.one_of(st.none(), st.just(float("nan")), st.sampled_from([-1.5, 0.0, 0.25, 0.5, 2.0, 7.0])),
        min_size=0,
        max_size=40,
    )
    return st.tuples(ints, floats)


@settings(max_examples=300, deadline=None)
@given(
    _columns(),
    st.lists(
        st.tuples(st.sampled_from(["i", "f"]), st.sampled_from(sorted(OPS)), st.sampled_from([-1, 0, 0.25, 0.5, 2, 7])),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["int64", "int32", "uint8"]),
    st.sampled_from(["float32", "float64"]),
)
def test_first_failed_equals_the_reference(columns, conditions, int_type, float_type):
    ints, floats = columns
    n = min(len(ints), len(floats))
    ints, floats = ints[:n], floats[:n]
    if int_type == "uint8":
        ints = [None if v is None else abs(v) for v in ints]
    arrays = {"i": pa.array(ints, pa.int64()).cast(int_type), "f": pa.array(floats, pa.float64()).cast(float_type)}
    conditions = [Condition(column, op, float(value)) for column, op, value in conditions]
    rows = [
        {
            "i": ints[r],
            "f": None if floats[r] is None else float(np.float32(floats[r])) if float_type == "float32" else floats[r],
        }
        for r in range(n)
    ]
    assert first_failed(arrays, tuple(conditions)).tolist() == reference_first_failed(rows, conditions)
