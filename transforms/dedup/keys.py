"""The exact-dedup keys of a record (docs/dedup.md, "Keys"), and the purpose draws.

Pure Python, no Beam import. `url_key` is MetaCLIP's image id (tabs and spaces dropped)
followed by TFDS C4's `normalize_url` (scheme, `www.`, tracking query, trailing slash);
`text_key` is CLIP's tokenizer view of a caption (lower case, white space collapsed).
A null value, or one empty after the steps, has no key (None): it is never a duplicate.

The keys are defined by the Python functions (`re` and `str` methods): Arrow's Unicode
lower case and white space differ from Python's on some inputs. The column forms the stage
calls (`url_key_array`, `text_key_array`) use Arrow's kernels only where they provably give
the same answer (the url patterns everywhere, captions that are all ASCII) and Python for
the rest; property tests hold them to the Python functions.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.hashing import key_hashes, splitmix64, uniform_draws

_SCHEME = re.compile(r"https?:\/\/(www\.)?")
_TRACKING = re.compile(r"\?(utm_|ref|feed).*")
_TRAILING_SLASHES = re.compile(r"/+$", re.MULTILINE)

# The decisions that get their own draw, draw(seed, key + "\x00" + purpose) (ours).
DEDUP, TEXT, ORDER = "dedup", "text", "order"


def url_key(url: str | None) -> str | None:
    """The url key of one URL (docs/dedup.md); None for a null URL or an empty key."""
    if url is None:
        return None
    u = url.replace("\t", "").replace(" ", "")
    u = _SCHEME.sub("", u)
    u = _TRACKING.sub("", u)
    u = u.rstrip("/")
    return u or None


def text_key(text: str | None) -> str | None:
    """The text key of one caption: lower case, white space runs as one space; None if empty."""
    if text is None:
        return None
    return " ".join(text.lower().split()) or None


def _values(column) -> list:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column.to_pylist()
    return list(column)


def url_keys(column) -> list[str | None]:
    """`url_key` of each value of an Arrow string column (or any iterable of str/None).

    The same answers as `url_key` one by one, ~4x faster: each step runs once over the
    values joined by newlines. Exact because no step's pattern can match a newline (`.`
    stops at one, and `$` in MULTILINE mode is each URL's end); a URL holding a newline
    sends the values through `url_key` one by one.
    """
    urls = _values(column)
    present = [u for u in urls if u is not None]
    joined = "\n".join(present)
    if joined.count("\n") != max(0, len(present) - 1):
        return [url_key(u) for u in urls]
    joined = joined.replace("\t", "").replace(" ", "")
    joined = _TRAILING_SLASHES.sub("", _TRACKING.sub("", _SCHEME.sub("", joined)))
    keys = iter(joined.split("\n"))
    return [None if u is None else (next(keys) or None) for u in urls]


def url_key_array(column) -> pa.Array:
    """`url_key` of each value of an Arrow string column, as an Arrow string array (null: no key).

    The same steps in Arrow's kernels, ~2x faster than `url_keys`: the two patterns hold only
    literals, optional groups and `.`, which RE2 reads as `re` does (leftmost-first, greedy,
    `.` stops at a newline, successive non-overlapping replacements), and rstrip("/") is
    utf8_rtrim. Property-tested against `url_key` (tests/unit/test_dedup_keys.py).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    u = pc.replace_substring(pc.replace_substring(array.cast(pa.string()), "\t", ""), " ", "")
    u = pc.replace_substring_regex(u, _SCHEME.pattern, "")
    u = pc.replace_substring_regex(u, _TRACKING.pattern, "")
    u = pc.utf8_rtrim(u, "/")
    return pc.if_else(pc.equal(u, ""), pa.scalar(None, pa.string()), u)


def text_keys(column) -> list[str | None]:
    """`text_key` of each value of an Arrow string column (or any iterable of str/None)."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return text_key_array(column).to_pylist()
    return [text_key(value) for value in column]


# Python's white space (str.isspace) among ASCII characters: \t \n \v \f \r, the four
# separators \x1c-\x1f and the space. Written out for RE2, whose \s lacks \v and \x1c-\x1f.
# Runs of two or more, or a single one other than the space, become one space: the same
# as collapsing every run, ~5x faster in RE2 (most captions' spaces are single ones, left alone).
_ASCII_SPACE = r"[\x09-\x0d\x1c-\x1f ]"
_ASCII_SPACE_RUNS = _ASCII_SPACE + r"{2,}|[\x09-\x0d\x1c-\x1f]"


def text_key_array(column) -> pa.Array:
    """`text_key` of each value of an Arrow string column, as an Arrow string array (null: no key).

    Captions that are all ASCII go through Arrow's kernels, 2-3x faster, which provably give
    `text_key`'s answer there: on ASCII, `str.lower` maps A-Z only (ascii_lower), and
    `str.split()` splits on exactly the characters of _ASCII_SPACE. Every other caption
    goes through `text_key` itself (Unicode lower case and white space are Python's).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = array.cast(pa.string())
    collapsed = pc.replace_substring_regex(pc.ascii_lower(array), _ASCII_SPACE_RUNS, " ")
    trimmed = pc.utf8_trim(collapsed, " ")
    keys = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    unicode = pc.fill_null(pc.invert(pc.string_is_ascii(array)), False)
    if not pc.any(unicode).as_py():
        return keys
    replacements = [text_key(value) for value in array.filter(unicode).to_pylist()]
    return pc.replace_with_mask(keys, unicode, pa.array(replacements, pa.string()))


def purpose_hashes(sample_keys: Iterable[str], purpose: str | None) -> np.ndarray:
    """BLAKE2b-64 of `key + "\\x00" + purpose` (of the key alone for purpose None), uint64."""
    suffix = "" if purpose is None else "\x00" + purpose
    return key_hashes(key + suffix for key in sample_keys)


def purpose_draws(sample_keys: Iterable[str], seed: int, purpose: str | None) -> np.ndarray:
    """draw(seed, key + "\\x00" + purpose) per key: hashing.uniform_draws, float64 in [0, 1)."""
    return uniform_draws(purpose_hashes(sample_keys, purpose), seed)


def purpose_bits(sample_keys: Iterable[str], seed: int, purpose: str | None) -> np.ndarray:
    """The 64 bits whose top 53 make `purpose_draws` (selection's tie keys), uint64.

    Ordering by these bits orders by the draw; equal draws with different bits cannot
    happen for different keys short of a 64-bit collision. The large-cluster split takes
    them modulo the number of parts, as selection does (docs/dedup.md).
    """
    seed_mix = splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    return splitmix64(purpose_hashes(sample_keys, purpose) ^ seed_mix)
