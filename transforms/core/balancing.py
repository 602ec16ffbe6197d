"""Balancing: MetaCLIP's entry and caption keep probabilities, and the draw.

Pure Python and numpy, no Beam import (docs/curation-spec.md, section 6). The
pipeline's sampler and the training-time loader call these same functions.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from transforms.core.hashing import uniform_draws


def entry_probabilities(counts: np.ndarray, threshold: int | np.ndarray) -> np.ndarray:
    """p_e = 1 if count[e] <= t else t / count[e], as float64.

    `threshold` is one t for every entry, or an int64 array with each entry's
    own t (MetaCLIP 2: a t per language, `worldwide.entry_thresholds`).
    """
    counts = np.asarray(counts, dtype=np.int64)
    probs = np.ones(len(counts), dtype=np.float64)
    if np.ndim(threshold) == 0:
        head = counts > threshold
        probs[head] = threshold / counts[head]
        return probs
    thresholds = np.asarray(threshold, dtype=np.int64)
    if thresholds.shape != counts.shape:
        raise ValueError(f"thresholds of shape {thresholds.shape} for counts of shape {counts.shape}")
    head = counts > thresholds
    # Both operands are converted to float64 before dividing, as in the scalar
    # case: an entry whose t equals the single t gets the bit-identical p_e.
    probs[head] = thresholds[head] / counts[head]
    return probs


def keep_probability(entry_ids: Sequence[int], entry_probs: np.ndarray) -> float:
    """P = 1 - prod over the caption's entries of (1 - p_e); 0 with no match.

    The scalar form of `keep_probabilities`, multiplying in the same order
    (ascending ids), so both give bit-identical results.
    """
    if len(entry_ids) == 0:
        return 0.0
    return 1.0 - math.prod(1.0 - float(entry_probs[i]) for i in entry_ids)


def keep_probabilities(offsets: np.ndarray, flat_ids: np.ndarray, entry_probs: np.ndarray) -> np.ndarray:
    """`keep_probability` for a whole batch in Arrow list layout (offsets, flat ids)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    num_rows = len(offsets) - 1
    result = np.zeros(num_rows, dtype=np.float64)
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    if nonempty.any():
        complements = 1.0 - entry_probs[np.asarray(flat_ids, dtype=np.int64)]
        # reduceat multiplies each segment left to right, like math.prod; it
        # mishandles empty segments, so only non-empty starts are passed.
        products = np.multiply.reduceat(complements, offsets[:-1][nonempty])
        result[nonempty] = 1.0 - products
    return result


def keep_decisions(keep_probs: np.ndarray, hashes: np.ndarray, seed: int) -> np.ndarray:
    """Keep sample i iff its (seed, key) uniform draw is below its keep probability."""
    return uniform_draws(hashes, seed) < keep_probs
