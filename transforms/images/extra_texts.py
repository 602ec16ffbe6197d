"""Extra texts of a sample (rewrites, synthetic captions) beside its original caption.

Pure Python, no Beam import (docs/dedup.md, section 3). Matching and balancing read the
original caption only; the hand-offs carry every text. Extra texts come from columns (or
`.json` fields) of the input, or from JSON-lines files `{"key": ..., "texts": [...]}` joined
to the pool by sample key.
"""

from __future__ import annotations

import json
from typing import NamedTuple, Sequence


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


# Reasons an extra-texts line is written to rejected/ (with `records` 0: it is no pool record).
EXTRA_TEXTS_BAD_LINE = "extra_texts_bad_line"
EXTRA_TEXTS_KEY_NOT_IN_POOL = "extra_texts_key_not_in_pool"
EXTRA_TEXTS_KEY_LISTED_TWICE = "extra_texts_key_listed_twice"


def field_texts(value) -> list[str]:
    """The texts of one extra column or `.json` field value: a string, a list of strings, or none.

    Ours: null, empty and non-string items are left out (a missing value is no text)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def record_texts(original: str, field_values, joined: Sequence[str] = ()) -> list[str]:
    """A record's `texts`: the original, its extra fields' texts in the order given, then the
    texts joined from `--extra_texts` files."""
    return texts_with_extras(original, [t for value in field_values for t in field_texts(value)] + list(joined))


class JoinedTexts(NamedTuple):
    """What `join_extra_texts` found in one bucket (keys hash to buckets; all of a key's lines meet)."""

    texts: dict  # pool key -> its joined texts (the first listing of the key)
    not_in_pool: list  # (file, line, key) of listings whose key no pool record has
    listed_twice: list  # (file, line, key) of listings after a key's first


def join_extra_texts(pool_keys, listings) -> JoinedTexts:
    """The keyed join of extra texts with pool keys: `listings` are (file, line, key, texts).

    A key listed more than once keeps its first listing (by file, then line): the later ones
    are reported, never merged into it; a key no record has is reported, never dropped silently.
    """
    present = set(pool_keys)
    texts: dict = {}
    seen: set = set()
    not_in_pool, listed_twice = [], []
    for file, line, key, values in sorted(listings, key=lambda item: (item[0], item[1])):
        if key in seen:
            listed_twice.append((file, line, key))
        elif key not in present:
            not_in_pool.append((file, line, key))
        else:
            texts[key] = list(values)
        seen.add(key)
    return JoinedTexts(texts, not_in_pool, listed_twice)


def json_with_captions(data: bytes | None, texts: Sequence[str | None]) -> bytes:
    """A webdataset sample's `.json` with caption_0 (the original), caption_1, ... added (replacing
    fields of those names); a new object when the sample had none."""
    document = json.loads(data) if data else {}
    if not isinstance(document, dict):
        document = {"json": document}
    document = {k: v for k, v in document.items() if not k.startswith("caption_")} | caption_fields(texts)
    return json.dumps(document, ensure_ascii=False).encode("utf-8")
