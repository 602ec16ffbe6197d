"""Record accounting end to end: every record read has one fate, counted where it happens.

Real runs on the in-process and two-worker runners (MetaCLIP; --balance none with a uid
list filter, a covariance selection and bad vectors) give stats.json's `accounting`,
checked against the outputs; a stage or a writer that silently loses one record fails
the run with one line and leaves no stats.json (transforms.core.accounting).
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import beam_pipeline.stages as stages_module
from beam_pipeline import curate
from beam_pipeline.stages.base import Stage, StageOutput
from covariance_pool import write_covariance_pool
from transforms.beam.write import ParquetShards
from transforms.core.columns import KEY

RUNNERS = {"in_process": [], "two_workers": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}
# Rows of shard 1's npz made bad: (member, row, value); the records hold them at these rows.
BAD_VECTORS = [("l14_img", 3, np.nan), ("l14_txt", 10, np.inf), ("l14_img", 20, 0.0), ("l14_txt", 30, "half-nan")]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """600 DataComp-style records in 3 shards with npz embeddings, four bad vectors in shard 1."""
    pool = write_covariance_pool(tmp_path_factory.mktemp("accounting") / "pool", rows=600, dim=8)
    npz = pool.parquet_paths[1].with_suffix(".npz")
    members = dict(np.load(npz))
    for member, row, value in BAD_VECTORS:
        if value == "half-nan":
            members[member][row, ::2] = np.nan
        else:
            members[member][row] = value
    np.savez(npz, **members)
    (pool.directory / "metadata.json").write_text(json.dumps(["photo", "number 1", "number 2", "number 33"]))
    allowed = pool.keys[::3] + pool.keys[1::3]  # two records in three
    (pool.directory / "allowed.txt").write_text("\n".join(allowed) + "\n")
    return pool


def _run(pool, out, *flags) -> int:
    argv = ["--input", str(pool.directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out)]
    return curate.run([*argv, "--num_shards", "4", *flags])


def _rows(directory) -> int:
    return pq.read_table(directory).num_rows if directory.exists() else 0


METACLIP = ["--threshold", "40"]
FILTER_SELECT = ["--balance", "none", "--select", "covariance", "--select_fraction", "0.5", "--seed", "3"]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_metaclip_run_accounts_for_every_record(pool, tmp_path, runner):
    out = tmp_path / "out"
    assert _run(pool, out, "--metadata", str(pool.directory / "metadata.json"), *METACLIP, *RUNNERS[runner]) == 0
    stats = json.loads((out / "stats.json").read_text())
    accounting = stats["accounting"]
    assert list(stats)[-1] == "accounting"
    assert list(accounting) == ["read", "rejected", "balanced_out", "kept"]
    assert accounting["read"] == 600 and accounting["rejected"] == 0  # no stage reads the bad vectors
    assert accounting["kept"] == stats["records_kept"] == _rows(out / "subset") < 600
    assert accounting["balanced_out"] == 600 - accounting["kept"] == _rows(out / "matches") - accounting["kept"]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_filter_and_select_run_accounts_for_every_record_and_rejects_bad_vectors(pool, tmp_path, runner):
    out = tmp_path / "out"
    flags = [*FILTER_SELECT, "--allow_uids", str(pool.directory / "allowed.txt"), *RUNNERS[runner]]
    assert _run(pool, out, *flags) == 0
    stats = json.loads((out / "stats.json").read_text())
    accounting = stats["accounting"]
    assert list(accounting) == ["read", "rejected", "filtered", "not_selected", "kept"]
    assert sum(value for name, value in accounting.items() if name != "read") == accounting["read"] == 600
    rejected = [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl")) for line in path.open()]
    bad_keys = {pool.keys[200 + row] for _, row, _ in BAD_VECTORS}  # shard 1 starts at row 200
    assert {(r["raw"]["key"], r["raw"]["embedding"], r["reason"]) for r in rejected} == {
        (pool.keys[203], "l14_img", "bad_embedding_vector"),
        (pool.keys[210], "l14_txt", "bad_embedding_vector"),
        (pool.keys[220], "l14_img", "zero_embedding_vector"),
        (pool.keys[230], "l14_txt", "bad_embedding_vector"),
    }
    assert accounting["rejected"] == stats["records_rejected"] == 4
    allowed = set(pool.keys[::3] + pool.keys[1::3])
    assert accounting["filtered"] == _rows(out / "filtered") == len(set(pool.keys) - allowed - bad_keys)
    assert accounting["kept"] == stats["records_kept"] == _rows(out / "subset")
    assert accounting["not_selected"] == len(allowed - bad_keys) - accounting["kept"] > 0


class _LoseOneRecord(Stage):
    """A test-only middle stage that silently loses the record with key LOST (no `dropped`)."""

    name = "LoseOne"
    lost = ""

    @classmethod
    def used(cls, args) -> bool:
        return True

    @classmethod
    def configure(cls, args, inputs) -> "_LoseOneRecord":
        return cls()

    def apply(self, batches, run) -> StageOutput:
        lost = self.lost

        def lose(batch: pa.RecordBatch) -> pa.RecordBatch:
            return batch.filter(pa.compute.not_equal(batch.column(KEY), lost))

        return StageOutput(batches | self.name >> beam.Map(lose))


def test_a_stage_that_loses_one_record_fails_the_run_with_one_line(pool, tmp_path, monkeypatch, capsys):
    lose = type("LoseOne", (_LoseOneRecord,), {"lost": pool.keys[123]})
    stages = list(stages_module.STAGES)
    monkeypatch.setattr(stages_module, "STAGES", (*stages[:2], lose, *stages[2:]))  # after the uid filters
    out = tmp_path / "out"
    assert _run(pool, out, "--metadata", str(pool.directory / "metadata.json"), *METACLIP) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: records unaccounted for: LoseOne took 600 != handed on 599 + dropped 0"
    assert not (out / "stats.json").exists()


def test_a_writer_that_loses_one_kept_record_fails_the_run(pool, tmp_path, monkeypatch, capsys):
    split = ParquetShards.split

    def split_losing_one(self, batch, num_shards):
        if self._kept_only and pool.keys[0] in batch.column(KEY).to_pylist():
            batch = batch.filter(pa.compute.not_equal(batch.column(KEY), pool.keys[0]))
        return split(self, batch, num_shards)

    monkeypatch.setattr(ParquetShards, "split", split_losing_one)
    out = tmp_path / "out"
    assert _run(pool, out, "--metadata", str(pool.directory / "metadata.json"), "--threshold", "100000") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # The datacomp preset hands off img2dataset/ too: its writer lost the record as well.
    assert last == (
        "error: records unaccounted for: subset/ holds 599 rows != kept 600; img2dataset/ holds 599 rows != kept 600"
    )
    assert not (out / "stats.json").exists()
