"""ids_by_file: the picked record ids grouped by the input file their id names."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.selection.parts import ids_by_file
from transforms.selection.stage import ROW_BITS


def test_no_picks_give_no_file():
    # A part that picked nothing (--select_fraction 0) has no file to mark.
    assert ids_by_file(np.zeros(0, dtype=np.uint64)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**20)), unique=True, max_size=40))
def test_each_file_gets_exactly_its_ids_sorted(pairs):
    ids = np.array([(f << ROW_BITS) | r for f, r in pairs], dtype=np.uint64)
    expected = {}
    for f, r in sorted(pairs):
        expected.setdefault(f, []).append((f << ROW_BITS) | r)
    got = ids_by_file(ids)
    assert [f for f, _ in got] == sorted(expected)
    assert {f: chunk.tolist() for f, chunk in got} == expected
