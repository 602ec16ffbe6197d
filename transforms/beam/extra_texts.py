"""AttachExtraTexts: every record's `texts` (its original caption first, then its extra texts).

Extra texts come from columns (or webdataset `.json` fields) of the input, and from
JSON-lines files `{"key": ..., "texts": [...]}` joined to the pool by sample key: a keyed
join, never a side input of the whole file. Pool batches are split by a hash of their
keys into buckets, the files' listings likewise (a list per bucket and file), and one
GroupByKey brings a bucket's records and listings together (transforms.images.extra_texts
.join_extra_texts). Keys of no record and keys listed twice are counted and written to
rejected/ (with `records` 0: they are no pool records), as are lines that are not a listing.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.stats import SumFigures
from transforms.core.columns import KEY, TEXT, TEXTS
from transforms.core.hashing import key_hashes
from transforms.formats.rejections import Rejection
from transforms.images.extra_texts import (
    EXTRA_TEXTS_BAD_LINE,
    EXTRA_TEXTS_KEY_LISTED_TWICE,
    EXTRA_TEXTS_KEY_NOT_IN_POOL,
    join_extra_texts,
    parse_extra_texts_line,
    record_texts,
)

__all__ = ["AttachExtraTexts", "ExtraTextsAttached"]

_POOL, _LISTINGS = "pool", "listings"
_FIGURES, _REJECTED = "figures", "rejected"


def _with_texts(batch: pa.RecordBatch, fields: Sequence[str], joined: Optional[dict] = None) -> pa.RecordBatch:
    """The batch with its `texts` column (replacing one it had)."""
    columns = [batch.column(name).to_pylist() for name in fields]
    keys = batch.column(KEY).to_pylist() if joined is not None else None
    texts = [
        record_texts(text, [column[i] for column in columns], joined.get(keys[i], ()) if joined is not None else ())
        for i, text in enumerate(batch.column(TEXT).to_pylist())
    ]
    if TEXTS in batch.schema.names:
        batch = batch.drop_columns([TEXTS])
    return batch.append_column(TEXTS, pa.array(texts, pa.list_(pa.string())))


def _field_figures(batch: pa.RecordBatch) -> Counter:
    lengths = batch.column(TEXTS).value_lengths().to_numpy(zero_copy_only=False)
    return Counter(records_with_extra_texts=int((lengths > 1).sum()), extra_texts=int((lengths - 1).sum()))


class _FieldTextsFn(beam.DoFn):
    def __init__(self, fields: Sequence[str]):
        self._fields = list(fields)

    def process(self, batch: pa.RecordBatch):
        batch = _with_texts(batch, self._fields)
        yield beam.pvalue.TaggedOutput(_FIGURES, _field_figures(batch))
        yield batch


def _bucket_of(keys: Sequence[str], buckets: int) -> np.ndarray:
    return (key_hashes(keys) % np.uint64(buckets)).astype(np.int64)


class _SplitPoolFn(beam.DoFn):
    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, batch: pa.RecordBatch):
        buckets = _bucket_of(batch.column(KEY).to_pylist(), self._buckets)
        for bucket in np.unique(buckets):
            yield int(bucket), (_POOL, batch.filter(pa.array(buckets == bucket)))


class _ReadListingsFn(beam.DoFn):
    """(file index, path) -> (bucket, (listings, [(file, line, key, texts)])) per bucket; bad lines rejected."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, index_and_path):
        index, path = index_and_path
        by_bucket: dict = {}
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            for line_number, line in enumerate(handle):
                if not line.strip():
                    continue
                try:
                    key, texts = parse_extra_texts_line(line)
                except ValueError as error:
                    raw = {"line": line.decode("utf-8", "replace").rstrip("\n"), "problem": str(error)}
                    yield beam.pvalue.TaggedOutput(
                        _REJECTED, Rejection(path, line_number, EXTRA_TEXTS_BAD_LINE, raw, 0)
                    )
                    continue
                bucket = int(_bucket_of([key], self._buckets)[0])
                by_bucket.setdefault(bucket, []).append((index, line_number, key, texts))
        for bucket in sorted(by_bucket):
            yield bucket, (_LISTINGS, by_bucket[bucket])
        yield beam.pvalue.TaggedOutput(_FIGURES, Counter(extra_texts_lines=sum(map(len, by_bucket.values()))))


class _JoinBucketFn(beam.DoFn):
    """(bucket, [pool batches and listings]) -> the pool batches with `texts`; figures and rejections."""

    def __init__(self, fields: Sequence[str], paths: Sequence[str]):
        self._fields = list(fields)
        self._paths = list(paths)

    def process(self, bucket_and_parts):
        _, parts = bucket_and_parts
        batches = [part for kind, part in parts if kind == _POOL]
        listings = [listing for kind, part in parts if kind == _LISTINGS for listing in part]
        keys = [key for batch in batches for key in batch.column(KEY).to_pylist()]
        joined = join_extra_texts(keys, listings)
        figures = Counter(
            extra_texts_keys_not_in_pool=len(joined.not_in_pool), extra_texts_keys_listed_twice=len(joined.listed_twice)
        )
        for reason, found in ((EXTRA_TEXTS_KEY_NOT_IN_POOL, joined.not_in_pool),
                              (EXTRA_TEXTS_KEY_LISTED_TWICE, joined.listed_twice)):  # fmt: skip
            for file, line, key in found:
                yield beam.pvalue.TaggedOutput(_REJECTED, Rejection(self._paths[file], line, reason, {"key": key}, 0))
        for batch in batches:
            batch = _with_texts(batch, self._fields, joined.texts)
            in_files = np.array([key in joined.texts for key in batch.column(KEY).to_pylist()], dtype=bool)
            figures.update(_field_figures(batch))
            figures["records_with_joined_texts"] += int(in_files.sum())
            yield batch
        yield beam.pvalue.TaggedOutput(_FIGURES, figures)


class ExtraTextsAttached(NamedTuple):
    batches: PCollection  # [pa.RecordBatch]: + `texts`
    figures: PCollection  # singleton Counter
    rejected: Optional[PCollection]  # [Rejection] of the files' lines (None: no files)


class AttachExtraTexts(beam.PTransform):
    """Every record's `texts`: its caption, then its extra fields' texts, then its joined texts.

    In: batches with key and text (and the `fields` columns). Out: `ExtraTextsAttached`.
    `paths`: the `--extra_texts` files (none: no join, no shuffle); `buckets`: how many
    parts the keyed join splits the pool and the listings into.
    """

    def __init__(self, fields: Sequence[str], paths: Sequence[str], buckets: int):
        super().__init__()
        self._fields = tuple(fields)
        self._paths = tuple(paths)
        self._buckets = buckets

    def expand(self, batches: PCollection[pa.RecordBatch]) -> ExtraTextsAttached:
        if not self._paths:
            out = batches | "FieldTexts" >> beam.ParDo(_FieldTextsFn(self._fields)).with_outputs(_FIGURES, main="b")
            figures = out[_FIGURES] | "SumTextFigures" >> beam.CombineGlobally(SumFigures())
            return ExtraTextsAttached(out["b"], figures, None)
        pool = batches | "SplitPoolByKey" >> beam.ParDo(_SplitPoolFn(self._buckets))
        read = (
            batches.pipeline
            | "ExtraTextsFiles" >> beam.Create(list(enumerate(self._paths)))
            | "SpreadExtraTextsFiles" >> beam.Reshuffle()
            | "ReadExtraTexts" >> beam.ParDo(_ReadListingsFn(self._buckets)).with_outputs(_FIGURES, _REJECTED, main="l")
        )
        joined = (
            (pool, read["l"])
            | "PoolAndListings" >> beam.Flatten()
            | "GroupByKeyBucket" >> beam.GroupByKey()
            | "JoinExtraTexts"
            >> beam.ParDo(_JoinBucketFn(self._fields, self._paths)).with_outputs(_FIGURES, _REJECTED, main="b")
        )
        figures = (
            (read[_FIGURES], joined[_FIGURES])
            | "AllTextFigures" >> beam.Flatten()
            | "SumTextFigures" >> beam.CombineGlobally(SumFigures())
        )
        rejected = (read[_REJECTED], joined[_REJECTED]) | "AllTextRejections" >> beam.Flatten()
        return ExtraTextsAttached(joined["b"], figures, rejected)
