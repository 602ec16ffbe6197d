"""Lists of keys (transforms.filters.uid_lists) against a literal reading (tests/uid_list_reference.py;
a text list: a key is listed iff it equals a line, stripped)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uid_list_reference import npy_bytes, reference_in_npy, uid_rows

from transforms.filters.uid_lists import UidList

uids = st.integers(0, 2**128 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(uids, max_size=30), st.lists(uids, max_size=10), st.lists(st.text(max_size=33), max_size=6))
def test_npy_membership_equals_the_reference(listed, others, junk):
    keys = [f"{v:032x}" for v in listed[: len(listed) // 2]] + [f"{v:032X}" for v in others] + junk
    keys += [f"{v:031x}" for v in listed[:3]]  # short uids: in no .npy list
    order = np.random.default_rng(len(keys)).permutation(len(keys))
    keys = [keys[i] for i in order]
    found = UidList.from_bytes(npy_bytes(uid_rows(listed)), "l.npy").contains(keys)
    assert found.tolist() == [reference_in_npy(key, set(listed)) for key in keys]


def test_npy_with_repeats_other_field_names_and_unsorted_rows():
    values = [5, 2**127 + 3, 5, 2**64, 1]
    rows = uid_rows(values, dtype=[("hi", "<u8"), ("lo", "<u8")])
    found = UidList.from_bytes(npy_bytes(rows[::-1]), "l.npy")
    keys = [f"{v:032x}" for v in (1, 2, 5, 2**64, 2**64 + 1, 2**127 + 3, 2**127 + 4)]
    assert found.contains(keys).tolist() == [True, False, True, True, False, True, False]
    assert len(found) == 4 and found.is_uid_array


def test_text_list_lines_stripped_blank_lines_skipped_case_kept():
    found = UidList.from_bytes(b"  a-key \n\nB\r\nshard-0:12\n", "l.txt")
    keys = ["a-key", "b", "B", "shard-0:12", " a-key", ""]
    assert found.contains(keys).tolist() == [True, False, True, True, False, False]
    assert len(found) == 3 and not found.is_uid_array


def test_empty_lists_hold_nothing():
    assert UidList.from_bytes(npy_bytes(uid_rows([])), "e.npy").contains(["0" * 32]).tolist() == [False]
    assert UidList.from_bytes(b"", "e.txt").contains(["x"]).tolist() == [False]


@pytest.mark.parametrize(
    "data, message",
    [
        (npy_bytes(np.arange(4, dtype=np.int64)), "dtype u8,u8"),
        (npy_bytes(np.zeros(2, dtype="u4,u4")), "dtype u8,u8"),
        (npy_bytes(np.zeros((2, 2), dtype="u8")), "dtype u8,u8"),
        (b"\x93NUMPY\x01\x00garbage", "not a readable .npy"),
        (b"\xff\xfe\x00bad", "neither an .npy uid array nor UTF-8 text"),
    ],
)
def test_what_is_not_a_list_is_refused_with_one_line(data, message):
    with pytest.raises(ValueError, match=message):
        UidList.from_bytes(data, "bad")
