"""The large-cluster split (docs/dedup.md, "Large clusters") against the unsplit rule: what it misses.

One cluster of lone planted pairs (each base row has exactly one near copy, nothing else
near it) and unrelated rows. Split into P parts by the order bits, a pair is found iff
both of its rows land in the same part: probability 1/P, independently per pair (the bits
of different keys are independent draws). So the split finds a subset of the whole rule's
duplicates, every member's score can only go down, and the share of pairs it misses is
1 - 1/P within 4 standard deviations (sqrt(p (1 - p) / pairs)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.dedup.local import semdedup_in_memory

PAIRS, SINGLES, D = 800, 400, 32


def _lone_pairs(seed: int):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(PAIRS + SINGLES, D))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.normal(size=(PAIRS, D))
    noise -= (noise * base[:PAIRS]).sum(1, keepdims=True) * base[:PAIRS]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = 0.9995 * base[:PAIRS] + math.sqrt(1 - 0.9995**2) * noise  # cosine 0.9995 to its base row
    x = np.vstack([base, copies])
    keys = [f"p{seed}-{i}" for i in range(len(x))]
    return x, keys, np.zeros(len(x), np.int64), np.arange(len(x))


@pytest.mark.parametrize("parts", [2, 4, 8])
def test_the_split_misses_lone_pairs_with_probability_one_minus_one_over_p(parts):
    x, keys, files, rows = _lone_pairs(parts)
    centroid = np.ones((1, D))  # one cluster holds everything
    whole = semdedup_in_memory(x, keys, files, rows, seed=parts, centroids=centroid, eps=0.01, max_cluster_size=None)
    cap = math.ceil(len(x) / parts)
    split = semdedup_in_memory(x, keys, files, rows, seed=parts, centroids=centroid, eps=0.01, max_cluster_size=cap)
    assert whole.duplicate.sum() == PAIRS  # the whole rule finds every pair, and nothing else
    assert split.clusters_split == 1 and len(np.unique(split.part)) == parts
    assert not (split.duplicate & ~whole.duplicate).any()  # never a duplicate the whole rule lacks
    assert (split.score <= whole.score).all()  # earlier members of a part are some of the cluster's
    missed = 1 - split.duplicate.sum() / PAIRS
    p = 1 - 1 / parts
    assert abs(missed - p) <= 4 * math.sqrt(p * (1 - p) / PAIRS), (missed, p)
