"""CurateImages: MetaCLIP's per-image curation over balanced batches (transforms.images.per_image).

Every record of an image must meet in one place: records are split by a hash of their
image key into `buckets` parts (as the shard writers split by key hash), the parts of a
bucket are gathered by one GroupBatchesByShard (through spill files on local engines),
and a bucket's records are curated together, vectorised (`curate_images`). Batches, not
records, cross the shuffle: batches x buckets elements, each bucket ~1/buckets of the pool.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.spill import GroupBatchesByShard
from transforms.beam.stats import SumFigures
from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, SOURCE_FILE, SOURCE_ROW, TEXT, TEXTS
from transforms.core.hashing import key_hashes
from transforms.dedup.keys import url_keys
from transforms.images.per_image import curate_images, image_figures, image_group_key

__all__ = ["CurateImages", "CuratedImages"]

_IMAGE = "__image"  # the record's image_group_key, while it travels to its bucket
_FIGURES = "figures"


class _SplitByImageFn(beam.DoFn):
    """Batch -> (bucket, the rows of the batch whose image key hashes to it), with the image key."""

    def __init__(self, buckets: int, url_column: str):
        self._buckets = buckets
        self._url = url_column

    def process(self, batch: pa.RecordBatch):
        files = batch.column(SOURCE_FILE).to_numpy()
        rows = batch.column(SOURCE_ROW).to_numpy()
        images = [
            image_group_key(u, f, r) for u, f, r in zip(url_keys(batch.column(self._url)), files, rows, strict=True)
        ]
        buckets = (key_hashes(images) % np.uint64(self._buckets)).astype(np.int64)
        batch = batch.append_column(_IMAGE, pa.array(images, pa.string()))
        order = np.argsort(buckets, kind="stable")
        sorted_buckets = buckets[order]
        bounds = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            yield int(sorted_buckets[start]), batch.take(pa.array(order[start:end]))


class _CurateBucketFn(beam.DoFn):
    """(bucket, its batches) -> the same records, the keep flag kept only on each kept image's pick,
    which carries `texts`; and the bucket's image figures (tagged)."""

    def __init__(self, seed: int, batch_size: int):
        self._seed = seed
        self._batch_size = batch_size

    def process(self, bucket_and_batches):
        _, batches = bucket_and_batches
        if not batches:
            return
        table = pa.Table.from_batches(batches).combine_chunks()
        offsets = table.column(ENTRY_IDS).chunk(0).offsets.to_numpy()
        decision = curate_images(
            table.column(_IMAGE).to_pylist(),
            table.column(KEY).to_pylist(),
            np.diff(offsets) > 0,
            table.column(KEEP_PROB).to_numpy(),
            table.column(SOURCE_FILE).to_numpy(),
            table.column(SOURCE_ROW).to_numpy(),
            self._seed,
        )
        # Only ever clears a flag: the pick's own flag is the same draw against the same probability.
        kept = decision.kept & table.column(KEPT).to_numpy(zero_copy_only=False)
        texts = _texts_column(table, decision.texts_orders, kept)
        dropped = [_IMAGE, KEPT] + ([TEXTS] if TEXTS in table.column_names else [])
        table = table.drop_columns(dropped).append_column(KEPT, pa.array(kept)).append_column(TEXTS, texts)
        yield beam.pvalue.TaggedOutput(_FIGURES, image_figures(decision, int(kept.sum())))
        yield from table.to_batches(max_chunksize=self._batch_size)


def _texts_column(table: pa.Table, texts_orders: dict, kept: np.ndarray) -> pa.Array:
    """list<string>: a kept record's image texts (its own first); null on every other row.

    With a per-record `texts` column (extra texts), each member gives all of its texts."""
    own = table.column(TEXTS).to_pylist() if TEXTS in table.column_names else None
    captions = table.column(TEXT).to_pylist()
    values: list = [None] * table.num_rows
    for pick, members in texts_orders.items():
        if kept[pick]:
            values[pick] = [t for i in members for t in (own[i] if own is not None and own[i] else [captions[i]])]
    return pa.array(values, pa.list_(pa.string()))


class CuratedImages(NamedTuple):
    batches: PCollection  # [pa.RecordBatch]: every record, keep flag per image, `texts` on the kept
    figures: PCollection  # singleton Counter: images, images_matched, images_kept, captions_per_image.<n>


class CurateImages(beam.PTransform):
    """MetaCLIP's per-image rule on balanced batches.

    In: batches with key, text, the url column, entry_ids, keep_prob and the keep flag
    (MetaClipBalance's output). Out: `CuratedImages`: the same records regrouped into
    batches of at most `batch_size` rows, the keep flag set only on the pick of each kept
    image, a `texts` list column (null on the rest), and the image figures summed.
    """

    def __init__(self, seed: int, buckets: int, url_column: str, batch_size: int, spill_dir: Optional[str] = None):
        super().__init__()
        self._seed = seed
        self._buckets = buckets
        self._url = url_column
        self._batch_size = batch_size
        self._spill_dir = spill_dir

    def expand(self, batches: PCollection[pa.RecordBatch]) -> CuratedImages:
        directory = self._spill_dir and FileSystems.join(self._spill_dir, "images")
        curated = (
            batches
            | "SplitByImage" >> beam.ParDo(_SplitByImageFn(self._buckets, self._url))
            | "GroupImages" >> GroupBatchesByShard(directory, ["images"] * self._buckets)
            | "CurateImages"
            >> beam.ParDo(_CurateBucketFn(self._seed, self._batch_size)).with_outputs(_FIGURES, main="batches")
        )
        figures = curated[_FIGURES] | "SumImageFigures" >> beam.CombineGlobally(SumFigures())
        return CuratedImages(curated["batches"], figures)
