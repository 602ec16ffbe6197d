"""Per-entry counts in blocks: the sparse pairs a batch yields add up to a plain count of its ids."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.counting import assemble_counts, sparse_block_counts


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, 999), max_size=300),
    block_size=st.sampled_from([1, 7, 64, 1000, 1 << 16]),
    dtype=st.sampled_from([np.int32, np.int64]),
)
def test_sparse_block_counts_equal_a_counter_of_the_ids(ids, block_size, dtype):
    pairs = list(sparse_block_counts(np.array(ids, dtype=dtype), block_size))
    blocks = [block for block, _ in pairs]
    assert blocks == sorted(set(blocks))  # one pair per block, ascending
    found = Counter()
    for block, (local_ids, counts) in pairs:
        assert local_ids.dtype == np.int32 and counts.dtype == np.int64
        assert np.all((0 <= local_ids) & (local_ids < block_size)) and np.all(np.diff(local_ids) > 0)
        found.update({block * block_size + int(i): int(c) for i, c in zip(local_ids, counts, strict=True)})
    assert found == Counter(ids)
    dense = [
        (block, np.bincount(local_ids, counts, minlength=block_size).astype(np.int64))
        for block, (local_ids, counts) in pairs
    ]
    assert assemble_counts(dense, 1000, block_size).tolist() == np.bincount(ids, minlength=1000).tolist()
