"""DataComp and img2dataset hand-offs from parquet pools, and the pure hand-off functions."""

from __future__ import annotations

import io
import json
import random

import braceexpand
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline import curate
from helpers import write_jsonl
from transforms.handoff.reshard import (
    brace_pattern,
    inputs_of_output_shard,
    kept_key_file_name,
    key_files_need_index,
    num_output_shards,
    output_shards_of_input,
    shard_starts,
)
from transforms.handoff.uids import (
    UidError,
    npy_header,
    pack_uids,
    sorted_unique_uids,
    uid_buckets,
    uids_bytes,
    unpack_uids,
)


def test_uid_packing_is_datacomps():
    rng = random.Random(1)
    uids = [f"{rng.getrandbits(128):032x}" for _ in range(200)] + ["0" * 32, "f" * 32, "0" * 16 + "f" * 16]
    packed = pack_uids(uids)
    assert packed.dtype == np.dtype("u8,u8")
    for uid, row in zip(uids, packed, strict=True):
        assert (int(row["f0"]), int(row["f1"])) == divmod(int(uid, 16), 2**64) == (int(uid[:16], 16), int(uid[16:], 16))
    assert unpack_uids(packed) == uids
    assert packed.tobytes()[:8] == int(uids[0][:16], 16).to_bytes(8, "little")  # little-endian on disk
    ordered = sorted_unique_uids(np.concatenate([packed, packed[:10]]))
    assert unpack_uids(ordered) == sorted(set(uids))
    buckets = uid_buckets(ordered, 7)
    assert np.all(np.diff(buckets) >= 0) and buckets.min() >= 0 and buckets.max() < 7


@pytest.mark.parametrize("bad", ["abc", "g" * 32, "a" * 31, "a" * 33, " " + "a" * 31, "00000001.jpg"])
def test_non_uid_keys_are_refused_with_the_key_named(bad):
    with pytest.raises(UidError, match=f"got {bad!r}"):
        pack_uids(["a" * 32, bad])


@pytest.mark.parametrize("count", [0, 1, 5, 10**9])
def test_npy_header_is_what_np_save_writes(count):
    rows = np.zeros(min(count, 5), dtype=np.dtype("u8,u8"))
    buffer = io.BytesIO()
    np.save(buffer, rows)
    assert npy_header(len(rows)) + uids_bytes(rows) == buffer.getvalue()
    assert len(npy_header(count)) % 64 == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.integers(1, 15))
def test_reshard_plan_is_contiguous_and_consistent(counts, per_shard):
    starts = shard_starts(counts)
    total = sum(counts)
    n = num_output_shards(total, per_shard)
    by_output = {}
    for index, (start, count) in enumerate(zip(starts, counts, strict=True)):
        for shard, samples in output_shards_of_input(int(start), count, per_shard):
            by_output.setdefault(shard, []).append((index, samples))
    assert sorted(by_output) == list(range(n))  # no gaps
    for shard in range(n):
        pieces = inputs_of_output_shard(shard, starts, counts, per_shard)
        assert pieces == by_output[shard]
        assert sum(s for _, s in pieces) == (per_shard if shard < n - 1 else total - per_shard * (n - 1))


def test_brace_pattern_and_key_file_names():
    assert brace_pattern("gs://b/shards/", 0) is None
    assert brace_pattern("out", 1) == "out/000000.tar"
    assert list(braceexpand.braceexpand(brace_pattern("out", 12))) == [f"out/{i:06d}.tar" for i in range(12)]
    assert brace_pattern("d", 1_000_001) == "d/{0000000..1000000}.tar"
    for paths, names in [
        (["a/000001.tar", "b/000002.tar.gz"], ["000001.txt", "000002.txt"]),
        (["a/x.tar", "b/x.tar"], ["000000-x.txt", "000001-x.txt"]),
    ]:
        with_index = key_files_need_index(paths)
        assert [kept_key_file_name(p, i, with_index) for i, p in enumerate(paths)] == names


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


def test_datacomp_preset_writes_subset_uids_and_an_img2dataset_list(tmp_path):
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


def test_img2dataset_preset_finds_laion_columns(tmp_path):
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
