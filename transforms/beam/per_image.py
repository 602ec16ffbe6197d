"""CurateImages: MetaCLIP's per-image curation over balanced batches (transforms.images.per_image).

Every record of an image must meet in one place: records are split by a hash of their
image key into `buckets` parts (as the shard writers split by key hash), the parts of a
bucket are gathered by one GroupBatchesByShard (through spill files on local engines),
and a bucket's records are curated together, vectorised (`curate_images`). Batches, not
records, cross the shuffle: batches x buckets elements, each bucket ~1/buckets of the pool.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.spill import GroupBatchesByShard, _in_global_window
from transforms.beam.stats import SumFigures
from transforms.core.batches import BatchGatherer, gather_rows, shard_runs, take_runs
from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, SOURCE_FILE, SOURCE_ROW, TEXT, TEXTS
from transforms.dedup.keys import url_keys
from transforms.images.per_image import curate_images, image_figures, image_group_key, image_ids

__all__ = ["CurateImages", "CuratedImages"]

_IMAGE = "__image"  # the record's image_group_key, while it travels to its bucket
_FIGURES = "figures"


def _bucket_hashes(keys: list) -> np.ndarray:
    """CRC-32 of each key: only which bucket an image goes to (no output depends on it), so a
    checksum's spread is enough, at a fifth of blake2b's cost."""
    crc32 = zlib.crc32
    return np.fromiter((crc32(key.encode("utf-8", "surrogatepass")) for key in keys), np.uint64, len(keys))


def image_keys_and_hashes(batch: pa.RecordBatch, url_column: str) -> tuple[pa.Array, np.ndarray]:
    """Each record's `image_group_key` and its hash. The url key is computed once per distinct
    URL of the batch (Arrow's dictionary), not once per record."""
    encoded = pc.dictionary_encode(batch.column(url_column).cast(pa.string()))
    groups = [None if k is None else "u" + k for k in url_keys(encoded.dictionary)]
    group_hashes = _bucket_hashes([g or "" for g in groups])
    indices = encoded.indices
    images = pa.array(groups, pa.string()).take(indices)
    hashes = np.zeros(batch.num_rows, dtype=np.uint64)
    has_key = images.is_valid().to_numpy(zero_copy_only=False)
    hashes[has_key] = group_hashes[indices.filter(images.is_valid()).to_numpy()]
    if not has_key.all():  # records without a url key: an image of their own
        own = np.flatnonzero(~has_key)
        files = batch.column(SOURCE_FILE).to_numpy()[own]
        rows = batch.column(SOURCE_ROW).to_numpy()[own]
        own_keys = [image_group_key(None, f, r) for f, r in zip(files, rows, strict=True)]
        hashes[own] = _bucket_hashes(own_keys)
        values = images.to_pylist()
        for i, key in zip(own, own_keys, strict=True):
            values[i] = key
        images = pa.array(values, pa.string())
    return images, hashes


class _SplitByImageFn(beam.DoFn):
    """Batches -> (bucket, the rows whose image key hashes to it), with the image key; the
    batches of a bundle gathered (transforms.core.batches) and cut together: a row's bucket
    is its own."""

    def __init__(self, buckets: int, url_column: str):
        self._buckets = buckets
        self._url = url_column

    def start_bundle(self):
        self._gatherer = BatchGatherer(gather_rows(self._buckets))

    def process(self, batch: pa.RecordBatch):
        for gathered in self._gatherer.add(batch):
            yield from self._cut(gathered)

    def finish_bundle(self):
        for gathered in self._gatherer.drain():
            for item in self._cut(gathered):
                yield _in_global_window(item)

    def _cut(self, batch: pa.RecordBatch):
        images, hashes = image_keys_and_hashes(batch, self._url)
        buckets = (hashes % np.uint64(self._buckets)).astype(np.int64)
        yield from take_runs(batch.append_column(_IMAGE, images), *shard_runs(buckets))


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
            image_ids(table.column(_IMAGE)),
            table.column(KEY).to_pylist(),
            np.diff(offsets) > 0,
            table.column(KEEP_PROB).to_numpy(),
            table.column(SOURCE_FILE).to_numpy(),
            table.column(SOURCE_ROW).to_numpy(),
            self._seed,
        )
        # Only ever clears a flag: the pick's own flag is the same draw against the same probability.
        kept = decision.kept & table.column(KEPT).to_numpy(zero_copy_only=False)
        texts = texts_column(table, decision, kept)
        dropped = [_IMAGE, KEPT] + ([TEXTS] if TEXTS in table.column_names else [])
        table = table.drop_columns(dropped).append_column(KEPT, pa.array(kept)).append_column(TEXTS, texts)
        yield beam.pvalue.TaggedOutput(_FIGURES, image_figures(decision, int(kept.sum())))
        yield from table.to_batches(max_chunksize=self._batch_size)


def texts_column(table: pa.Table, decision, kept: np.ndarray) -> pa.Array:
    """list<string>: a kept record's image texts (its own first); null on every other row.

    With a per-record `texts` column (extra texts), each member gives all of its texts.
    Built with Arrow takes: the members' runs reordered to the rows' order, then one take."""
    picks, bounds = decision.picks, decision.texts_offsets
    sizes = np.diff(bounds)
    by_row = np.argsort(picks, kind="stable")
    run_rank = np.empty(len(picks), dtype=np.int64)
    run_rank[by_row] = np.arange(len(picks))
    members = decision.texts_members[np.argsort(np.repeat(run_rank, sizes), kind="stable")]
    if TEXTS in table.column_names:
        lists = table.column(TEXTS).take(pa.array(members, pa.int64())).combine_chunks()
        values = pc.list_flatten(lists)
        per_member = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        run_bounds = np.r_[0, np.cumsum(sizes[by_row])]
        run_lengths = np.add.reduceat(per_member, run_bounds[:-1]) if len(members) else np.zeros(0, np.int64)
    else:
        values = table.column(TEXT).take(pa.array(members, pa.int64())).combine_chunks()
        run_lengths = sizes[by_row]
    lengths = np.zeros(table.num_rows, dtype=np.int64)
    lengths[picks[by_row]] = run_lengths
    row_offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    valid = np.zeros(table.num_rows, dtype=bool)
    valid[picks] = True
    return pa.ListArray.from_arrays(row_offsets, values.cast(pa.string()), mask=pa.array(~(valid & kept)))


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
