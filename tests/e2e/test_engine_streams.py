"""Beam's local engine loses no element of a stage input, on 2, 4 and 8 worker processes.

The card's shape: counts per key (CombinePerKey) fed back as a side input to a sampling
step over the same records. The sampling step's main input waits in the runner until the
counts are in, and is then written to a worker as one chunk per producer flush. Beam
2.77's runner wrote it through a stream flushed by a timer thread every second, and a
flush that waited on a full send queue cleared, unsent, what the runner wrote meanwhile
(docs/beam-notes.md). A loaded machine is made deterministic here: each large chunk takes
0.2 s to write and each timed send waits 0.5 s. With Beam's default (the timed flush)
this test loses ~15-40% of the records; `make_runner` turns the timer off.
"""

from __future__ import annotations

import json
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import data_plane

from beam_pipeline.curation.runners import make_runner
from transforms.core.hashing import key_hashes, uniform_draws

RECORDS = 500
PAYLOAD = 200_000  # bytes a record: the sampling step's input is ~100 MB, many chunks
KEYS = 7
THRESHOLD = 40
SEED = 3


@pytest.fixture
def loaded_engine(monkeypatch):
    """Slow large writes and slow timed sends in the runner, as on a loaded machine."""
    write = data_plane.ClosableOutputStream.write
    enqueue = data_plane._GrpcDataChannel._enqueue_to_send

    def slow_write(self, data):
        if len(data) > 1 << 20:
            time.sleep(0.2)
        return write(self, data)

    def slow_timed_send(self, *args, **kwargs):
        if isinstance(threading.current_thread(), data_plane.PeriodicThread):
            time.sleep(0.5)
        return enqueue(self, *args, **kwargs)

    monkeypatch.setattr(data_plane.ClosableOutputStream, "write", slow_write, raising=False)
    monkeypatch.setattr(data_plane._GrpcDataChannel, "_enqueue_to_send", slow_timed_send)


def _expected_kept() -> set[str]:
    keys = [f"r{i}" for i in range(RECORDS)]
    entries = np.arange(RECORDS) % KEYS
    counts = np.bincount(entries, minlength=KEYS)
    draws = uniform_draws(key_hashes(keys), SEED)
    kept = zip(keys, entries, draws, strict=True)
    return {key for key, entry, draw in kept if draw < min(1.0, THRESHOLD / counts[entry])}


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_the_cards_shape_loses_no_record_on_a_loaded_engine(loaded_engine, workers, tmp_path):
    # Defined here, not at module level: the workers cannot import a test module, and
    # cloudpickle sends a nested function by value.
    def _record(i: int) -> tuple[str, tuple[int, bytes]]:
        return f"r{i}", (i % KEYS, b"x" * PAYLOAD)

    def _keep(element, counts):
        key, (entry, _payload) = element
        p = min(1.0, THRESHOLD / counts[entry])
        draw = uniform_draws(key_hashes([key]), SEED)[0]
        return key, bool(draw < p)

    options = PipelineOptions(["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        records = (
            pipeline
            | beam.Create(range(RECORDS))
            | beam.Reshuffle()  # the records come from several bundles, as from several files
            | beam.Map(_record)
        )
        counts = records | beam.Map(lambda kv: (kv[1][0], 1)) | "CountPerEntry" >> beam.CombinePerKey(sum)
        decisions = records | "Sample" >> beam.Map(_keep, beam.pvalue.AsDict(counts))
        _write_json(decisions, tmp_path / "decisions.json", "Decisions")
        _write_json(counts, tmp_path / "counts.json", "Counts")
    decided = dict(json.loads((tmp_path / "decisions.json").read_text()))
    counted = dict(json.loads((tmp_path / "counts.json").read_text()))
    # The accounting: every record counted once and decided once; the kept set is the oracle's.
    assert (len(decided), sum(counted.values())) == (RECORDS, RECORDS)
    assert {key for key, kept in decided.items() if kept} == _expected_kept()


def _write_json(pcoll, path, label: str) -> None:
    _ = (
        pcoll
        | f"{label}List" >> beam.combiners.ToList()
        | f"{label}Write" >> beam.Map(lambda items: path.write_text(json.dumps(items)))
    )
