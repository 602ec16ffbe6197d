"""transforms.core.accounting against hand-made figures, and the bad-vector check of the reader."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.core.accounting import AccountingError, account, accounting_failure, boundary_figures
from transforms.core.columns import KEPT, SOURCE_ROW
from transforms.formats.embeddings import as_fixed_size_list, bad_vector_reasons, split_bad_vectors

FATES, NAMES = ["filtered", "balanced_out", "not_selected"], ["Filter", "Balance", "Select"]


def _figures(read=100, rejected=7, dropped=20, balanced_out=30, not_selected=10) -> Counter:
    """A chain Filter (drops) -> Balance (clears flags) -> Select (clears flags)."""
    reached = read - rejected
    after_filter = reached - dropped
    figures = Counter({"read": read, "rows.0": reached, "rows.1": after_filter, "dropped.0": dropped})
    figures.update({"rows.2": after_filter, "unkept.2": balanced_out, "rows.3": after_filter})
    figures["unkept.3"] = balanced_out + not_selected
    kept = after_filter - balanced_out - not_selected
    figures.update({"written.subset": kept, "written.matches": after_filter, "written.filtered": dropped})
    return figures


EXPECTED = {"subset": "kept", "matches": "accepted", "filtered": "dropped"}


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_fates_sum_to_read(rejected, dropped, balanced_out, not_selected, kept):
    read = rejected + dropped + balanced_out + not_selected + kept
    figures = _figures(read, rejected, dropped, balanced_out, not_selected)
    document = account(figures, rejected, FATES, NAMES, EXPECTED)
    assert document == {
        "read": read,
        "rejected": rejected,
        "filtered": dropped,
        "balanced_out": balanced_out,
        "not_selected": not_selected,
        "kept": kept,
    }


def test_stages_of_one_fate_add_up_and_a_stage_keeping_every_record_has_none():
    figures = Counter({"read": 10, "rows.0": 10, "rows.1": 8, "dropped.0": 2, "rows.2": 5, "dropped.1": 3})
    figures.update({"rows.3": 5, "written.subset": 5})
    document = account(figures, 0, ["filtered", "filtered", ""], ["A", "B", "Balance"], {"subset": "kept"})
    assert document == {"read": 10, "rejected": 0, "filtered": 5, "kept": 5}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"read": 1}, "read 101 != rejected 7 + reached the stages 93"),
        ({"rows.2": -1, "rows.3": -1}, "Balance took 73 != handed on 72 + dropped 0"),
        ({"dropped.0": -1}, "Filter took 93 != handed on 73 + dropped 19"),
        ({"written.subset": -1}, "subset/ holds 32 rows != kept 33"),
        ({"written.matches": 1}, "matches/ holds 74 rows != accepted 73"),
        ({"written.filtered": 1}, "filtered/ holds 21 rows != dropped 20"),
        ({"unkept.3": -35}, "Select set the keep flag of 25 records another stage cleared"),
    ],
)
def test_a_record_lost_or_an_output_miscounted_names_the_figures(change, message):
    figures = _figures()
    figures.update(change)
    with pytest.raises(AccountingError) as raised:
        account(figures, 7, FATES, NAMES, EXPECTED)
    assert str(raised.value).startswith("records unaccounted for: ")
    assert message in str(raised.value)


def test_the_message_is_found_in_a_runners_wrapping():
    line = "records unaccounted for: Balance took 73 != handed on 72 + dropped 0"
    wrapped = RuntimeError(f"Traceback ...\nAccountingError: {line} [while running 'WriteStats/Write']\n")
    assert accounting_failure(wrapped) == line
    assert accounting_failure(RuntimeError("Channel closed prematurely.")) is None


def test_boundary_figures_count_rows_and_cleared_flags():
    batch = pa.record_batch({"key": ["a", "b", "c"], KEPT: [True, False, False]})
    assert boundary_figures(batch, 2) == Counter({"rows.2": 3, "unkept.2": 2})
    assert boundary_figures(batch.drop_columns([KEPT]), 0) == Counter({"rows.0": 3, "unkept.0": 0})


def test_bad_vectors_are_nan_infinity_or_all_zeros():
    matrix = np.array([[1, 0], [np.nan, 1], [0, 0], [np.inf, 0], [0, -0.0], [1e-30, 0], [np.nan, 0]], np.float32)
    assert bad_vector_reasons(matrix).tolist() == [
        "",
        "bad_embedding_vector",
        "zero_embedding_vector",
        "bad_embedding_vector",
        "zero_embedding_vector",
        "",
        "bad_embedding_vector",
    ]


def test_split_bad_vectors_rejects_each_row_for_the_first_bad_embedding():
    image = np.array([[1, 2], [np.nan, 1], [0, 0], [3, 4]], np.float32)
    text = np.array([[1, 1], [0, 0], [np.inf, 1], [1, 0]], np.float32)
    batch = pa.record_batch(
        [
            pa.array(["k0", "k1", "k2", "k3"]),
            pa.array([0, 1, 2, 3]),
            as_fixed_size_list(image),
            as_fixed_size_list(text),
        ],
        names=["key", SOURCE_ROW, "img", "txt"],
    )
    kept, rejections = split_bad_vectors(batch, {"i": "img", "t": "txt"}, "f.parquet")
    assert kept.column("key").to_pylist() == ["k0", "k3"]
    assert [(r.row, r.reason, r.raw) for r in rejections] == [
        (1, "bad_embedding_vector", {"key": "k1", "embedding": "i"}),
        (2, "zero_embedding_vector", {"key": "k2", "embedding": "i"}),
    ]
    clean = batch.filter(pa.array([True, False, False, True]))
    assert split_bad_vectors(clean, {"i": "img", "t": "txt"}, "f.parquet") == (clean, [])
