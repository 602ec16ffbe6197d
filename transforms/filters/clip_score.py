"""DataComp's clip_score fraction filter, exactly, without gathering the score column.

docs/datacomp.md, "The rules" (clip_score, fraction f: the threshold is taken
over every accepted record of the pool, before any other filter). DataComp sorts the whole
column: `n = int(N * f)`, `threshold = -np.sort(-scores)[n]` (NaNs sort last), keep
`score >= threshold`. `threshold_by_sort` is that rule, literally; it is the test oracle.

The pool is too big for one machine, so the (n+1)-th largest score is found by a radix
select. `order_keys` maps each non-NaN float to an unsigned integer of the float's own
width that sorts as the float does. Pass p counts the 16-bit digit p (from the top) of the
keys whose higher digits equal the prefix chosen so far: a histogram of 2**16 counts that
batches sum by plain addition. `next_state` picks the digit holding the wanted rank and
narrows the prefix. After `passes` passes (known from the dtype before any data is seen:
1 for float16, 2 for float32, 4 for float64) the prefix is the threshold's key.

Driving it (the Beam wrapper, or `radix_threshold` in plain Python):

    state = start_select(N, nan_count, f, dtype)       # N and NaN count: one counting pass
    while not state.finished:                           # pass 0 only needs the dtype
        state = next_state(state, sum(state.histogram(order_keys(batch)[0]) for batch))
    keep = keep_flags(batch, threshold_of(state))

n >= N (for instance f = 1.0) has no (n+1)-th score: DataComp would raise IndexError; here
**(ours)** the threshold is NaN and nothing is kept. The same holds when index n lands on a
NaN (fewer than n+1 real scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

DIGIT_BITS = 16
DIGITS = 1 << DIGIT_BITS
# Keys have the float's own width, so a batch keyed from another dtype than the state's fails loudly.
_KEY_DTYPES = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def key_bits(dtype) -> int:
    """Bits of the keys of a float dtype: 16, 32 or 64 (TypeError for other dtypes)."""
    dtype = np.dtype(dtype)
    if dtype not in _KEY_DTYPES:
        raise TypeError(f"clip scores must be float16, float32 or float64, not {dtype}")
    return dtype.itemsize * 8


def order_keys(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(keys of the non-NaN values, NaN count); keys ascend exactly as the values do.

    The keys are uint16/uint32/uint64 as the values are float16/32/64. -0.0 is made +0.0
    first, so both zeros share one key: they are equal floats, so the select and the final
    `>=` treat them alike (the threshold of a zero is returned as +0.0).
    """
    values = np.asarray(values).ravel()
    bits = key_bits(values.dtype)
    real = values[~np.isnan(values)]
    real = real + values.dtype.type(0)  # IEEE: -0.0 + 0.0 == +0.0, every other value unchanged
    raw = real.view(_KEY_DTYPES[values.dtype])
    sign = raw.dtype.type(1 << (bits - 1))
    # Positive floats: set the sign bit (above every negative). Negative floats: flip all
    # bits, so a larger magnitude gets a smaller key.
    keys = np.where(raw & sign, ~raw, raw | sign)
    return keys, int(values.size - real.size)


def value_of_key(key: int, dtype) -> float:
    """The float whose key is `key` (the inverse of `order_keys`)."""
    bits = key_bits(dtype)
    sign = 1 << (bits - 1)
    raw = key ^ sign if key & sign else ~key & ((1 << bits) - 1)
    return float(np.array([raw], dtype=_KEY_DTYPES[np.dtype(dtype)]).view(dtype)[0])


def digit_histogram(keys: np.ndarray, prefix: int, pass_index: int, bits: int) -> np.ndarray:
    """Counts (2**16, int64) of digit `pass_index` among the keys whose higher digits are `prefix`."""
    keys = np.asarray(keys)
    if keys.dtype.itemsize * 8 != bits or keys.dtype.kind != "u":
        raise ValueError(f"keys of dtype {keys.dtype} for a select over {bits}-bit keys")
    if not 0 <= pass_index < bits // DIGIT_BITS:
        raise ValueError(f"pass {pass_index} of a {bits}-bit select")
    shift = bits - DIGIT_BITS * (pass_index + 1)
    if pass_index > 0:  # pass 0 has no higher digits (and a shift by the full width is undefined)
        keys = keys[(keys >> (shift + DIGIT_BITS)) == prefix]
    digits = ((keys >> shift) & (DIGITS - 1)).astype(np.intp)
    return np.bincount(digits, minlength=DIGITS).astype(np.int64)


@dataclass(frozen=True)
class SelectState:
    """Where a radix select stands: small and picklable, all a pass needs besides the keys.

    `rank` is 0-based, counted from the LARGEST key among those under `prefix`; -1 means
    there is no threshold (n >= N, or index n lands on a NaN). `expected` is how many keys
    the next histogram must hold: a lost or doubled batch raises instead of a wrong answer.
    """

    dtype: str
    rank: int
    expected: int
    prefix: int = 0
    pass_index: int = 0

    @property
    def key_bits(self) -> int:
        return key_bits(self.dtype)

    @property
    def passes(self) -> int:
        return self.key_bits // DIGIT_BITS

    @property
    def finished(self) -> bool:
        return self.rank < 0 or self.pass_index == self.passes

    def histogram(self, keys: np.ndarray) -> np.ndarray:
        """This pass's `digit_histogram` of one batch of keys."""
        return digit_histogram(keys, self.prefix, self.pass_index, self.key_bits)


def _rank(total_rows: int, fraction: float) -> int:
    """DataComp's n = int(N * f): a Python float product, then truncation."""
    fraction = float(fraction)  # as DataComp's argparse float; a numpy float32 would round otherwise
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"clip_score fraction must be in [0, 1], not {fraction}")
    return int(total_rows * fraction)


def start_select(total_rows: int, nan_rows: int, fraction: float, dtype) -> SelectState:
    """The state before pass 0, from the counts over ALL rows (NaNs sort last, as in DataComp)."""
    total_rows, nan_rows = int(total_rows), int(nan_rows)  # counts may come as numpy ints
    if not 0 <= nan_rows <= total_rows:
        raise ValueError(f"{nan_rows} NaN rows of {total_rows}")
    dtype = np.dtype(dtype)
    key_bits(dtype)
    n = _rank(total_rows, fraction)
    real = total_rows - nan_rows
    return SelectState(dtype=dtype.name, rank=n if n < real else -1, expected=real)


def next_state(state: SelectState, histogram: np.ndarray) -> SelectState:
    """Pick the digit holding `state.rank` (counting from the top) and narrow the prefix."""
    if state.finished:
        raise ValueError("the select is finished: no further pass")
    histogram = np.asarray(histogram, dtype=np.int64)
    if histogram.shape != (DIGITS,):
        raise ValueError(f"a histogram has {DIGITS} counts, not shape {histogram.shape}")
    from_top = np.cumsum(histogram[::-1])  # from_top[i]: keys whose digit is >= DIGITS-1-i
    if from_top[-1] != state.expected:
        raise ValueError(
            f"pass {state.pass_index} counted {from_top[-1]} keys under its prefix, expected {state.expected}"
        )
    i = int(np.searchsorted(from_top, state.rank, side="right"))  # first i with from_top[i] > rank
    digit = DIGITS - 1 - i
    above = int(from_top[i] - histogram[digit])  # keys with a larger digit
    return replace(
        state,
        rank=state.rank - above,
        expected=int(histogram[digit]),
        prefix=(state.prefix << DIGIT_BITS) | digit,
        pass_index=state.pass_index + 1,
    )


def threshold_of(state: SelectState) -> float:
    """The threshold once the select is finished: the float whose key is the prefix; NaN for none."""
    if not state.finished:
        raise ValueError(f"the select needs {state.passes - state.pass_index} more passes")
    return math.nan if state.rank < 0 else value_of_key(state.prefix, state.dtype)


def radix_threshold(chunks: list[np.ndarray], fraction: float, dtype=None) -> float:
    """The whole select over a list of arrays, in plain Python (the passes a Beam wrapper runs).

    `dtype` defaults to the chunks' common float type (float64 with no chunks).
    """
    arrays = [np.asarray(chunk).ravel() for chunk in chunks]
    if dtype is None:
        dtype = np.result_type(*arrays) if arrays else np.float64
    keyed = [order_keys(array.astype(dtype, copy=False)) for array in arrays]
    state = start_select(sum(a.size for a in arrays), sum(nans for _, nans in keyed), fraction, dtype)
    while not state.finished:
        histogram = np.zeros(DIGITS, dtype=np.int64)
        for keys, _ in keyed:
            histogram += state.histogram(keys)
        state = next_state(state, histogram)
    return threshold_of(state)


def threshold_by_sort(values: np.ndarray, fraction: float) -> float:
    """The oracle: literally DataComp's `-np.sort(-values)[int(N * f)]`; NaN when n >= N."""
    values = np.asarray(values).ravel()
    n = _rank(len(values), fraction)
    return math.nan if n >= len(values) else float(-np.sort(-values)[n])


def keep_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """score >= threshold, elementwise; NaN scores, and every score under a NaN threshold, fail.

    Compared in float64: every float16/32/64 score and threshold is exact there.
    """
    return np.asarray(scores).astype(np.float64, copy=False) >= np.float64(threshold)
