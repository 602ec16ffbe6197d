"""ExactDedup (transforms/beam/dedup.py) against a brute-force oracle, on TestPipeline.

The oracle is plain Python (tests/dedup_reference.py: the draw written out with hashlib,
groups as a dict, min over (draw, file, row)), no pipeline code. Survivors and duplicates
must not depend on how the records are cut into batches or in what order they arrive.
"""

from __future__ import annotations

import shutil
import tempfile

import apache_beam as beam
import dedup_reference as ref
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transforms.beam.dedup as dedup_module
from transforms.beam.dedup import ExactDedup
from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW, TEXT

_URLS = ["http://a.com/x", "https://www.a.com/x/", "a.com/x?utm_source=1", "b.org", " b.org/", None, "", "http://"]
_TEXTS = ["A cat", "a  CAT", "a dog", "  ", None, "A Dog", "ein Hund"]


def _records(n_files: int, per_file: int, rnd) -> list[dict]:
    out = []
    for f in range(n_files):
        for r in range(per_file):
            out.append(
                {
                    KEY: f"k{rnd.randrange(3 * n_files * per_file // 2 + 1)}",  # some sample keys repeat
                    TEXT: rnd.choice(_TEXTS),
                    "url": rnd.choice(_URLS),
                    SOURCE_FILE: f,
                    SOURCE_ROW: r,
                }
            )
    return out


def _batches(records: list[dict], size: int) -> list[pa.RecordBatch]:
    schema = pa.schema(
        [
            (KEY, pa.string()),
            (TEXT, pa.string()),
            ("url", pa.string()),
            (SOURCE_FILE, pa.int32()),
            (SOURCE_ROW, pa.int64()),
        ]
    )
    return [pa.RecordBatch.from_pylist(records[i : i + size], schema=schema) for i in range(0, len(records), size)]


def oracle(records: list[dict], kind: str, seed: int):
    """(survivor positions, {(file, row): (key, duplicate_of, caption, duplicate_of_caption)})."""
    key_of = ref.url_key if kind == "url" else ref.text_key
    column = "url" if kind == "url" else TEXT
    groups: dict = {}
    for rec in records:
        k = key_of(rec[column])
        if k is not None:
            groups.setdefault(k, []).append(rec)
    dups = {}
    for members in groups.values():
        best = min(members, key=lambda m: (ref.draw(seed, m[KEY] + "\x00dedup"), m[SOURCE_FILE], m[SOURCE_ROW]))
        for m in members:
            if m is not best:
                dups[(m[SOURCE_FILE], m[SOURCE_ROW])] = (m[KEY], best[KEY], m[TEXT], best[TEXT])
    survivors = [(r[SOURCE_FILE], r[SOURCE_ROW]) for r in records if (r[SOURCE_FILE], r[SOURCE_ROW]) not in dups]
    return survivors, dups


def chain_oracle(records: list[dict], kinds: tuple, seed: int):
    """Each kind on the survivors of the ones before: (survivors, duplicates with their kind, figures)."""
    alive, dups, figures = records, [], {}
    for kind in kinds:
        _, found = oracle(alive, kind, seed)
        figures[kind] = {"judged": len(alive), "deduplicated": len(found)}
        dups += [(pos, value, kind, 1.0) for pos, value in found.items()]
        alive = [r for r in alive if (r[SOURCE_FILE], r[SOURCE_ROW]) not in found]
    return [(r[SOURCE_FILE], r[SOURCE_ROW]) for r in alive], dups, figures


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([("url",), ("text",), ("url", "text")]),
    st.integers(0, 2**64 - 1),
    st.randoms(use_true_random=False),
    st.integers(1, 9),
    st.integers(1, 7),
    st.sampled_from([4, 1 << 17]),
    st.booleans(),
)
def test_exact_dedup_equals_the_oracle_for_any_batching(kinds, seed, rnd, batch_size, shards, flush_rows, spill):
    """Small pools with many collisions; one kind or both chained; batch sizes 1..9, shuffled
    batch order, 1..7 key shards, candidates cut every 4 rows or once a bundle; the local
    engines' way (batches, key shards and duplicates through spill files) or the runner's."""
    default_flush_rows = dedup_module.FLUSH_ROWS
    dedup_module.FLUSH_ROWS = flush_rows  # read when the DoFn runs, in this process
    records = _records(3, 12, rnd)
    want_survivors, want_dups, want_figures = chain_oracle(records, kinds, seed)
    batches = _batches(records, batch_size)
    rnd.shuffle(batches)
    spill_dir = tempfile.mkdtemp(prefix="dedup-spill-") if spill else None
    try:
        with TestPipeline() as p:
            out = (
                p | beam.Create(batches, reshuffle=False) | ExactDedup(kinds, seed, spill_dir=spill_dir, shards=shards)
            )
            survivors = out.survivors | "S" >> beam.FlatMap(
                lambda b: list(zip(b.column(SOURCE_FILE).to_pylist(), b.column(SOURCE_ROW).to_pylist(), strict=True))
            )
            dups = out.duplicates | "D" >> beam.FlatMap(
                lambda b: [
                    (
                        (r[SOURCE_FILE], r[SOURCE_ROW]),
                        (r[KEY], r["duplicate_of"], r["caption"], r["duplicate_of_caption"]),
                        r["kind"],
                        r["similarity"],
                    )
                    for r in b.to_pylist()
                ]
            )
            assert_that(survivors, equal_to(want_survivors), label="survivors")
            assert_that(dups, equal_to(want_dups), label="duplicates")
            for kind in kinds:
                assert_that(out.figures[kind], equal_to([want_figures[kind]]), label=f"figures {kind}")
    finally:
        dedup_module.FLUSH_ROWS = default_flush_rows
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)


def test_a_kind_given_twice_or_unknown_fails_at_construction():
    for kinds in (("url", "url"), ("semantic",), ()):
        with pytest.raises(ValueError, match="exact dedup kinds"):
            ExactDedup(kinds, 0)
