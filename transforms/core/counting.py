"""Per-entry caption counts in blocks of entry ids. No Beam import.

The counting CombinePerKey is keyed by block (entry id // block size) with a
dense numpy vector per block as accumulator: the merge of 500k counters is
spread over as many workers as there are blocks, and the blocks reassemble
into one small int64 array for the sampler's side input.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

DEFAULT_BLOCK_SIZE = 1 << 16


def sparse_block_counts(flat_ids: np.ndarray, block_size: int) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """(block, (ids within the block, counts)) for the ids of a batch of captions.

    Each caption's ids are a set, so counting occurrences in `flat_ids` counts
    captions per entry.
    """
    if len(flat_ids) == 0:
        return
    # A sort of the ids as they are (int32 from the matcher) and the run lengths:
    # half the time of np.unique(return_counts=True) on a batch's ~24k ids.
    ordered = np.sort(np.asarray(flat_ids))
    firsts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ids = ordered[firsts].astype(np.int64)
    counts = np.diff(np.r_[firsts, len(ordered)])
    blocks = ids // block_size
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    for start, end in zip(starts, ends, strict=True):
        block = int(blocks[start])
        yield block, ((ids[start:end] - block * block_size).astype(np.int32), counts[start:end].astype(np.int64))


def assemble_counts(blocks: Iterable[tuple[int, np.ndarray]], num_entries: int, block_size: int) -> np.ndarray:
    """One int64 count per entry from dense per-block vectors (absent blocks are zero)."""
    counts = np.zeros(num_entries, dtype=np.int64)
    for block, vector in blocks:
        start = block * block_size
        end = min(start + block_size, num_entries)
        counts[start:end] += vector[: end - start]
    return counts
