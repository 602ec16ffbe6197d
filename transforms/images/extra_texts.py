"""Extra texts of a sample (rewrites, synthetic captions) beside its original caption.

Pure Python, no Beam import (docs/dedup.md, section 3). Matching and balancing read the
original caption only; the hand-offs carry every text. Extra texts come from columns (or
`.json` fields) of the input, or from JSON-lines files `{"key": ..., "texts": [...]}` joined
to the pool by sample key.
"""

from __future__ import annotations

import json
from typing import Sequence


def parse_extra_texts_line(line: str | bytes) -> tuple[str, list[str]]:
    """(key, texts) of one JSON line; ValueError with the reason for a line that is not one."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    key, texts = obj.get("key"), obj.get("texts")
    if not isinstance(key, str) or not key:
        raise ValueError("no string `key`")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("`texts` is not a list of strings")
    return key, texts


def texts_with_extras(original: str | None, extras: Sequence[str | None]) -> list[str | None]:
    """The sample's texts: the original first, then the extras in the order given.

    Ours: a null or empty extra (a missing column value) is left out, so caption_1.. hold
    texts only; the original stays even when null, so caption_0 is always the original.
    """
    return [original] + [t for t in extras if t]


def caption_fields(texts: Sequence[str | None]) -> dict[str, str | None]:
    """The webdataset `.json` fields of a sample's texts: caption_0 (the original), caption_1, ..."""
    return {f"caption_{i}": text for i, text in enumerate(texts)}
