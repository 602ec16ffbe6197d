"""DataComp and img2dataset hand-offs from parquet pools, through the command line."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from helpers import write_jsonl


def _datacomp_pool(root, rng):
    """DataComp pool metadata: uid, url, text and a few other columns, two parquet files."""
    words = ["dog", "cat", "photo", "zebu"]
    uids = []
    for part in range(2):
        rows = 60
        batch_uids = [f"{rng.getrandbits(128):032x}" for _ in range(rows)]
        uids += batch_uids
        pq.write_table(
            pa.table(
                {
                    "uid": batch_uids,
                    "url": [f"https://img.example/{u}.jpg" for u in batch_uids],
                    "text": [" ".join(rng.choice(words) for _ in range(3)) for _ in range(rows)],
                    "original_width": pa.array([rng.randrange(64, 1024) for _ in range(rows)], pa.int64()),
                    "clip_b32_similarity_score": pa.array([rng.random() for _ in range(rows)], pa.float32()),
                }
            ),
            root / f"{part:08d}.parquet",
        )
    return uids


def test_datacomp_preset_writes_subset_uids_and_an_img2dataset_list(tmp_path, capsys):
    uids = _datacomp_pool(tmp_path, random.Random(2))
    (tmp_path / "md.json").write_text('["dog", "cat", "photo", "zebu"]')
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(tmp_path / "*.parquet"),
                "--input_preset",
                "datacomp",
                "--metadata",
                str(tmp_path / "md.json"),
                "--threshold",
                "20",
                "--output_dir",
                str(out),
                "--num_shards",
                "2",
            ]
        )
        == 0
    )
    subset = pq.read_table(out / "subset")
    kept = set(subset.column("key").to_pylist())
    assert 0 < len(kept) < len(uids) and "original_width" in subset.column_names

    loaded = np.load(out / "subset_uids.npy")
    assert loaded.dtype == np.dtype("u8,u8") and len(loaded) == len(kept)
    assert np.array_equal(np.sort(loaded), loaded)
    for uid in uids:
        probe = np.array([divmod(int(uid, 16), 2**64)], np.dtype("u8,u8"))[0]
        hits = np.searchsorted(loaded, probe, "right") - np.searchsorted(loaded, probe, "left")
        assert hits == (uid in kept)

    listing = pq.read_table(out / "img2dataset")
    assert listing.schema == pa.schema([("url", pa.string()), ("caption", pa.string()), ("uid", pa.string())])
    assert len(list((out / "img2dataset").glob("part-*-of-00002.parquet"))) == 2
    by_uid = {row["key"]: row for row in subset.to_pylist()}
    assert sorted(listing.column("uid").to_pylist()) == sorted(kept)
    for row in listing.to_pylist():
        assert row["url"] == by_uid[row["uid"]]["url"] and row["caption"] == by_uid[row["uid"]]["text"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_kept"] == len(kept)
    # The summary gives the exact download command: the key column is named as written.
    command = f"img2dataset --url_list {out / 'img2dataset'} --input_format parquet --url_col url"
    printed = capsys.readouterr().out
    assert command in printed and """--save_additional_columns '["uid"]' --output_folder images/""" in printed


def test_img2dataset_preset_finds_laion_columns(tmp_path, capsys):
    pq.write_table(
        pa.table(
            {
                "URL": [f"https://x/{i}.jpg" for i in range(30)],
                "TEXT": [f"a {'dog' if i % 3 else 'cat'} photo" for i in range(30)],
                "similarity": [0.3] * 30,
            }
        ),
        tmp_path / "laion.parquet",
    )
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(tmp_path / "laion.parquet"),
                "--input_preset",
                "img2dataset",
                "--metadata",
                str(tmp_path / "md.json"),
                "--threshold",
                "5",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    listing = pq.read_table(out / "img2dataset")
    assert listing.column_names == ["url", "caption", "source_key"]
    assert """--save_additional_columns '["source_key"]'""" in capsys.readouterr().out
    subset = pq.read_table(out / "subset")
    assert sorted(
        zip(
            listing.column("source_key").to_pylist(),
            listing.column("url").to_pylist(),
            listing.column("caption").to_pylist(),
            strict=True,
        )
    ) == sorted(
        zip(
            subset.column("key").to_pylist(),
            subset.column("url").to_pylist(),
            subset.column("text").to_pylist(),
            strict=True,
        )
    )
    assert not (out / "subset_uids.npy").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--handoff", "datacomp"], "needs every key to be a DataComp uid (32 hex digits), got 'k0'"),
        (["--handoff", "img2dataset"], "--handoff img2dataset needs image URLs"),
        (["--handoff", "webdataset"], "--handoff webdataset lists kept keys per input tar shard; the input is jsonl"),
        (["--handoff", "tensorflow"], "--handoff takes auto, none, or a comma-separated list"),
        (["--reshard_dir", "somewhere"], "--reshard_dir writes new webdataset shards from webdataset input shards"),
        (["--samples_per_shard", "0"], "--samples_per_shard must be >= 1"),
        (
            ["--input_preset", "datacomp"],
            "--input_preset datacomp needs the columns uid, url and text; uid, url missing",
        ),
    ],
)
def test_hand_off_options_are_checked_before_any_work(tmp_path, capsys, extra, message):
    write_jsonl(tmp_path / "pool.jsonl", [{"key": "k0", "text": "a dog"}, {"key": "k1", "text": "a cat"}])
    (tmp_path / "md.json").write_text('["dog"]')
    argv = [
        "--input",
        str(tmp_path / "pool.jsonl"),
        "--metadata",
        str(tmp_path / "md.json"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert curate.run(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset, columns, flags",
    [
        ("img2dataset", {"url": "url", "text": "text"}, ["--text_field", "text", "--url_field", "url"]),
        ("datacomp", {"uid": "uid", "url": "url", "caption": "text"}, ["--text_field", "caption"]),
    ],
)
def test_explicit_field_flags_win_over_the_preset(tmp_path, preset, columns, flags):
    """README: explicit --text_field/--url_field win over --input_preset, so a pool whose columns
    differ from the preset's runs (it used to exit 2: the preset's columns were checked first)."""
    rows = {"uid": [f"{i:032x}" for i in range(4)], "url": [f"https://img/{i}.jpg" for i in range(4)]}
    rows["text"] = ["a dog", "a cat", "a dog and a cat", "nothing"]
    pq.write_table(pa.table({name: rows[source] for name, source in columns.items()}), tmp_path / "pool.parquet")
    (tmp_path / "md.json").write_text('["dog", "cat"]')
    out = tmp_path / "out"
    argv = [
        "--input",
        str(tmp_path / "pool.parquet"),
        "--input_preset",
        preset,
        "--metadata",
        str(tmp_path / "md.json"),
    ]
    assert curate.run(argv + ["--output_dir", str(out), "--num_shards", "1", *flags]) == 0
    listing = pq.read_table(out / "img2dataset")
    assert sorted(listing.column("caption").to_pylist()) == sorted(rows["text"][:3]) or listing.num_rows == 3
    assert json.loads((out / "stats.json").read_text())["records_accepted"] == 4
