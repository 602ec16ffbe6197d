"""Cross-covariance selection through the command line, against an independent float64 greedy.

The pool has planted pseudo-classes (tests/covariance_pool.py); the reference
(tests/covariance_reference.py) recomputes every gain from the d x d matrices and shares
no code with the pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from covariance_pool import write_covariance_pool
from covariance_reference import reference_selection
from transforms.core.hashing import key_hashes
from transforms.selection.local import select_in_memory

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _run(directory, out, *flags) -> dict:
    argv = ["--input", str(directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out), *flags]
    assert curate.run(argv) == 0
    return json.loads((out / "stats.json").read_text())


def _kept(out) -> set:
    return set(pq.read_table(out / "subset", columns=["key"]).column("key").to_pylist())


SELECT = ["--balance", "none", "--select", "covariance", "--select_fraction", "0.3", "--seed", "5"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_covariance_pool(tmp_path_factory.mktemp("covariance") / "pool")


@pytest.fixture(scope="module")
def reference(pool):
    return reference_selection(pool.keys, pool.x, pool.y, 0.3, 5, class_embeddings=pool.class_embeddings)


@pytest.fixture(scope="module")
def two_worker_run(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    stats = _run(pool.directory, out, *SELECT, "--class_embeddings", str(pool.class_embeddings_path), *TWO_WORKERS)
    return out, stats


def test_two_workers_keep_the_reference_set_with_its_budgets(pool, reference, two_worker_run):
    out, stats = two_worker_run
    assert _kept(out) == reference["kept"]
    selection = stats["selection"]
    budgets = {row["class"]: row["budget"] for row in selection["per_class"]}
    assert budgets == reference["budgets"]
    assert all(row["selected"] == row["budget"] and row["parts"] == 1 for row in selection["per_class"])
    assert selection["records_in"] == len(pool.keys) and selection["records_selected"] == round(0.3 * len(pool.keys))
    assert stats["records_kept"] == len(reference["kept"]) and selection["classes"] == 5
    assert 0.9 < selection["objective_ratio"] <= 1.0 and 0.9 < selection["pool_objective_ratio"] <= 1.0
    uids = np.load(out / "subset_uids.npy")
    assert len(uids) == len(reference["kept"])
    page = (out / "report.html").read_text()
    assert "Selection (cross-covariance)" in page and "Mean image-caption cosine" in page
    assert (out / "plots" / "selection.png").exists() and not (out / "entry_counts.json").exists()


def test_rows_permuted_and_split_otherwise_on_one_worker_give_the_same_subset(pool, two_worker_run, tmp_path):
    out, stats = two_worker_run
    order = np.random.default_rng(1).permutation(len(pool.keys))
    moved = write_covariance_pool(tmp_path / "pool", order=order, shards=7)
    assert [pool.keys[i] for i in order] == moved.keys
    again = tmp_path / "out"
    flags = ["--class_embeddings", str(moved.class_embeddings_path), "--batch_size", "97"]
    other = _run(moved.directory, again, *SELECT, *flags)
    assert _kept(again) == _kept(out)
    assert other["selection"] == stats["selection"]


def test_the_stage_sees_only_what_balancing_kept(pool, tmp_path):
    """--select after MetaCLIP balancing: the selection of the balanced subset, as the
    reference computes it on the records balancing kept."""
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["photo", "number", "1", "2", "3", "4", "5"]))
    balance_only = tmp_path / "balanced"
    _run(pool.directory, balance_only, "--metadata", str(metadata), "--threshold", "300", "--seed", "5")
    balanced = _kept(balance_only)
    assert 0 < len(balanced) < len(pool.keys)
    out = tmp_path / "selected"
    flags = ["--metadata", str(metadata), "--threshold", "300", "--seed", "5", "--select", "covariance"]
    flags += ["--select_fraction", "0.25", "--class_embeddings", str(pool.class_embeddings_path)]
    stats = _run(pool.directory, out, *flags)
    rows = [i for i, key in enumerate(pool.keys) if key in balanced]
    expected = reference_selection(
        [pool.keys[i] for i in rows], pool.x[rows], pool.y[rows], 0.25, 5, class_embeddings=pool.class_embeddings
    )
    assert _kept(out) == expected["kept"]
    assert stats["selection"]["records_in"] == len(balanced)
    assert stats["records_kept"] == len(expected["kept"]) == round(0.25 * len(balanced))
    # The match index still lists every accepted record; entry_counts_kept counts the final subset.
    assert pq.read_table(out / "matches").num_rows == len(pool.keys)


def test_large_classes_split_into_parts_as_the_in_process_selection_splits_them(pool, tmp_path):
    """Parts by tie key (seed and key), each part's budget by largest remainder, each part's
    target the class mean times its budget: as transforms.selection.local composes them."""
    out = tmp_path / "out"
    stats = _run(pool.directory, out, *SELECT, "--max_class_size", "200")
    (row,) = stats["selection"]["per_class"]
    assert row["parts"] == 12 and row["selected"] == row["budget"] == 720
    expected = select_in_memory(key_hashes(pool.keys), pool.x, pool.y, 0.3, 5, max_class_size=200)
    assert _kept(out) == {pool.keys[i] for i in expected.kept}
    unsplit = reference_selection(pool.keys, pool.x, pool.y, 0.3, 5)["kept"]
    assert _kept(out) != unsplit  # the split is an approximation: it changes the picks
