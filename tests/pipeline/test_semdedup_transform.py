"""SemanticDedup (transforms/beam/semdedup.py) against the in-memory SemDeDup, record for record.

transforms.dedup.local.semdedup_in_memory is the pure composition (itself checked against a
SemDeDup written from the spec, tests/unit/test_semdedup_reference.py); the transform must
give the very same survivors, duplicates (kind, duplicate_of, similarity bit for bit), per
record scores and eps curve: whatever the batch size, the order of records and how they
are split over batches and files, with or without spill files, split clusters or not, in
process or on two worker processes. The fit: FitCentroids' centroids are the bits of
kmeans.fit_centroids on every runner and worker count.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import semdedup_reference as ref
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from semdedup_pool import COLUMN, EPS, batches_of, planted_pool

from beam_pipeline.curation.runners import make_runner
from transforms.beam.dedup_kinds import DUPLICATES_SCHEMA
from transforms.beam.semdedup import SemanticDedup
from transforms.beam.semdedup_fit import FitCentroids
from transforms.dedup.kmeans import fit_centroids
from transforms.dedup.local import semdedup_in_memory
from transforms.dedup.pairwise import removed_fraction
from transforms.dedup.semdedup_stage import DUPLICATES_SCHEMA as PURE_DUPLICATES_SCHEMA
from transforms.dedup.semdedup_stage import eps_grid

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _expected(x, keys, files, rows, **kw):
    """(survivor keys, duplicate rows, score rows, local result) of semdedup_in_memory."""
    got = semdedup_in_memory(x, keys, files, rows, **kw)
    survivors = sorted(k for k, d in zip(keys, got.duplicate, strict=True) if not d)
    dups = sorted(
        (keys[i], "semantic", keys[got.duplicate_of[i]], float(got.score[i])) for i in np.flatnonzero(got.duplicate)
    )
    scores = sorted(
        (keys[i], int(got.cluster[i]), None if np.isinf(got.score[i]) else float(got.score[i]))
        for i in range(len(keys))
    )
    return survivors, dups, scores, got


def _rows(pcoll, label, fields):
    return pcoll | label >> beam.FlatMap(lambda b: [tuple(r[f] for f in fields) for r in b.to_pylist()])


@pytest.mark.parametrize(
    ("seed", "keep", "cap", "batch_rows", "shuffled", "spill"),
    [
        (0, "hard", None, 64, False, False),
        (0, "hard", None, 7, True, True),
        (0, "hard", None, 1000, True, False),
        (1, "easy", 40, 50, True, False),
        (2, "hard", 25, 13, False, True),
    ],
)
def test_transform_equals_the_in_memory_semdedup(seed, keep, cap, batch_rows, shuffled, spill, tmp_path):
    x, keys, files, rows, centroids = planted_pool(seed)
    np.save(tmp_path / "c.npy", centroids)
    survivors, dups, scores, got = _expected(
        x, keys, files, rows, seed=seed, centroids=centroids, eps=EPS, keep=keep, max_cluster_size=cap
    )
    spec = ref.semdedup(
        x, keys, list(zip(files, rows, strict=True)), centroids, seed=seed, eps=EPS, keep=keep, max_cluster_size=cap
    )
    assert [i for i, r in enumerate(spec) if r["duplicate"]] == np.flatnonzero(got.duplicate).tolist()
    order = np.random.default_rng(seed).permutation(len(x)) if shuffled else None
    batches = batches_of(x, keys, files, rows, batch_rows, order)
    grid = eps_grid(EPS)
    curve = removed_fraction(got.score, grid)

    def check_figures(figures):
        (fig,) = figures
        assert (fig["deduplicated"], fig["judged"]) == (len(dups), len(keys))
        sd = fig["semdedup"]
        assert sd["centroids"] == "given" and sd["clusters"] == len(centroids) and sd["keep"] == keep
        assert sd["largest_cluster"] == int(np.bincount(got.cluster).max())
        assert sd["parts_split"] == got.clusters_split
        assert [e for e, _ in sd["eps_curve"]] == grid.tolist()
        assert [f for _, f in sd["eps_curve"]] == curve.tolist()

    with TestPipeline() as pipeline:
        out = (
            pipeline
            | beam.Create(batches, reshuffle=False)
            | SemanticDedup(
                centroids_path=str(tmp_path / "c.npy"), eps=EPS, keep=keep, max_cluster_size=cap, seed=seed,
                embedding_column=COLUMN, centroids_output=str(tmp_path / "used.npy"),
                spill_dir=str(tmp_path / "spill") if spill else None,
            )
        )  # fmt: skip
        assert_that(_rows(out.survivors, "SurvivorKeys", ["key"]) | beam.Map(lambda r: r[0]), equal_to(survivors))
        schemas = out.survivors | "SchemaOk" >> beam.Map(lambda b: b.schema.equals(batches[0].schema))
        assert_that(schemas | beam.Filter(lambda ok: not ok), equal_to([]), label="SameSchema")
        assert_that(
            _rows(out.duplicates, "DupRows", ["key", "kind", "duplicate_of", "similarity"]),
            equal_to(dups),
            label="Dups",
        )
        assert_that(_rows(out.scores, "ScoreRows", ["key", "cluster", "score"]), equal_to(scores), label="Scores")
        assert_that(out.figures, check_figures, label="Figures")
    assert np.array_equal(np.load(tmp_path / "used.npy"), centroids)


def test_survivors_keep_every_column_and_value():
    x, keys, files, rows, centroids = planted_pool(3)
    _, _, _, got = _expected(x, keys, files, rows, seed=3, centroids=centroids, eps=EPS)
    batches = batches_of(x, keys, files, rows, 40)
    table = pa.Table.from_batches(batches)
    want = [tuple(r.values()) for r, d in zip(table.to_pylist(), got.duplicate, strict=True) if not d]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, TestPipeline() as pipeline:
        np.save(f"{tmp}/c.npy", centroids)
        out = pipeline | beam.Create(batches) | SemanticDedup(f"{tmp}/c.npy", seed=3, embedding_column=COLUMN)
        assert_that(out.survivors | beam.FlatMap(lambda b: [tuple(r.values()) for r in b.to_pylist()]), equal_to(want))


def test_the_duplicates_schema_restated_without_beam_is_the_kinds_schema():
    assert PURE_DUPLICATES_SCHEMA.equals(DUPLICATES_SCHEMA)


def _run_to_files(batches, directory, flags, **kwargs) -> dict:
    """The transform on `flags`' runner; its outputs as sorted JSON-able lists."""
    options = PipelineOptions(list(flags))
    path = str(directory)

    def dump(pcoll, name):
        def write(items):
            import json as _json
            import pathlib

            pathlib.Path(path, name + ".json").write_text(_json.dumps(sorted(items, key=repr)))

        _ = pcoll | f"{name}List" >> beam.combiners.ToList() | f"{name}Write" >> beam.Map(write)

    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        out = pipeline | beam.Create(batches) | beam.Reshuffle() | SemanticDedup(**kwargs)
        dump(out.survivors | "SK" >> beam.FlatMap(lambda b: b.column("key").to_pylist()), "survivors")
        dump(out.duplicates | "DR" >> beam.FlatMap(lambda b: [list(r.values()) for r in b.to_pylist()]), "duplicates")
        dump(out.scores | "SR" >> beam.FlatMap(lambda b: [list(r.values()) for r in b.to_pylist()]), "scores")
        dump(out.figures, "figures")
    return {
        n: json.loads((directory / f"{n}.json").read_text()) for n in ("survivors", "duplicates", "scores", "figures")
    }


@pytest.mark.parametrize("fitted", [False, True])
def test_two_worker_processes_equal_in_process(fitted, tmp_path):
    x, keys, files, rows, centroids = planted_pool(4)
    np.save(tmp_path / "c.npy", centroids)
    given = {"clusters": 5, "iterations": 6} if fitted else {"centroids_path": str(tmp_path / "c.npy")}
    common = dict(eps=EPS, max_cluster_size=40, seed=4, embedding_column=COLUMN, **given)
    runs = {}
    for name, flags, batch_rows in (("in_process", [], 64), ("two_workers", TWO_WORKERS, 23)):
        (tmp_path / name).mkdir()
        runs[name] = _run_to_files(
            batches_of(x, keys, files, rows, batch_rows), tmp_path / name, flags,
            spill_dir=str(tmp_path / name / "spill"), centroids_output=str(tmp_path / name / "centroids.npy"), **common,
        )  # fmt: skip
    assert runs["two_workers"] == runs["in_process"]
    local_kw = {"clusters": 5, "iterations": 6} if fitted else {"centroids": centroids}
    survivors, dups, _, got = _expected(x, keys, files, rows, seed=4, eps=EPS, max_cluster_size=40, **local_kw)
    assert runs["in_process"]["survivors"] == survivors
    assert [tuple(d) for d in runs["in_process"]["duplicates"]] == dups
    for name in runs:
        assert np.array_equal(np.load(tmp_path / name / "centroids.npy"), got.centroids)
    assert runs["in_process"]["figures"][0]["semdedup"]["centroids"] == ("fitted" if fitted else "given")


@pytest.mark.parametrize(("k", "iterations", "batch_rows"), [(6, 20, 31), (4, 2, 100), (9, 20, 7)])
def test_beam_fit_is_bit_identical_to_fit_centroids(k, iterations, batch_rows, tmp_path):
    x, keys, files, rows, _ = planted_pool(k, n_base=200)
    want = fit_centroids(x, keys, files, rows, k=k, seed=k, iterations=iterations)
    plain = ref.spherical_kmeans(x, keys, list(zip(files, rows, strict=True)), k=k, seed=k, iterations=iterations)
    np.testing.assert_allclose(want.centroids, plain, rtol=0, atol=1e-12)
    order = np.random.default_rng(k).permutation(len(x))

    def check(states):
        (state,) = states
        assert state.centroids.tobytes() == want.centroids.tobytes()
        assert (state.iterations, state.done) == (want.iterations, want.converged)

    with TestPipeline() as pipeline:
        state = (
            pipeline
            | beam.Create(batches_of(x, keys, files, rows, batch_rows, order))
            | FitCentroids(k, iterations, COLUMN, k, str(tmp_path / "spill"))
        )
        assert_that(state, check)
