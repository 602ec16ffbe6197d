"""DataComp's filters through the command line, against an independent per-row reference.

The pool is generated (tests/datacomp_pool.py: parquet + npz, edge cases planted); the
reference (tests/datacomp_reference.py) is plain Python written from docs/datacomp.md,
sharing no code with the pipeline. Every kept set must be identical.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from datacomp_pool import write_pool
from datacomp_reference import load_bundled_model, reference_keep_sets

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("datacomp") / "pool")


@pytest.fixture(scope="module")
def model():
    return load_bundled_model()


def _asset_flags(pool, targets="ids") -> list[str]:
    return [
        "--imagenet_wnids",
        str(pool.imagenet_wnids_path),
        "--centroids",
        str(pool.centroids_path),
        "--target_clusters",
        str(pool.target_clusters_path if targets == "ids" else pool.imagenet_features_path),
    ]


def _run(pool, out, *flags) -> dict:
    argv = ["--input", str(pool.directory / "*.parquet"), "--output_dir", str(out), *flags]
    assert curate.run(argv) == 0
    return json.loads((out / "stats.json").read_text())


def _kept(out) -> set:
    return set(pq.read_table(out / "subset", columns=["key"]).column("key").to_pylist())


def _first_failed(out) -> dict:
    table = pq.read_table(out / "filtered")
    return dict(zip(table.column("key").to_pylist(), table.column("filter").to_pylist(), strict=True))


def _reference(pool, model, wordnet, filters, **options):
    centroids = np.load(pool.centroids_path)
    return reference_keep_sets(
        pool.rows(),
        model,
        filters=filters,
        wordnet_reader=wordnet,
        in21k=pool.in21k_offsets,
        centroids=centroids,
        targets=pool.targets,
        **options,
    )


def test_all_four_filters_on_two_workers_equal_the_reference_row_by_row(pool, model, wordnet, tmp_path):
    """Every record's fate (kept, or the first filter it fails) as the reference says;
    the image filter's targets computed in the pipeline from the ImageNet features."""
    out = tmp_path / "out"
    stats = _run(
        pool,
        out,
        "--input_preset",
        "datacomp",
        "--filter",
        "basic,text,clip_score,image",
        "--clip_score_fraction",
        "0.3",
        "--balance",
        "none",
        *_asset_flags(pool, targets="features"),
        *TWO_WORKERS,
    )
    expected = _reference(pool, model, wordnet, ("basic", "text", "clip_score", "image"), fraction=0.3)
    assert _kept(out) == expected["kept"]
    assert _first_failed(out) == expected["first_failed"]
    assert stats["clip_score_threshold"] == expected["threshold"]
    counted = {name: list(expected["first_failed"].values()).count(name) for name in stats["filtered_by_filter"]}
    assert stats["filtered_by_filter"] == counted and all(counted.values())
    assert stats["records_read"] == stats["records_rejected"] + stats["records_filtered"] + stats["records_accepted"]
    assert stats["records_read"] == pool.n_rows and stats["records_kept"] == len(expected["kept"])
    assert stats["lid_model"]["approximate"] is True and stats["lid_model"]["name"] == "lid.176.ftz"
    # Every hand-off carries the final keep set.
    uids = np.load(out / "subset_uids.npy")
    assert sorted(uids.tolist()) == sorted(divmod(int(uid, 16), 2**64) for uid in expected["kept"])
    listing = pq.read_table(out / "img2dataset", columns=["uid"]).column("uid").to_pylist()
    assert sorted(listing) == sorted(expected["kept"])
    assert "Filters" in (out / "report.html").read_text() and (out / "plots" / "filters.png").exists()


@pytest.mark.parametrize(
    "filters, flags, options",
    [
        ("basic", [], {}),
        ("text", [], {}),
        ("clip_score", ["--clip_score_fraction", "0.3"], {"fraction": 0.3}),
        ("clip_score", ["--clip_score_threshold", "0.31"], {"threshold": 0.31}),
        ("image", [], {}),
    ],
)
def test_each_filter_alone_keeps_the_reference_set(pool, model, wordnet, tmp_path, filters, flags, options):
    out = tmp_path / "out"
    assets = {
        "text": ["--imagenet_wnids", str(pool.imagenet_wnids_path)],
        "image": ["--centroids", str(pool.centroids_path), "--target_clusters", str(pool.target_clusters_path)],
    }.get(filters, [])
    stats = _run(pool, out, "--input_preset", "datacomp", "--filter", filters, "--balance", "none", *flags, *assets)
    expected = _reference(pool, model, wordnet, (filters,), **options)
    kept = _kept(out)
    assert kept == expected["kept"]
    assert 0 < len(kept) < pool.n_rows
    assert stats["filtered_by_filter"] == {filters: pool.n_rows - len(kept)}


def test_datacomp_1b_recipe_on_two_workers(pool, model, wordnet, tmp_path):
    """image ∩ CLIP L/14 top 30%: the threshold over the whole pool, then the image filter."""
    out = tmp_path / "out"
    stats = _run(
        pool,
        out,
        "--recipe",
        "datacomp-1b",
        "--centroids",
        str(pool.centroids_path),
        "--target_clusters",
        str(pool.target_clusters_path),
        *TWO_WORKERS,
    )
    expected = _reference(pool, model, wordnet, ("clip_score", "image"), fraction=0.3)
    assert _kept(out) == expected["kept"]
    assert stats["clip_score_fraction"] == 0.3 and stats["filters"] == ["clip_score", "image"]
    assert stats["balance"] == "none" and not (out / "matches").exists()


def test_filters_then_balancing_equal_balancing_the_filtered_pool(pool, tmp_path):
    """The stage sees only what the filters kept: same subset and counts as balancing a pool
    that holds only the records passing the filters."""
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog", "cat", "beach", "red", "photo", "car", "bird", "happy"]))
    balance = ["--metadata", str(metadata), "--threshold", "30", "--seed", "3"]
    filtered = tmp_path / "filtered"
    _run(pool, filtered, "--recipe", "datacomp-basic", "--balance", "metaclip", *balance)

    passed = set(pq.read_table(filtered / "matches", columns=["key"]).column("key").to_pylist())
    only_passing = tmp_path / "only_passing"
    only_passing.mkdir()
    for path in pool.parquet_paths:
        table = pq.read_table(path)
        keep = np.isin(np.asarray(table.column("uid").to_pylist()), list(passed))
        pq.write_table(table.filter(keep), only_passing / path.name)
    direct = tmp_path / "direct"
    argv = ["--input", str(only_passing / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(direct)]
    assert curate.run(argv + balance) == 0

    assert 0 < len(_kept(filtered)) < len(passed)
    assert _kept(filtered) == _kept(direct)
    assert (filtered / "entry_counts.json").read_text() == (direct / "entry_counts.json").read_text()
    assert pq.read_table(filtered / "matches").equals(pq.read_table(direct / "matches"))


def test_a_shard_whose_npz_has_other_rows_is_rejected_whole(tmp_path):
    pool = write_pool(tmp_path / "pool", shards=2, rows_per_shard=50)
    first = np.load(pool.npz_paths[0])
    np.savez(pool.npz_paths[0], **{name: first[name][:-1] for name in first.files})
    pool.npz_paths[1].unlink()
    out = tmp_path / "out"
    stats = _run(
        pool,
        out,
        "--input_preset",
        "datacomp",
        "--filter",
        "image",
        "--centroids",
        str(pool.centroids_path),
        "--target_clusters",
        str(pool.target_clusters_path),
        "--balance",
        "none",
    )
    assert stats["rejected_by_reason"] == {"embeddings_row_count_mismatch": 50, "embeddings_missing": 50}
    assert stats["files_rejected"] == 2 and stats["records_read"] == 100
    lines = [json.loads(line) for path in (out / "rejected").glob("*.jsonl") for line in path.read_text().splitlines()]
    mismatch = next(line for line in lines if line["reason"] == "embeddings_row_count_mismatch")
    assert mismatch["raw"]["npz_rows"] == 49 and mismatch["raw"]["parquet_rows"] == 50


BAD_STAGE_OPTIONS = [
    (["--filter", "bogus"], "--filter takes a comma-separated list of basic, text, clip_score, image; got 'bogus'"),
    (
        ["--filter", "clip_score"],
        "--filter clip_score needs one of --clip_score_fraction F or --clip_score_threshold T",
    ),
    (["--filter", "clip_score", "--clip_score_fraction", "1.5"], "--clip_score_fraction must be between 0 and 1"),
    (["--filter", "clip_score", "--clip_score_threshold", "nan"], "--clip_score_threshold must be a finite number"),
    (["--filter", "basic", "--clip_score_fraction", "0.3"], "--clip_score_fraction/--clip_score_threshold are for"),
    (["--filter", "text"], "--filter text needs --imagenet_wnids FILE"),
    (["--filter", "image"], "--filter image needs --centroids FILE.npy and --target_clusters FILE"),
    (["--recipe", "datacomp-2b"], "--recipe must be one of datacomp-basic"),
    (
        ["--balance", "none"],
        "--balance none without --dedup, --allow_uids, --deny_uids, --where, --filter or --select "
        "would keep every record",
    ),
    (["--filter", "basic", "--balance", "none", "--metadata", "{md}"], "--metadata is for MetaCLIP balancing"),
    (["--recipe", "datacomp-basic", "--metadata", "{md}"], "add --balance metaclip to balance the filtered pool"),
    (["--filter", "basic"], "--metadata is required"),
    (["--recipe", "datacomp-basic", "--width_field", "w"], "--width_field 'w' is not a column of the input"),
    (
        ["--recipe", "datacomp-clip-l14-30", "--clip_score_field", "sha256"],
        "--clip_score_field 'sha256' must be a float",
    ),
    (["--recipe", "datacomp-basic", "--lid_model", "/nonexistent/lid.bin"], "--lid_model: "),
    (["--recipe", "datacomp-text", "--imagenet_wnids", "{bad_wnids}"], "line 2"),
    (["--recipe", "datacomp-image", "--centroids", "{narrow}", "--target_clusters", "{targets}"], "16-d"),
    (["--recipe", "datacomp-image", "--centroids", "{centroids}", "--target_clusters", "{far}"], "outside [0, 40)"),
    (
        ["--recipe", "datacomp-image", "--image_embedding_key", "l14", "--centroids", "{centroids}"]
        + ["--target_clusters", "{targets}"],
        "--image_embedding_key 'l14' is not a 2-D array of",
    ),
    (
        ["--recipe", "datacomp-image", "--embeddings", "columns", "--centroids", "{centroids}"]
        + ["--target_clusters", "{targets}"],
        "--image_embedding_key 'l14_img' is not a column of the input",
    ),
]


@pytest.mark.parametrize("flags, message", BAD_STAGE_OPTIONS, ids=[" ".join(f) for f, _ in BAD_STAGE_OPTIONS])
def test_bad_stage_options_fail_before_any_work_with_one_line(pool, tmp_path, capsys, flags, message):
    files = {
        "md": tmp_path / "md.json",
        "bad_wnids": tmp_path / "wnids.txt",
        "narrow": tmp_path / "narrow.npy",
        "far": tmp_path / "far.txt",
        "centroids": pool.centroids_path,
        "targets": pool.target_clusters_path,
    }
    files["md"].write_text('["dog"]')
    files["bad_wnids"].write_text("n02084071\nn0208407x\n")
    np.save(files["narrow"], np.ones((40, 16), np.float32))
    files["far"].write_text("3\n40\n")
    out = tmp_path / "out"
    argv = ["--input", str(pool.directory / "*.parquet"), "--output_dir", str(out)]
    argv += [flag.format(**files) for flag in flags]
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_short_uid_is_filtered_like_any_record_and_refused_for_subset_uids(tmp_path, model, capsys):
    """A uid of fewer than 32 hex digits: the filters decide on it as on any record; DataComp's
    subset_uids.npy cannot hold it, so --handoff datacomp refuses the run with one line."""
    pool = write_pool(tmp_path / "pool", shards=1, rows_per_shard=60)
    table = pq.read_table(pool.parquet_paths[0])
    uids = table.column("uid").to_pylist()
    uids[0] = "1a"
    pq.write_table(table.set_column(0, "uid", pa.array(uids)), pool.parquet_paths[0])
    out = tmp_path / "out"
    _run(pool, out, "--recipe", "datacomp-basic", "--handoff", "img2dataset")
    rows = pool.rows()
    rows[0]["uid"] = "1a"
    expected = reference_keep_sets(rows, model, filters=("basic",))
    assert _kept(out) == expected["kept"] and ("1a" in expected["kept"] or _first_failed(out)["1a"] == "basic")
    refused = tmp_path / "refused"
    argv = ["--input", str(pool.directory / "*.parquet"), "--recipe", "datacomp-basic", "--output_dir", str(refused)]
    capsys.readouterr()  # the first run's own stderr (a progress line when it takes over 10 s) is not this one's
    assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert "'1a'" in err and "32 hex digits" in err and err.count("\n") == 1


def test_embeddings_stay_with_their_rows_when_rows_between_them_are_rejected(tmp_path, model):
    """Rejected captions leave holes in a batch's rows: every kept record's image embedding
    must still be its own row of the npz (row order, not batch position)."""
    pool = write_pool(tmp_path / "pool", shards=2, rows_per_shard=300)
    rows = pool.rows()
    rejected = set()
    for shard, path in enumerate(pool.parquet_paths):
        table = pq.read_table(path)
        texts = table.column("text").to_pylist()
        for i in range(0, len(texts), 7):
            texts[i] = "   "  # empty after strip(): rejected as empty_text
            rejected.add(pool.uids[shard][i])
        pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), path)
    out = tmp_path / "out"
    stats = _run(
        pool,
        out,
        "--recipe",
        "datacomp-image",
        "--centroids",
        str(pool.centroids_path),
        "--target_clusters",
        str(pool.target_clusters_path),
        "--batch_size",
        "64",
    )
    assert stats["rejected_by_reason"] == {"empty_text": len(rejected)}
    expected = _reference_without(pool, model, rejected, rows)
    assert _kept(out) == expected and len(expected) > 20


def _reference_without(pool, model, rejected, rows) -> set:
    remaining = [row for row in rows if row["uid"] not in rejected]
    centroids = np.load(pool.centroids_path)
    return reference_keep_sets(remaining, model, filters=("image",), centroids=centroids, targets=pool.targets)["kept"]


@pytest.mark.parametrize("layout", ["columns", "compressed npz"])
def test_image_filter_reads_embeddings_from_columns_or_a_deflated_npz(tmp_path, model, layout):
    pool = write_pool(
        tmp_path / "pool",
        shards=2,
        rows_per_shard=400,
        embeddings="columns" if layout == "columns" else "npz",
        compressed_npz=layout == "compressed npz",
    )
    out = tmp_path / "out"
    flags = ["--embeddings", "columns"] if layout == "columns" else []
    assets = ["--centroids", str(pool.centroids_path), "--target_clusters", str(pool.target_clusters_path)]
    _run(pool, out, "--recipe", "datacomp-image", *assets, *flags, "--batch_size", "128")
    centroids = np.load(pool.centroids_path)
    expected = reference_keep_sets(pool.rows(), model, filters=("image",), centroids=centroids, targets=pool.targets)
    assert _kept(out) == expected["kept"] and 0 < len(expected["kept"]) < pool.n_rows
    subset = pq.read_table(out / "subset")
    # Columns are input columns: passed through to the subset like any other; npz members are not.
    assert ("l14_img" in subset.column_names) == (layout == "columns")
