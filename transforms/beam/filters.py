"""DataCompFilters: the filter stage, between ReadCaptions and balancing.

In: record batches (with the score, size and embedding columns the filters read). Out:
`Filtered`: the batches of the records every filter keeps, the filtered records (key and
the first filter each fails), and the CLIP-score threshold used. The rules are
transforms.filters (pure); this module wires them: assets loaded once per worker process,
the threshold from the whole pool in exact radix-select passes, ImageNet features turned
into target clusters in parallel.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from transforms.beam import metrics
from transforms.beam.io import local_copy
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes
from transforms.filters import clip_score
from transforms.filters.clusters import load_centroids, nearest_centroids, prepare_centroids
from transforms.filters.datacomp import FILTERS, PASSED, FilterSpec, FilterTools, first_failed
from transforms.filters.language import FastTextLid
from transforms.formats.embeddings import embedding_matrix
from transforms.formats.npy import read_npy_header, read_npy_rows

__all__ = ["FILTER", "FILTERED_SCHEMA", "DataCompFilters", "Filtered"]

FILTER = "filter"
FILTERED_SCHEMA = pa.schema([(KEY, pa.string()), (FILTER, pa.string())])
FILTERED = "filtered"
# ImageNet feature rows per parallel piece of the target-cluster computation.
FEATURE_ROWS_PER_PIECE = 8192

_assets_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _centroids(path: str):
    """The centroids of `path`, read and prepared once per worker process (100k x 768 float32: 300 MB)."""
    with _assets_lock, FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return prepare_centroids(load_centroids(handle, path))


class Filtered(NamedTuple):
    """What the filter stage hands on."""

    batches: PCollection  # [pa.RecordBatch]: the records every filter keeps, columns unchanged
    filtered: PCollection  # [pa.RecordBatch]: key, filter (the first failed), source columns, key hash
    threshold: Optional[PCollection]  # singleton float: the CLIP-score threshold used (None: no clip_score)


class _FilterFn(beam.DoFn):
    """Batch -> the kept rows (main) and the filtered rows with their first failed filter (FILTERED)."""

    def __init__(self, spec: FilterSpec):
        self._spec = spec
        self._filtered = {name: Metrics.counter(metrics.FILTERED, name) for name in FILTERS}
        self._passed = Metrics.counter(metrics.CURATION, "records_passed_filters")

    def setup(self):
        spec = self._spec
        self._stack = contextlib.ExitStack()
        self._tools = FilterTools()
        if spec.needs_language:
            model = None if spec.lid_model is None else local_copy(spec.lid_model)
            self._tools.languages = FastTextLid(model).languages
        if "text" in spec.filters:
            from transforms.filters.text_entities import EntityMatcher
            from transforms.metadata.sources import locate_wordnet, open_wordnet

            reader = self._stack.enter_context(open_wordnet(locate_wordnet()))
            self._tools.contains_entity = EntityMatcher(reader, spec.wnid_offsets).contains_entity
        if "image" in spec.filters:
            centroids = _centroids(spec.centroids)
            self._tools.nearest = lambda embeddings: nearest_centroids(embeddings, centroids)

    def teardown(self):
        self._stack.close()

    def process(self, batch: pa.RecordBatch, threshold=None, targets=None):
        self._tools.threshold = threshold
        self._tools.targets = targets
        column = self._spec.image_column

        def embeddings(rows: np.ndarray) -> np.ndarray:
            return embedding_matrix(batch.take(pa.array(rows)), column)

        failed = first_failed(batch, self._spec, self._tools, embeddings if column else None)
        passed = failed == PASSED
        self._passed.inc(int(passed.sum()))
        if passed.all():
            yield batch
            return
        if passed.any():
            yield batch.filter(pa.array(passed))
        dropped = np.flatnonzero(~passed)
        for index, count in zip(*np.unique(failed[dropped], return_counts=True), strict=True):
            self._filtered[FILTERS[index]].inc(int(count))
        rows = batch.select([KEY, SOURCE_FILE, SOURCE_ROW]).take(pa.array(dropped))
        names = pa.array([FILTERS[index] for index in failed[dropped].tolist()], pa.string())
        hashes = pa.array(key_hashes(rows.column(KEY).to_pylist()), pa.uint64())
        yield beam.pvalue.TaggedOutput(FILTERED, rows.append_column(FILTER, names).append_column(KEY_HASH, hashes))


def _sum_arrays(arrays, size: int) -> np.ndarray:
    total = np.zeros(size, dtype=np.int64)
    for array in arrays:
        total += array
    return total


class ClipScoreThreshold(beam.PTransform):
    """The CLIP-score threshold of a fraction of the whole pool, exact: DataComp's
    `-np.sort(-scores)[int(N * f)]`, found by a radix select over the scores' ordered bits.

    In: batches. Out: a singleton float (NaN: no threshold, nothing kept). The first pass
    counts the rows, the NaNs and the top 16-bit digit of every key; each further pass
    sums a 2**16-bin histogram of the next digit of the keys still in the running
    (CombineGlobally) and narrows the prefix (transforms.filters.clip_score): two passes
    for float32 scores, four for float64. No machine ever holds the column.
    """

    def __init__(self, field: str, fraction: float, dtype: str):
        super().__init__()
        self._field = field
        self._fraction = fraction
        self._dtype = np.dtype(dtype).name

    def expand(self, batches: PCollection[pa.RecordBatch]) -> PCollection:
        field, fraction, dtype = self._field, self._fraction, self._dtype
        bits = clip_score.key_bits(dtype)

        def keys(batch):
            scores = batch.column(field).to_numpy(zero_copy_only=False)
            return clip_score.order_keys(np.asarray(scores).astype(dtype, copy=False))

        def first_pass(keyed):
            keys, nans = keyed
            counts = np.array([len(keys) + nans, nans], dtype=np.int64)
            return np.concatenate([counts, clip_score.digit_histogram(keys, 0, 0, bits)])

        def start(summed):
            state = clip_score.start_select(int(summed[0]), int(summed[1]), fraction, dtype)
            return state if state.finished else clip_score.next_state(state, summed[2:])

        def histogram(keyed, state):
            return np.zeros(clip_score.DIGITS, np.int64) if state.finished else state.histogram(keyed[0])

        def narrow(summed, state):
            return state if state.finished else clip_score.next_state(state, summed)

        keyed = batches | "ScoreKeys" >> beam.Map(keys)
        state = (
            keyed
            | "CountAndFirstDigit" >> beam.Map(first_pass)
            | "SumFirstPass" >> beam.CombineGlobally(_sum_arrays, size=2 + clip_score.DIGITS)
            | "StartSelect" >> beam.Map(start)
        )
        for index in range(1, bits // clip_score.DIGIT_BITS):
            summed = (
                keyed
                | f"Histogram{index}" >> beam.Map(histogram, beam.pvalue.AsSingleton(state))
                | f"SumHistogram{index}" >> beam.CombineGlobally(_sum_arrays, size=clip_score.DIGITS)
            )
            state = summed | f"Narrow{index}" >> beam.Map(narrow, beam.pvalue.AsSingleton(state))
        return state | "Threshold" >> beam.Map(clip_score.threshold_of)


class _FeatureClustersFn(beam.DoFn):
    """(start, stop) rows of the ImageNet features -> the clusters they land in."""

    def __init__(self, features: str, centroids: str):
        self._features = features
        self._centroids = centroids

    def process(self, piece):
        start, stop = piece
        with FileSystems.open(self._features, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            header = read_npy_header(handle, self._features)
            rows = read_npy_rows(handle, header, start, stop)
        yield np.unique(nearest_centroids(rows, _centroids(self._centroids)))


class TargetClusters(beam.PTransform):
    """The image filter's target clusters: given (a small list, one element), or the
    clusters that ImageNet-1k features land in, computed in pieces over the workers.

    In: the pipeline root. Out: a singleton sorted int64 array.
    """

    def __init__(self, spec: FilterSpec, given: Optional[np.ndarray] = None):
        super().__init__()
        self._spec = spec
        self._given = given

    def expand(self, pbegin) -> PCollection:
        if self._given is not None:
            return pbegin | "GivenTargets" >> beam.Create([np.asarray(self._given, dtype=np.int64)])
        spec = self._spec
        pieces = [
            (start, min(start + FEATURE_ROWS_PER_PIECE, spec.feature_rows))
            for start in range(0, spec.feature_rows, FEATURE_ROWS_PER_PIECE)
        ]
        return (
            pbegin
            | "FeaturePieces" >> beam.Create(pieces)
            | "SpreadPieces" >> beam.Reshuffle()
            | "FeatureClusters" >> beam.ParDo(_FeatureClustersFn(spec.target_clusters, spec.centroids))
            | "UnionClusters"
            >> beam.CombineGlobally(
                lambda arrays: np.unique(np.concatenate([np.zeros(0, np.int64)] + [np.asarray(a) for a in arrays]))
            )
        )


class DataCompFilters(beam.PTransform):
    """DataComp's filters (basic, text, clip_score, image), in that order, as one stage.

    In: batches with `text` and the columns the chosen filters read (width and height,
    the score, the image embedding column `spec.image_column`). Out: `Filtered`. The
    clip_score fraction threshold is taken over every batch that reaches the stage (the
    whole accepted pool, before any other filter), as DataComp does. Beam metrics:
    "filtered" per filter name; "curation" records_passed_filters.
    """

    def __init__(self, spec: FilterSpec, targets: Optional[np.ndarray] = None):
        super().__init__()
        self._spec = spec
        self._targets = targets  # the target clusters when given as a list (else computed from features)

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Filtered:
        spec = self._spec
        side = {}
        threshold = None
        if "clip_score" in spec.filters:
            if spec.needs_threshold_pass:
                threshold = batches | "ClipScoreThreshold" >> ClipScoreThreshold(
                    spec.clip_score_field, spec.clip_score_fraction, spec.clip_score_dtype
                )
            else:
                threshold = batches.pipeline | "GivenThreshold" >> beam.Create([float(spec.clip_score_threshold)])
            side["threshold"] = beam.pvalue.AsSingleton(threshold)
        if "image" in spec.filters:
            targets = batches.pipeline | "TargetClusters" >> TargetClusters(spec, self._targets)
            side["targets"] = beam.pvalue.AsSingleton(targets)
        results = batches | "ApplyFilters" >> beam.ParDo(_FilterFn(spec), **side).with_outputs(FILTERED, main="kept")
        return Filtered(results["kept"], results[FILTERED], threshold)
