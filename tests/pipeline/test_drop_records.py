"""DropRecords in a TestPipeline: kept rows go on unchanged, dropped rows carry their reason."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to

from helpers import beam_test_pipeline
from transforms.beam.drop import FILTER, DropRecords, DropRule
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes


class _ByRemainder(DropRule):
    """Drops row i with reason i % 3 when i % 3 < 2 ("zero", "one"), keeps the rest."""

    names = ("zero", "one")

    def setup(self):
        self.ready = True

    def first_failed(self, batch):
        assert self.ready  # setup ran on the worker before any batch
        rows = np.asarray(batch.column(SOURCE_ROW).to_pylist())
        return np.where(rows % 3 < 2, rows % 3, -1)


def _batch(rows) -> pa.RecordBatch:
    return pa.record_batch(
        {
            KEY: [f"k{i}" for i in rows],
            SOURCE_FILE: pa.array([0] * len(rows), pa.int32()),
            SOURCE_ROW: pa.array(list(rows), pa.int64()),
            "score": [float(i) for i in rows],
        }
    )


def test_kept_and_dropped_rows_with_reasons_and_key_hashes():
    batches = [_batch(range(0, 7)), _batch(range(7, 9)), _batch([2, 5])]  # the last: every row kept
    with beam_test_pipeline() as pipeline:
        result = pipeline | beam.Create(batches) | DropRecords(_ByRemainder())
        kept = result.batches | "KeptRows" >> beam.FlatMap(
            lambda b: list(zip(b[KEY].to_pylist(), b["score"].to_pylist(), strict=True))
        )
        dropped = result.dropped | "DroppedRows" >> beam.FlatMap(
            lambda b: list(zip(b[KEY].to_pylist(), b[FILTER].to_pylist(), b[KEY_HASH].to_pylist(), strict=True))
        )
        expected_kept = [(f"k{i}", float(i)) for i in (2, 5, 8, 2, 5)]
        assert_that(kept, equal_to(expected_kept), label="Kept")
        names = ("zero", "one")
        expected_dropped = [(f"k{i}", names[i % 3], key_hashes([f"k{i}"])[0]) for i in range(9) if i % 3 < 2]
        assert_that(dropped, equal_to(expected_dropped), label="Dropped")
