"""ReadCaptions on the faulty JSONL pool (tests/faulty_pools.py): Beam metrics per reject reason, --strict.

The same pool goes through the whole command line in tests/e2e/test_faults.py.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter

from faulty_pools import MAX_TEXT_BYTES, jsonl_pool, write_files
from helpers import beam_test_pipeline
from transforms.beam.read import ReadCaptions
from transforms.formats.layout import InputLayout
from transforms.formats.rejections import strict_failure


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The faulty JSONL pool and its clean twin, written to files (named as tests/e2e/test_faults.py's)."""
    root = tmp_path_factory.mktemp("read-faults")
    pool = jsonl_pool()
    faulty_dir = write_files(root / "jsonl" / "faulty", pool.files)
    write_files(root / "jsonl" / "clean", pool.clean)
    return {"jsonl": SimpleNamespace(pool=pool, faulty_dir=faulty_dir)}


def _jsonl_layout() -> InputLayout:
    return InputLayout(format="jsonl", max_text_bytes=MAX_TEXT_BYTES, passthrough=(("url", pa.string()),))


def test_rejections_are_counted_in_beam_metrics_per_reason(runs):
    run = runs["jsonl"]
    paths = [str(p) for p in sorted(run.faulty_dir.iterdir())]
    pipeline = beam_test_pipeline()
    _ = pipeline | ReadCaptions(paths, _jsonl_layout())
    result = pipeline.run()
    result.wait_until_finish()

    def counters(namespace: str) -> dict:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
        return {c.key.metric.name: c.committed for c in found if c.committed}

    records, files = Counter(), Counter()
    for _, row, reason, count in run.pool.rejections:
        records[reason] += count
        files[reason] += row is None
    assert counters("rejected") == {k: v for k, v in records.items() if v}
    assert counters("rejected_files") == {k: v for k, v in files.items() if v}
    totals = counters("curation")
    assert totals["records_read"] == run.pool.good + sum(records.values())
    assert totals["records_rejected"] == sum(records.values()) and totals["files_rejected"] == sum(files.values())


def test_strict_fails_at_the_first_rejection_with_one_line(runs):
    run = runs["jsonl"]
    paths = [str(p) for p in sorted(run.faulty_dir.iterdir())]
    pipeline = beam_test_pipeline()
    _ = pipeline | ReadCaptions(paths, _jsonl_layout(), strict=True)
    with pytest.raises(Exception) as failure:
        pipeline.run().wait_until_finish()
    message = strict_failure(failure.value)
    allowed = {
        f"--strict: {run.faulty_dir / name}" + ("" if row is None else f" row {row}") + f": {reason}"
        for name, row, reason, _ in run.pool.rejections
    }
    assert message in allowed and "\n" not in message


def test_strict_passes_a_clean_pool(runs):
    run = runs["jsonl"]
    pipeline = beam_test_pipeline()
    read = pipeline | ReadCaptions(
        [str(p) for p in sorted((run.faulty_dir.parent / "clean").iterdir())], _jsonl_layout(), strict=True
    )
    _ = read.batches | beam.Map(lambda batch: batch.num_rows)
    pipeline.run().wait_until_finish()
