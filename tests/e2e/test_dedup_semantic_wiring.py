"""--dedup semantic's wiring, with a stand-in for transforms.beam.semdedup.SemanticDedup.

The semantic kind's transform is built apart (its own tests check SemDeDup's rule); here a
stand-in module takes its place in sys.modules (in-process runs only) to check what the
stage gives it and does with what it returns: the flags as keyword arguments, the image
embeddings attached to the batches under the column it is told, the survivors of url and
text as its input, its duplicates in duplicates/, its scores in semdedup/scores/, its
figures in stats.json, the accounting. And the centroid file's checks, before any work.
"""

from __future__ import annotations

import json
import sys
import types

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from covariance_pool import write_covariance_pool
from transforms.beam.dedup_kinds import DUPLICATES_SCHEMA, KindOutput
from transforms.core.columns import KEY

CALLS: list = []  # the stand-in's keyword arguments, and the columns its input batches had
CURVE = [[1e-4, 0.0], [0.01, 0.25], [0.2, 0.5]]


def _is_duplicate(batch: pa.RecordBatch) -> np.ndarray:
    return np.array([key.endswith(("1", "5", "9")) for key in batch.column(KEY).to_pylist()], dtype=bool)


def _survivors(batch):
    CALLS.append(("columns", tuple(batch.schema.names)))
    return batch.filter(pa.array(~_is_duplicate(batch)))


def _duplicates(batch):
    keys = batch.column(KEY).filter(pa.array(_is_duplicate(batch)))
    n = len(keys)
    return pa.RecordBatch.from_arrays(
        [keys, pa.array(["semantic"] * n), pa.array(["its-first"] * n), pa.array(np.full(n, 0.995))],
        schema=DUPLICATES_SCHEMA,
    )


def _scores(batch):
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [batch.column(KEY), pa.array(np.zeros(n, np.int64)), pa.array(np.full(n, 0.5))],
        names=["key", "cluster", "score"],
    )


class _StandIn(beam.PTransform):
    def __init__(self, **kwargs):
        super().__init__()
        CALLS.append(("kwargs", kwargs))
        self.eps = kwargs["eps"]

    def expand(self, batches):
        judged = batches | "Judged" >> beam.Map(lambda b: b.num_rows) | "SumJudged" >> beam.CombineGlobally(sum)
        removed = (
            batches
            | "Removed" >> beam.Map(lambda b: int(_is_duplicate(b).sum()))
            | "SumRemoved" >> beam.CombineGlobally(sum)
        )
        eps = self.eps
        figures = judged | "Figures" >> beam.Map(
            lambda j, r: {"judged": j, "deduplicated": r, "semdedup": {"clusters": 3, "eps": eps, "eps_curve": CURVE}},
            beam.pvalue.AsSingleton(removed),
        )
        return KindOutput(
            batches | "Survivors" >> beam.Map(_survivors),
            batches | "Duplicates" >> beam.Map(_duplicates),
            figures,
            batches | "Scores" >> beam.Map(_scores),
        )


@pytest.fixture
def stand_in(monkeypatch):
    module = types.ModuleType("transforms.beam.semdedup")
    module.SemanticDedup = _StandIn
    monkeypatch.setitem(sys.modules, "transforms.beam.semdedup", module)
    CALLS.clear()
    return CALLS


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    pool = write_covariance_pool(tmp_path_factory.mktemp("semantic") / "pool", rows=300, dim=8)
    rng = np.random.default_rng(3)
    np.save(pool.directory / "centroids.npy", rng.normal(size=(4, 8)).astype(np.float32))
    return pool


def _run(pool, out, *flags) -> int:
    argv = ["--input", str(pool.directory / "*.parquet"), "--input_preset", "datacomp", "--balance", "none"]
    return curate.run([*argv, "--handoff", "none", "--num_shards", "2", "--output_dir", str(out), *flags])


def test_the_stage_hands_the_semantic_kind_its_flags_embeddings_and_writes_what_it_returns(pool, tmp_path, stand_in):
    out = tmp_path / "out"
    flags = ["--dedup", "semantic,text", "--semdedup_centroids", str(pool.directory / "centroids.npy")]
    assert _run(pool, out, *flags, "--semdedup_eps", "0.02", "--semdedup_keep", "easy", "--seed", "9") == 0
    (kwargs,) = [value for name, value in stand_in if name == "kwargs"]
    assert kwargs == {
        "centroids_path": str(pool.directory / "centroids.npy"),
        "clusters": None,
        "iterations": 20,
        "eps": 0.02,
        "keep": "easy",
        "max_cluster_size": 50_000,
        "seed": 9,
        "embedding_column": "__embedding.l14_img",
        "centroids_output": str(out / "semdedup" / "centroids.npy"),
        "spill_dir": kwargs["spill_dir"],
    }
    columns = {column for name, value in stand_in if name == "columns" for column in value}
    assert "__embedding.l14_img" in columns and "__embedding.l14_txt" not in columns
    stats = json.loads((out / "stats.json").read_text())
    removed = stats["deduplicated_by_kind"]
    assert list(removed) == ["text", "semantic"]  # the order they run in, whatever the flag's order
    duplicates = pq.read_table(out / "duplicates").to_pylist()
    semantic = [d for d in duplicates if d["kind"] == "semantic"]
    assert len(semantic) == removed["semantic"] > 0 and stats["judged_by_kind"]["semantic"] == 300 - removed["text"]
    assert {(d["duplicate_of"], d["similarity"], d["caption"]) for d in semantic} == {("its-first", 0.995, None)}
    assert stats["semdedup"] == {"clusters": 3, "eps": 0.02, "eps_curve": CURVE}
    assert pq.read_table(out / "semdedup" / "scores").num_rows == stats["judged_by_kind"]["semantic"]
    assert stats["accounting"]["deduplicated"] == sum(removed.values()) == len(duplicates)
    subset = set(pq.read_table(out / "subset").column("key").to_pylist())
    assert not subset & {d["key"] for d in duplicates}
    assert (out / "plots" / "semdedup_eps.png").exists()


def test_fitted_centroids_are_asked_for_with_clusters_and_iterations(pool, tmp_path, stand_in):
    out = tmp_path / "out"
    assert _run(pool, out, "--dedup", "semantic", "--semdedup_clusters", "5", "--semdedup_iterations", "7") == 0
    (kwargs,) = [value for name, value in stand_in if name == "kwargs"]
    assert (kwargs["centroids_path"], kwargs["clusters"], kwargs["iterations"], kwargs["keep"]) == (None, 5, 7, "hard")


@pytest.mark.parametrize(
    "content, message",
    [
        (np.zeros((3, 5), np.float32) + 1, "centroids are 5-d but the image embeddings are 8-d"),
        (np.full((3, 8), np.nan, np.float32), "row 0 holds NaN or infinity"),
        (np.vstack([np.ones((2, 8)), np.zeros((1, 8))]).astype(np.float32), "row 2 is all zeros"),
        (np.ones(8, np.float32), "must hold a K x d float array"),
        (b"not a numpy file", "is not a readable .npy file"),
    ],
)
def test_bad_centroid_files_exit_2_with_one_line_before_any_work(pool, tmp_path, capsys, stand_in, content, message):
    path = tmp_path / "centroids.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    assert _run(pool, tmp_path / "out", "--dedup", "semantic", "--semdedup_centroids", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --semdedup_centroids {path}") and message in err[0], err
    assert not [value for name, value in stand_in if name == "kwargs"]  # refused before the pipeline was built
