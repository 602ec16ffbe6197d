"""MetaCLIP's per-image curation: which text an image keeps, whether it is kept, its `texts`.

Pure Python and numpy, no Beam import (docs/dedup.md, "Images with several texts").
An image is a url key (`dedup.keys.url_key`); its texts are the records with that key, and
a record without a url key is an image of its own (`image_group_key`). Counting is per
text, unchanged. Curating, per image (ours where MetaCLIP says "at random"):

- the picked text is the matched record with the smallest draw(seed, key + "\\x00text")
  (equal draws, i.e. equal sample keys: the earlier input position);
- the image is kept iff that record's usual keep draw, draw(seed, key), is below its keep
  probability (MetaCLIP keeps the image with the picked text's probability);
- an image none of whose records matched is not kept;
- the kept record carries `texts`: the picked text first, then the image's other texts
  (unmatched ones included) by ascending draw(seed, key + "\\x00text"), then position.

A stage groups records by `image_group_key`, then calls `curate_image` on each group's
members in any order: the answer does not depend on the order they arrive in.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from transforms.core.hashing import key_hashes, uniform_draws
from transforms.dedup.keys import TEXT, purpose_bits


def image_group_key(url_key: str | None, source_file: int, source_row: int) -> str:
    """The grouping key of a record's image: its url key, or (no url key) its own position.

    The two forms cannot collide: a url key never holds a tab, and the own-image form starts with one.
    """
    if url_key is not None:
        return "u" + url_key
    return f"\t{int(source_file)}:{int(source_row)}"


class ImageDecision(NamedTuple):
    """One image's outcome; indices are into the members as given."""

    picked: int  # the picked (matched) member, -1 when none matched
    kept: bool
    texts_order: list[int]  # members in `texts` order: picked first (all members when none matched)


def curate_image(
    sample_keys: Sequence[str], matched, keep_probs, source_files, source_rows, seed: int
) -> ImageDecision:
    """The per-image rule on one image's members (any order, at least one member)."""
    n = len(sample_keys)
    if n == 0:
        raise ValueError("an image has at least one record")
    matched = np.asarray(matched, dtype=bool)
    text_bits = purpose_bits(sample_keys, seed, TEXT)
    order = [int(i) for i in np.lexsort((np.asarray(source_rows), np.asarray(source_files), text_bits))]
    picked = next((i for i in order if matched[i]), -1)
    if picked < 0:
        return ImageDecision(-1, False, order)
    draw = uniform_draws(key_hashes([sample_keys[picked]]), seed)[0]
    kept = bool(draw < float(np.asarray(keep_probs, dtype=np.float64)[picked]))
    return ImageDecision(picked, kept, [picked] + [i for i in order if i != picked])


def image_texts(texts: Sequence[str | None], decision: ImageDecision) -> list[str | None]:
    """The `texts` list column of the image's kept record, in the decision's order."""
    return [texts[i] for i in decision.texts_order]
