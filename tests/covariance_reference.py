"""An independent, slow, obviously-right cross-covariance selection (docs/selection.md).

Written from the spec in plain numpy and Python with no import from `transforms`, for the
unit and pipeline tests to compare the package against. It follows the package's
conventions (ours) where the spec leaves a choice: normalise each embedding and round it
to a multiple of 2**-20 (a zero vector stays zero), quantise the class embeddings the
same way, tie key = splitmix64(blake2b-64(key) ^ splitmix64(seed)) with smaller first,
largest-remainder budgets from the exact value of the float fraction, total round(f N).
Unlike the package it recomputes every gain from the d x d matrices at every step
(no incremental updates), and it never splits a class. Float64 throughout, so it agrees
with the package wherever the greedy path has no near-ties.
"""

from __future__ import annotations

import hashlib

import numpy as np

MASK = 2**64 - 1


def splitmix64_int(z: int) -> int:
    """SplitMix64's finaliser on one Python int, written out."""
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def tie_key(key: str, seed: int) -> int:
    """The tie-break value of one key for a seed (smaller wins a tie)."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    return splitmix64_int(h ^ splitmix64_int(seed % 2**64))


def quantised_unit(v) -> np.ndarray:
    """One vector, L2-normalised and rounded to multiples of 2**-20; zero stays zero."""
    v = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        return np.zeros_like(v)
    return np.round(v / norm * 2.0**20) / 2.0**20


def budgets_for(sizes: dict[int, int], fraction: float) -> dict[int, int]:
    """Largest-remainder budgets with integer arithmetic on fraction = p / q exactly."""
    p, q = float(fraction).as_integer_ratio()
    total = round(fraction * sum(sizes.values()))
    floors = {c: (p * n) // q for c, n in sizes.items()}
    left = total - sum(floors.values())
    out = dict(floors)
    # One at a time: the class with the largest remaining p n - q floor (exact), lowest id on a tie.
    candidates = sorted(sizes)
    for _ in range(left):
        best = None
        for c in candidates:
            if out[c] != floors[c]:
                continue
            rem = p * sizes[c] - q * floors[c]
            if rem > 0 and (best is None or rem > best[0]):
                best = (rem, c)
        out[best[1]] += 1
    return out


def greedy_by_recomputation(xs: list, ys: list, ties: list, budget: int) -> list[int]:
    """Greedy picks (indices into xs) of one class, every gain recomputed from T - C_S."""
    n = len(xs)
    d_x, d_y = len(xs[0]), len(ys[0])
    class_sum = np.zeros((d_x, d_y))
    for a, b in zip(xs, ys, strict=True):
        class_sum += np.outer(a, b)
    target = (budget / n) * class_sum
    chosen: list[int] = []
    for _ in range(budget):
        chosen_sum = np.zeros((d_x, d_y))
        for j in chosen:
            chosen_sum += np.outer(xs[j], ys[j])
        residual = target - chosen_sum
        best = None
        for i in range(n):
            if i in chosen:
                continue
            gain = 2.0 * float(xs[i] @ residual @ ys[i]) - float(xs[i] @ xs[i]) * float(ys[i] @ ys[i])
            if best is None or gain > best[0] or (gain == best[0] and ties[i] < best[1]):
                best = (gain, ties[i], i)
        chosen.append(best[2])
    return chosen


def reference_selection(keys, x, y, fraction, seed, class_embeddings=None) -> dict:
    """{"kept": set of kept keys, "budgets": {class: k_c}} for the classes that have members."""
    keys = list(keys)
    xq = [quantised_unit(row) for row in np.asarray(x)]
    yq = [quantised_unit(row) for row in np.asarray(y)]
    if class_embeddings is None or len(class_embeddings) == 0:
        classes = [0] * len(keys)
    else:
        w = [quantised_unit(row) for row in np.asarray(class_embeddings)]
        classes = []
        for v in xq:
            scores = [float(v @ wk) for wk in w]
            classes.append(scores.index(max(scores)))  # first maximum: the lowest class id
    sizes: dict[int, int] = {}
    for c in classes:
        sizes[c] = sizes.get(c, 0) + 1
    budgets = budgets_for(sizes, fraction)
    kept = set()
    for c, k in budgets.items():
        members = [i for i in range(len(keys)) if classes[i] == c]
        picks = greedy_by_recomputation(
            [xq[i] for i in members], [yq[i] for i in members], [tie_key(keys[i], seed) for i in members], k
        )
        kept.update(keys[members[p]] for p in picks)
    return {"kept": kept, "budgets": budgets}
