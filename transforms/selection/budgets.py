"""Budgets of the cross-covariance selection: per class, and per part of a large class.

Pure Python and numpy, no Beam import (docs/selection.md). Proportional
budgets by the largest-remainder rule (ours, as the ClipCov authors' earlier SAS code):
for a fraction f of N samples, k_c = floor(f n_c), then one more for the classes with the
largest remainders f n_c - k_c (ties to the lower class id) until the total is exactly
round(f N).

Exactness (ours): the total is Python's `round` of the float product `f * N`, so halves
go to the even integer (banker's rounding: f N = 2.5 gives 2, 3.5 gives 4). The floors
and remainders use the exact rational value of the float f (fractions.Fraction), never
a float product, so budgets cannot depend on float noise in f * n_c.

A class above a size cap is split by key into parts (the first round of GreeDi, an
approximation the spec asks to measure); each part gets its share of the class budget
by the same rule, with the exact fraction k_c / n_c.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np


def _largest_remainder(sizes: Sequence[tuple[int, int]], fraction: Fraction, total: int) -> dict[int, int]:
    """floor(fraction * n) per (id, n), plus one for the largest remainders until `total`."""
    num, den = fraction.numerator, fraction.denominator
    budgets = {}
    remainders = []
    for ident, n in sizes:
        k, rem = divmod(num * n, den)  # remainder rem / den, compared exactly as integers
        budgets[ident] = k
        remainders.append((-rem, ident))
    extra = total - sum(budgets.values())
    remainders.sort()
    if extra < 0 or extra > sum(1 for rem, _ in remainders if rem < 0):
        raise ValueError(f"total {total} cannot be reached from the floors {budgets}")
    for _, ident in remainders[:extra]:
        budgets[ident] += 1
    return budgets


def _check_sizes(sizes: Mapping[int, int] | Sequence[int]) -> None:
    values = sizes.values() if isinstance(sizes, Mapping) else sizes
    if any(int(n) != n or n < 0 for n in values):
        raise ValueError(f"sizes must be non-negative integers: {sizes}")


def class_budgets(sizes: Mapping[int, int], fraction: float) -> dict[int, int]:
    """k_c per class id for a fraction of the pool: sums to round(f * N), each k_c <= n_c.

    sizes: class id -> n_c. f is taken as a float (0 <= f <= 1); see the module docstring
    for the rounding of the total and the exact remainders.
    """
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction {fraction} outside [0, 1]")
    _check_sizes(sizes)
    total = round(f * sum(int(n) for n in sizes.values()))
    return _largest_remainder([(int(c), int(n)) for c, n in sorted(sizes.items())], Fraction(f), total)


def num_parts(class_size: int, max_class_size: int | None) -> int:
    """ceil(n_c / max_class_size), at least 1; 1 when there is no cap."""
    if max_class_size is None:
        return 1
    if max_class_size < 1:
        raise ValueError(f"max_class_size {max_class_size} must be at least 1")
    return max(1, math.ceil(class_size / max_class_size))


def split_parts(hashes, class_size: int, max_class_size: int | None) -> np.ndarray:
    """Part index of each member: hash % ceil(n_c / max_class_size), int64.

    hashes: one uniform 64-bit value per member (local.py passes the tie keys, so the split
    changes with the seed). Deterministic and order-free, but the parts are only
    approximately equal: each holds max_class_size members in expectation, and may hold a
    few more (binomial spread). A caller that needs a hard bound must cap again.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    parts = num_parts(class_size, max_class_size)
    return (h % np.uint64(parts)).astype(np.int64)


def part_budgets(part_sizes: Sequence[int], class_budget: int) -> list[int]:
    """Budget per part (list index = part): class_budget split by the largest-remainder rule.

    The exact fraction k_c / n_c of each part's size, one more for the largest remainders
    (ties to the lower part index); sums to class_budget, each <= its part's size.
    """
    _check_sizes(part_sizes)
    n = sum(int(s) for s in part_sizes)
    if not 0 <= class_budget <= n:
        raise ValueError(f"class budget {class_budget} outside [0, {n}]")
    if n == 0:
        return [0] * len(part_sizes)
    shares = _largest_remainder(list(enumerate(int(s) for s in part_sizes)), Fraction(class_budget, n), class_budget)
    return [shares[p] for p in range(len(part_sizes))]
