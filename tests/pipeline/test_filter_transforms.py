"""The filter stage's PTransforms in a TestPipeline: the exact threshold and the routing of records."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from helpers import beam_test_pipeline
from transforms.beam.filters import FILTER, ClipScoreThreshold, DataCompFilters
from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.filters.clip_score import threshold_by_sort
from transforms.filters.datacomp import FilterSpec


def _batches(scores: np.ndarray, dtype, sizes) -> list[pa.RecordBatch]:
    batches, start = [], 0
    for size in sizes:
        part = scores[start : start + size]
        keys = [f"k{start + i}" for i in range(len(part))]
        batches.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(keys),
                    pa.array(["a caption"] * len(part)),
                    pa.array([0] * len(part), pa.int32()),
                    pa.array(range(start, start + len(part)), pa.int64()),
                    pa.array(part, type=pa.from_numpy_dtype(np.dtype(dtype))),
                ],
                names=[KEY, TEXT, SOURCE_FILE, SOURCE_ROW, "score"],
            )
        )
        start += size
    return batches


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_threshold_over_uneven_batches_is_the_sorts(dtype):
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(0.3, 0.05, 3000), 3).astype(dtype)  # many ties
    scores[rng.choice(3000, 40, replace=False)] = np.nan
    batches = _batches(scores, dtype, [1, 999, 0, 1500, 500])
    expected = threshold_by_sort(scores, 0.3)
    with beam_test_pipeline() as pipeline:
        threshold = pipeline | beam.Create(batches) | ClipScoreThreshold("score", 0.3, dtype)
        assert_that(threshold, equal_to([expected]))


def test_a_threshold_on_nan_keeps_nothing_and_is_nan():
    scores = np.array([0.5, np.nan, np.nan, np.nan], np.float32)
    with beam_test_pipeline() as pipeline:
        threshold = (
            pipeline | beam.Create(_batches(scores, "float32", [4])) | ClipScoreThreshold("score", 0.5, "float32")
        )
        assert_that(threshold | beam.Map(np.isnan), equal_to([True]))


def test_clip_score_filter_routes_every_record_once():
    scores = np.array([0.1, 0.9, 0.5, 0.5, np.nan, 0.7, 0.2, 0.5, 0.3, 0.6], np.float32)
    spec = FilterSpec(filters=("clip_score",), clip_score_field="score", clip_score_fraction=0.3)
    # N = 10, n = 3: the 4th largest is 0.5 (after 0.9, 0.7, 0.6); the three 0.5s tie: 6 kept.
    kept_keys = ["k1", "k2", "k3", "k5", "k7", "k9"]
    with beam_test_pipeline() as pipeline:
        # The first batch has one record that passes, the second none.
        filtered = pipeline | beam.Create(_batches(scores, "float32", [2, 1, 7])) | DataCompFilters(spec)
        kept = filtered.batches | "KeptKeys" >> beam.FlatMap(lambda b: b.column(KEY).to_pylist())
        dropped = filtered.filtered | beam.FlatMap(
            lambda b: zip(b.column(KEY).to_pylist(), b.column(FILTER).to_pylist(), strict=True)
        )
        assert_that(kept, equal_to(kept_keys), label="kept")
        others = [(f"k{i}", "clip_score") for i in range(10) if f"k{i}" not in kept_keys]
        assert_that(dropped, equal_to(others), label="dropped")
        assert_that(filtered.threshold, equal_to([0.5]), label="threshold")
