"""DataComp's per-row caption and image-size rules (docs/datacomp.md, "The rules").

Pure functions over whole batches (no Beam import): the `basic` filter's word,
character and size tests and the caption half of the `image` filter. They are
written from the rules in the spec, which were read from DataComp's
`baselines/apply_filter.py`; the language test itself is `language.py`.

A null caption (None) counts as the empty string: 0 words, 0 characters, so it
never passes **(ours: DataComp's pools have no null captions)**.
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

import numpy as np

# fastText's `Dictionary::readWord` splits on exactly these seven characters (not
# on other Unicode white space such as U+00A0), and turns each "\n" into an
# end-of-sentence token: that is what `fasttext.tokenize` returns and DataComp counts.
_FASTTEXT_TOKEN = re.compile("[^ \n\r\t\v\f\x00]+")

MIN_SIDE = 200
MAX_ASPECT = 3.0


def _texts(texts: Sequence[str | None]) -> list[str]:
    return ["" if text is None else text for text in texts]


def split_word_counts(texts: Sequence[str | None]) -> np.ndarray:
    """`len(text.split())` per caption: Python's split, on any Unicode white space."""
    texts = _texts(texts)
    return np.fromiter((len(text.split()) for text in texts), np.int64, len(texts))


def fasttext_token_counts(texts: Sequence[str | None]) -> np.ndarray:
    """`len(fasttext.tokenize(text))` per caption, without fastText.

    The runs of characters other than space, \\n, \\r, \\t, \\v, \\f and \\0, plus one
    end-of-sentence token per \\n (fasttext-predict has no `tokenize`).
    """
    texts = _texts(texts)
    count = _FASTTEXT_TOKEN.findall
    return np.fromiter((len(count(text)) + text.count("\n") for text in texts), np.int64, len(texts))


def char_counts(texts: Sequence[str | None]) -> np.ndarray:
    """`len(text)` per caption: code points, not bytes."""
    texts = _texts(texts)
    return np.fromiter(map(len, texts), np.int64, len(texts))


def _is_null(value) -> bool:
    if value is None:
        return True
    pandas = sys.modules.get("pandas")  # pd.NA from a nullable column; pandas is not imported here
    if pandas is not None and value is pandas.NA:
        return True
    return isinstance(value, (float, np.floating)) and value != value


def _sides(values) -> tuple[np.ndarray, np.ndarray]:
    """(numbers, valid): an int64 or float64 array with nulls set to 0, and where it is not null."""
    if isinstance(values, np.ma.MaskedArray):
        valid = ~np.ma.getmaskarray(values)
        values = values.filled(0)
    else:
        valid = None
    array = np.asarray(values)
    if array.dtype == object:
        nulls = np.fromiter((_is_null(value) for value in array.ravel()), bool, array.size).reshape(array.shape)
        filled = np.where(nulls, 0, array)
        integral = all(isinstance(value, (int, np.integer)) for value in filled.ravel())
        try:
            array = filled.astype(np.int64 if integral else np.float64)
        except OverflowError:  # rather than rounding a side silently
            raise ValueError("an image side does not fit in int64") from None
        valid = ~nulls if valid is None else valid & ~nulls
    elif array.dtype.kind == "f":
        nans = np.isnan(array)
        array = np.where(nans, 0.0, array)
        valid = ~nans if valid is None else valid & ~nans
    elif array.dtype.kind not in "iub":
        raise TypeError(f"image sides must be numbers, got an array of {array.dtype}")
    if valid is None:
        valid = np.ones(array.shape, bool)
    return array, valid


def size_flags(widths, heights) -> np.ndarray:
    """`min(w, h) >= 200 and max(w, h) / min(w, h) <= 3.0`, per row; null or zero sides fail.

    Sides are numpy arrays (integer, float with NaN, or masked) or lists of
    int-or-None. The minimum is compared exactly (in integers for integer input);
    the ratio is float64 division, as DataComp's pandas code does, so for sides
    beyond 2**53 it can round to 3.0 where the exact ratio is a little above.
    """
    width, width_ok = _sides(widths)
    height, height_ok = _sides(heights)
    if width.shape != height.shape or width.ndim != 1:
        raise ValueError(f"widths and heights must be 1-d and of one length, got {width.shape} and {height.shape}")
    low = np.minimum(width, height)
    high = np.maximum(width, height)
    positive = low > 0
    ratio = np.divide(high.astype(np.float64), low.astype(np.float64), out=np.full(low.shape, np.inf), where=positive)
    return width_ok & height_ok & positive & (low >= MIN_SIDE) & (ratio <= MAX_ASPECT)


def _english(languages: Sequence[str], n: int) -> np.ndarray:
    if len(languages) != n:
        raise ValueError(f"{len(languages)} languages for {n} captions")
    return np.fromiter((language == "en" for language in languages), bool, n)


def basic_flags(texts: Sequence[str | None], languages: Sequence[str], widths, heights) -> np.ndarray:
    """DataComp's `basic` filter: en AND split words > 2 AND characters > 5 AND size_flags."""
    texts = _texts(texts)
    sizes = size_flags(widths, heights)
    if len(sizes) != len(texts):
        raise ValueError(f"{len(sizes)} image sizes for {len(texts)} captions")
    words = split_word_counts(texts)
    chars = char_counts(texts)
    return _english(languages, len(texts)) & (words > 2) & (chars > 5) & sizes


def image_caption_flags(texts: Sequence[str | None], languages: Sequence[str]) -> np.ndarray:
    """The caption half of DataComp's `image` filter: en AND fastText tokens > 1 AND characters > 5."""
    texts = _texts(texts)
    tokens = fasttext_token_counts(texts)
    chars = char_counts(texts)
    return _english(languages, len(texts)) & (tokens > 1) & (chars > 5)
