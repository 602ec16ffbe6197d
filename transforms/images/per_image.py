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

from collections import Counter
from typing import NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


class ImagesDecision(NamedTuple):
    """The per-image rule over many records at once; indices are into the records as given."""

    kept: np.ndarray  # bool per record: the record is its image's pick and the image is kept
    picks: np.ndarray  # the kept records (one per kept image)
    texts_members: np.ndarray  # the kept images' members, each image's in `texts` order (its pick first)
    texts_offsets: np.ndarray  # picks[i]'s members are texts_members[offsets[i]:offsets[i + 1]]
    sizes: np.ndarray  # records per image, one entry per image
    images_matched: int  # images with at least one matched record

    @property
    def texts_orders(self) -> dict:
        """kept record -> its image's members in `texts` order (for tests and small pools)."""
        bounds = self.texts_offsets
        members = self.texts_members.tolist()
        return {int(p): members[bounds[i] : bounds[i + 1]] for i, p in enumerate(self.picks)}


def image_ids(image_keys) -> np.ndarray:
    """An integer per record, equal for records of one image (Arrow's hash dictionary: fast)."""
    array = image_keys if isinstance(image_keys, (pa.Array, pa.ChunkedArray)) else pa.array(image_keys, pa.string())
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def curate_images(image_keys, sample_keys: Sequence[str], matched, keep_probs, source_files,
                  source_rows, seed: int) -> ImagesDecision:  # fmt: skip
    """`curate_image` on every image of these records at once (vectorised; same answers).

    `image_keys`: each record's `image_group_key` (or any integer ids equal exactly for
    records of one image). Every record of an image must be among them (a stage groups by
    `image_group_key` first). The order of the records does not change the answers.
    """
    n = len(sample_keys)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return ImagesDecision(np.zeros(0, dtype=bool), empty, empty, np.zeros(1, dtype=np.int64), empty, 0)
    matched = np.asarray(matched, dtype=bool)
    ids = np.asarray(image_keys)
    images = ids.astype(np.int64) if ids.dtype.kind in "iu" else image_ids(image_keys)
    bits = purpose_bits(sample_keys, seed, TEXT)
    # Each image's members together, each image in `texts` order (before the pick moves first).
    order = np.lexsort((np.asarray(source_rows), np.asarray(source_files), bits, images))
    grouped = images[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ends = np.r_[starts[1:], n]
    sizes = ends - starts
    # The pick: the first matched member in that order (n: none matched).
    first_matched = np.minimum.reduceat(np.where(matched[order], np.arange(n), n), starts)
    has_match = first_matched < n
    picked = order[first_matched[has_match]]
    draws = uniform_draws(key_hashes([sample_keys[i] for i in picked]), seed)
    image_kept = draws < np.asarray(keep_probs, dtype=np.float64)[picked]
    kept = np.zeros(n, dtype=bool)
    picks = picked[image_kept]
    kept[picks] = True
    # The kept images' members in sorted positions, the pick moved first (a stable sort per image).
    group_kept = np.zeros(len(starts), dtype=bool)
    group_kept[np.flatnonzero(has_match)[image_kept]] = True
    in_kept = np.repeat(group_kept, sizes)
    positions = np.flatnonzero(in_kept)
    group_of = np.repeat(np.arange(len(starts)), sizes)[positions]
    not_pick = ~kept[order[positions]]
    members = order[positions[np.lexsort((positions, not_pick, group_of))]]
    offsets = np.r_[0, np.cumsum(sizes[group_kept])].astype(np.int64)
    return ImagesDecision(kept, picks, members, offsets, sizes, int(has_match.sum()))


def image_figures(decision: ImagesDecision, images_kept: int) -> Counter:
    """The figures of curated images, summed over buckets: images, matched, kept, records per image."""
    figures = Counter(images=len(decision.sizes), images_matched=decision.images_matched, images_kept=images_kept)
    for size, images in zip(*np.unique(decision.sizes, return_counts=True), strict=True):
        figures[f"captions_per_image.{int(size)}"] += int(images)
    return figures


def captions_per_image(figures: dict) -> dict[str, int]:
    """{records per image: images}, ascending (the summed `image_figures`)."""
    sizes = {int(k.split(".", 1)[1]): v for k, v in figures.items() if k.startswith("captions_per_image.")}
    return {str(size): sizes[size] for size in sorted(sizes)}
