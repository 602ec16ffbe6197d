"""MetaCLIP 2 worldwide mode: CJK-aware padding of entries (docs/curation-spec.md, section 4).

Pure Python, no Beam import (docs/worldwide.md). An entry gets a space on a side
only when the character at that end is not a CJK ideograph, Thai, Lao, Burmese,
Khmer or Tibetan character, nor punctuation (`pad_entry_worldwide`). Captions are
spaced exactly as in MetaCLIP 1 (`transforms.core.spacing.space_text`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from transforms.core.spacing import SPACED_WHITESPACE, WRAPPED_PUNCTUATION, space_text

# Code-point ranges (inclusive) of the scripts written without spaces between
# words. These are the ranges the MetaCLIP 2 reference tests, kept as they are
# so that our matches are the reference's: the CJK Unified Ideographs with
# extensions A to F, the compatibility ideographs, the radicals and the
# ideographic description characters; then the Thai, Lao, Myanmar (Burmese),
# Khmer and Tibetan blocks. Kana (U+3040-30FF) and Hangul are NOT in the list:
# Japanese kana and Korean entries are padded like Latin ones. Blocks outside
# these ranges (CJK extensions G and later, the compatibility ideographs
# supplement U+2F800-2FA1F, Myanmar Extended-A/B, Khmer Symbols) are padded too.
NO_PAD_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0x3400, 0x4DBF),  # CJK extension A
    (0x20000, 0x2A6DF),  # CJK extension B
    (0x2A700, 0x2B73F),  # CJK extension C
    (0x2B740, 0x2B81F),  # CJK extension D
    (0x2B820, 0x2CEAF),  # CJK extension E
    (0x2CEB0, 0x2EBEF),  # CJK extension F
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x2E80, 0x2EFF),  # CJK Radicals Supplement
    (0x2F00, 0x2FDF),  # Kangxi Radicals
    (0x2FF0, 0x2FFF),  # Ideographic Description Characters
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar (Burmese)
    (0x1780, 0x17FF),  # Khmer
    (0x0F00, 0x0FFF),  # Tibetan
)

# The full-width marks the spec lists; with ASCII punctuation (string.punctuation)
# they are the "punctuation" that is never padded.
FULL_WIDTH_MARKS = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"
NO_PAD_PUNCTUATION = frozenset(string.punctuation + FULL_WIDTH_MARKS)


def is_no_pad_char(char: str) -> bool:
    """True for a character that gets no space beside it at an entry's end."""
    if char in NO_PAD_PUNCTUATION:
        return True
    code_point = ord(char)
    return any(start <= code_point <= end for start, end in NO_PAD_RANGES)


def pad_entry_worldwide(entry: str) -> str:
    """The form of an entry that must occur in a spaced caption (worldwide mode).

    A space is added before the entry unless its first character is a no-pad
    character, and after it unless its last one is:

    >>> pad_entry_worldwide("dog"), pad_entry_worldwide("東京"), pad_entry_worldwide("C++")
    (' dog ', '東京', ' C++')
    >>> pad_entry_worldwide("タワー"), pad_entry_worldwide("東京タワー")
    (' タワー ', '東京タワー ')

    The empty entry has no end character, so nothing stops its padding: it
    becomes "  ", as in MetaCLIP 1 (the reference indexes entry[0] and crashes
    on it; `beam_pipeline.metadata validate` reports empty entries anyway).
    """
    if not entry:
        return "  "
    head = "" if is_no_pad_char(entry[0]) else " "
    tail = "" if is_no_pad_char(entry[-1]) else " "
    return head + entry + tail


def _padded_form_can_occur(padded: str) -> bool:
    """Whether some spaced caption contains `padded` (exact, not a heuristic).

    A spaced caption never holds a tab, newline or carriage return; each of
    the seven wrapped marks has a space right before and after it; and two
    wrapped marks are at least two characters apart (`" " + text between + " "`).
    Any string meeting these three rules is found in the spaced form of itself
    with the spaces next to its wrapped marks removed.
    """
    if any(c in padded for c in SPACED_WHITESPACE):
        return False
    previous_mark = None
    for i, c in enumerate(padded):
        if c not in WRAPPED_PUNCTUATION:
            continue
        if (i > 0 and padded[i - 1] != " ") or (i + 1 < len(padded) and padded[i + 1] != " "):
            return False
        if previous_mark is not None and i - previous_mark < 3:
            return False
        previous_mark = i
    return True


def can_ever_match_worldwide(entry: str) -> bool:
    """False for entries that no spaced caption can contain in worldwide mode.

    Unlike MetaCLIP 1, an unpadded end may be a wrapped mark: `"a ."` ends in
    "." and becomes " a ." (matches "a."), while "3.5" and "U.S." still never
    match, and neither does anything holding a tab or newline.
    """
    return _padded_form_can_occur(pad_entry_worldwide(entry))


def match_entries_brute_force_worldwide(text: str, entries: Sequence[str]) -> list[int]:
    """The spec, literally: ids of the entries whose worldwide padded form is a substring.

    For tests and benchmarks only (one substring search per entry).
    """
    spaced = space_text(text)
    return [entry_id for entry_id, entry in enumerate(entries) if pad_entry_worldwide(entry) in spaced]
