"""Each PTransform in a TestPipeline, checked with assert_that."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from helpers import beam_test_pipeline, matching_cases, write_jsonl
from transforms.beam.count import CountEntries
from transforms.beam.match import MatchEntries
from transforms.beam.modes import MetaClip1
from transforms.beam.read import ReadCaptions
from transforms.beam.sample import BalancedSample
from transforms.beam.sink import ShardedOutput, WriteShards
from transforms.beam.spill import LoadBatches, StoreBatches
from transforms.beam.write import ParquetShards, WriteJsonFiles, WriteJsonLinesShards, WriteParquetShards
from transforms.core.balancing import entry_probabilities, keep_probability
from transforms.core.columns import (
    ENTRY_IDS,
    KEEP_PROB,
    KEPT,
    KEY,
    KEY_HASH,
    SOURCE_FILE,
    SOURCE_ROW,
    TEXT,
)
from transforms.core.hashing import key_hashes, uniform_draws
from transforms.core.plan import plan_for_threshold
from transforms.formats.layout import InputLayout
from transforms.formats.rejections import Rejection
from transforms.metadata.lists import parse_metadata


def _rows(batch: pa.RecordBatch, *columns):
    return list(zip(*(batch.column(c).to_pylist() for c in columns), strict=True))


def _batch(keys, texts, entry_ids=None):
    columns = {
        KEY: pa.array(keys, pa.string()),
        TEXT: pa.array(texts, pa.string()),
        SOURCE_FILE: pa.array([0] * len(keys), pa.int32()),
        SOURCE_ROW: pa.array(range(len(keys)), pa.int64()),
    }
    if entry_ids is not None:
        columns[ENTRY_IDS] = pa.array(entry_ids, pa.list_(pa.int32()))
    return pa.RecordBatch.from_pydict(columns)


def test_read_captions_splits_good_rows_and_rejections(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"key": "k1", "text": "dog", "url": "u1"},
            {"text": "cat"},
            {"key": "k3", "text": 5},
            {"key": "k4", "text": None},
            {"key": "k5"},
            {"key": "k6", "text": " \t "},
        ],
    )
    with path.open("a") as f:
        f.write("{oops\n")
    layout = InputLayout(format="jsonl", passthrough=(("url", pa.string()),), batch_size=2)
    with beam_test_pipeline() as p:
        read = p | ReadCaptions([str(path)], layout)
        rows = read.batches | beam.FlatMap(lambda b: _rows(b, KEY, TEXT, "url", SOURCE_ROW))
        assert_that(rows, equal_to([("k1", "dog", "u1", 0), ("a.jsonl:1", "cat", None, 1)]), label="rows")
        reasons = read.rejected | beam.Map(lambda r: (r.row, r.reason))
        assert_that(
            reasons,
            equal_to(
                [
                    (2, "non_string_text"),
                    (3, "null_text"),
                    (4, "missing_text"),
                    (5, "empty_text"),
                    (6, "malformed_json"),
                ]
            ),
            label="rejected",
        )


def test_match_entries_reproduces_reference_cases(tmp_path):
    metadata, cases = matching_cases()
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(metadata))
    sha = parse_metadata(path.read_bytes()).sha256
    texts = [c["text"] for c in cases]
    batches = [
        _batch([str(i) for i in range(start, min(start + 10, len(texts)))], texts[start : start + 10])
        for start in range(0, len(texts), 10)
    ]
    with beam_test_pipeline() as p:
        matched = p | beam.Create(batches) | MatchEntries(MetaClip1(str(path), sha, len(metadata)))
        assert_that(
            matched | beam.FlatMap(lambda b: _rows(b, KEY, ENTRY_IDS)),
            equal_to([(str(i), c["metaclip1"]) for i, c in enumerate(cases)]),
        )


def test_count_entries_sums_across_batches_and_blocks():
    ids = [[0, 3], [3], [], [9, 10, 11], [1, 3, 11]]
    batches = [_batch(["a", "b", "c"], ["x"] * 3, ids[:3]), _batch(["d", "e"], ["x"] * 2, ids[3:])]
    expected = np.zeros(13, dtype=np.int64)
    for row in ids:
        expected[row] += 1
    with beam_test_pipeline() as p:
        # block_size 4: the 13 entries span four blocks, one of them never matched.
        counts = p | beam.Create(batches) | CountEntries(13, block_size=4)
        assert_that(counts | beam.Map(lambda c: (c.dtype.name, c.tolist())), equal_to([("int64", expected.tolist())]))


def test_count_entries_of_an_empty_pool_is_all_zero():
    with beam_test_pipeline() as p:
        counts = p | beam.Create([], reshuffle=False).with_output_types(pa.RecordBatch) | CountEntries(5)
        assert_that(counts | beam.Map(lambda c: c.tolist()), equal_to([[0, 0, 0, 0, 0]]))


def test_balanced_sample_adds_probability_hash_and_decision():
    counts = np.array([10, 2, 0, 40])
    ids = [[0], [1], [], [0, 3], [3]]
    keys = ["a", "b", "c", "d", "e"]
    probs = entry_probabilities(counts, 4)
    draws = uniform_draws(key_hashes(keys), 9)
    expected = [
        (k, keep_probability(r, probs), bool(u < keep_probability(r, probs)))
        for k, r, u in zip(keys, ids, draws, strict=True)
    ]
    with beam_test_pipeline() as p:
        plan = p | "Counts" >> beam.Create([counts]) | beam.Map(plan_for_threshold, 4)
        sampled = p | beam.Create([_batch(keys, ["x"] * 5, ids)]) | BalancedSample(plan, seed=9)
        assert_that(sampled | beam.FlatMap(lambda b: _rows(b, KEY, KEEP_PROB, KEPT)), equal_to(expected))


def _sampled_batch(keys, kept):
    batch = _batch(keys, [f"text {k}" for k in keys], [[0]] * len(keys))
    return (
        batch.append_column(KEEP_PROB, pa.array([0.5] * len(keys), pa.float64()))
        .append_column(KEY_HASH, pa.array(key_hashes(keys), pa.uint64()))
        .append_column(KEPT, pa.array(kept, pa.bool_()))
    )


@pytest.mark.parametrize("through_files", [False, True], ids=["shuffle", "spill"])
def test_write_parquet_shards_sorted_complete_and_every_shard_present(tmp_path, through_files):
    keys = [f"k{i:03d}" for i in range(60)]
    batches = [_sampled_batch(keys[:35], [i % 3 == 0 for i in range(35)]), _sampled_batch(keys[35:], [True] * 25)]
    schema = pa.schema([(KEY, pa.string()), (TEXT, pa.string())])
    spill_dir = str(tmp_path / "spill") if through_files else None
    with beam_test_pipeline() as p:
        written = (
            p
            | beam.Create(batches)
            | WriteParquetShards(str(tmp_path / "subset"), 4, schema, kept_only=True, spill_dir=spill_dir)
        ).written
        assert_that(
            written | beam.Map(lambda path: path.rsplit("/", 1)[1]),
            equal_to([f"part-0000{i}-of-00004.parquet" for i in range(4)]),
        )
    kept = {k for i, k in enumerate(keys[:35]) if i % 3 == 0} | set(keys[35:])
    seen = []
    for shard in sorted((tmp_path / "subset").glob("part-*.parquet")):
        table = pq.read_table(shard)
        assert table.schema.names == [KEY, TEXT]
        shard_keys = table.column(KEY).to_pylist()
        assert shard_keys == sorted(shard_keys)
        seen += shard_keys
    assert sorted(seen) == sorted(kept)
    assert not list((tmp_path / "subset").glob(".*"))  # no temporary files left


def test_write_parquet_shards_reports_duplicate_keys(tmp_path):
    keys = ["a", "b", "a", "c", "a", "b"]
    schema = pa.schema([(KEY, pa.string()), (TEXT, pa.string())])
    with beam_test_pipeline() as p:
        out = p | beam.Create([_sampled_batch(keys, [True] * 6)]) | WriteParquetShards(str(tmp_path / "m"), 3, schema)
        found = out.figures | beam.Map(lambda d: (d["duplicate_keys"], d["examples"]))
        assert_that(
            found
            | beam.combiners.ToList()
            | beam.Map(lambda xs: (sum(n for n, _ in xs), sorted(e for _, ex in xs for e in ex))),
            equal_to([(3, ["a", "b"])]),
        )


@pytest.mark.parametrize("through_files", [False, True], ids=["shuffle", "spill"])
def test_outputs_written_together_are_each_whole_and_only_the_first_reports(tmp_path, through_files):
    """WriteShards' `together`: two outputs of the same batches in one shuffle; `prepare` per output."""
    keys = ["a", "b", "a", "c", "d", "e", "a"]
    kept = [True, False, True, True, False, True, True]
    schema = pa.schema([(KEY, pa.string()), (TEXT, pa.string())])
    shout = lambda batch: batch.set_column(1, TEXT, pc.utf8_upper(batch.column(TEXT)))  # noqa: E731
    spill_dir = str(tmp_path / "spill") if through_files else None
    with beam_test_pipeline() as p:
        out = (
            p
            | beam.Create([_sampled_batch(keys, kept)])
            | WriteShards(
                str(tmp_path / "all"),
                3,
                ParquetShards(schema),
                spill_dir,
                "all",
                prepare=shout,
                together=[ShardedOutput(str(tmp_path / "kept"), 2, ParquetShards(schema, kept_only=True), "kept")],
            )
        )
        assert_that(
            out.written | beam.Map(lambda path: path.rsplit("/", 2)[1] + "/" + path.rsplit("/", 1)[1]),
            equal_to(
                [f"all/part-0000{i}-of-00003.parquet" for i in range(3)]
                + [f"kept/part-0000{i}-of-00002.parquet" for i in range(2)]
            ),
            label="paths",
        )
        # Repeated keys: 'a' twice more among all rows (the first output); among the kept ones too, unreported.
        assert_that(
            out.figures | beam.Map(lambda d: d["duplicate_keys"]) | beam.CombineGlobally(sum),
            equal_to([2]),
            label="dups",
        )
    every = pq.read_table(tmp_path / "all").sort_by(KEY)
    assert every.column(KEY).to_pylist() == sorted(keys) and every.column(TEXT)[0].as_py() == "TEXT A"
    held = pq.read_table(tmp_path / "kept").sort_by(KEY)
    assert held.column(KEY).to_pylist() == sorted(k for k, flag in zip(keys, kept, strict=True) if flag)
    assert held.column(TEXT)[0].as_py() == "text a"  # `prepare` is the first output's only


def test_write_json_lines_shards(tmp_path):
    lines = [Rejection(f"f{i % 3}", i, "empty_text").to_json() for i in range(10)]
    with beam_test_pipeline() as p:
        p | beam.Create(lines) | WriteJsonLinesShards(str(tmp_path / "rejected"), 2)
    written = [
        line for f in sorted((tmp_path / "rejected").glob("part-*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert sorted(written) == sorted(lines) and len(list((tmp_path / "rejected").iterdir())) == 2


def test_spilled_batches_come_back_whole_and_the_files_hold_them(tmp_path):
    batches = [_sampled_batch([f"a{i}" for i in range(n)], [True] * n) for n in (3, 1, 7)]
    expected = sorted(key for batch in batches for key in batch.column(KEY).to_pylist())
    with beam_test_pipeline() as p:
        stored = p | beam.Create(batches) | StoreBatches(str(tmp_path), "matched")
        loaded = stored | LoadBatches(str(tmp_path))
        assert_that(loaded | beam.FlatMap(lambda b: b.column(KEY).to_pylist()), equal_to(expected))
        assert_that(
            stored | beam.Map(lambda spill: spill.rows) | beam.CombineGlobally(sum), equal_to([11]), label="rows"
        )
    # The name says how many rows a file holds (the progress display reads it).
    files = sorted(tmp_path.glob("matched-*.arrow"))
    assert files and sum(int(f.name.rsplit("-", 1)[1][: -len("r.arrow")]) for f in files) == 11


@pytest.mark.parametrize(
    "value",
    [
        {"dog": 3, "hot dog": 0, "café": 7, "日本": 1, 'quote " and \\ backslash': 2},
        {"lone \ud800 surrogate": 1},  # orjson refuses it: the json module writes it escaped
        {"big": 2**70, "list": [1.5, None, True]},
    ],
)
def test_json_documents_read_back_as_the_same_value(value):
    from transforms.core.documents import json_document

    data = json_document(value)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data.decode("utf-8")) == value
    assert list(json.loads(data.decode("utf-8"))) == list(value)  # order kept: entry_counts.json is in metadata order


def test_write_json_files_writes_each_document_from_the_side_inputs_it_names(tmp_path):
    documents = {
        str(tmp_path / "sum.json"): (lambda a, b: {"sum": a + b}, ("a", "b")),
        str(tmp_path / "list.json"): (lambda values: sorted(values), ("values",)),
        str(tmp_path / "one.json"): (lambda a: {"a": a}, ("a",)),
    }
    with beam_test_pipeline() as pipeline:
        side_inputs = {
            "a": pipeline | "A" >> beam.Create([2]),
            "b": pipeline | "B" >> beam.Create([40]),
            "values": pipeline | "Values" >> beam.Create([[3, 1, 2]]),
        }
        written = pipeline | WriteJsonFiles(documents, side_inputs)
        assert_that(written, equal_to(sorted(documents)))
    assert json.loads((tmp_path / "sum.json").read_text()) == {"sum": 42}
    assert json.loads((tmp_path / "list.json").read_text()) == [1, 2, 3]
    assert json.loads((tmp_path / "one.json").read_text()) == {"a": 2}
