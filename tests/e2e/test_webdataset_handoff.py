"""Webdataset shards in, training hand-off out: real image bytes, curated, resharded, read back.

The pool is a set of webdataset tar shards whose samples hold small JPEG and PNG images
made with Pillow, a caption (.txt), DataComp-style metadata (.json with uid and url) and
sometimes an extra member. It is curated with `--input_preset datacomp` and a reshard; the
new shards are read with the `webdataset` library, and `subset_uids.npy` is searched the
way DataComp's resharder searches it.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import braceexpand
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from beam_pipeline import curate
from helpers import REPO
from transforms.handoff.kept_keys import KeptKeys

HEAD = ["photo", "dog", "cat"]
TAIL = ["zebu", "quokka", "axolotl", "okapi", "tapir"]
METADATA = HEAD + TAIL
SHARD_SIZES = [23, 17, 1, 12, 31]  # input shard 3 holds only unmatched captions: nothing kept
SAMPLES_PER_SHARD = 7


def _image(rng: random.Random, fmt: str) -> bytes:
    size = (rng.randrange(4, 12), rng.randrange(4, 12))
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_pool(root: Path) -> dict:
    """Write the tar shards; return {__key__: (shard index, position, uid, {member name: bytes})}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    samples = {}
    for shard, size in enumerate(SHARD_SIZES):
        with tarfile.open(root / f"{shard:06d}.tar", "w") as tar:
            for position in range(size):
                key = f"{shard:05d}{position:04d}"
                uid = f"{rng.getrandbits(128):032x}"
                if shard == 3:
                    caption = "nothing to see here"
                else:
                    caption = " ".join(
                        [rng.choice(HEAD), rng.choice(HEAD)] + ([rng.choice(TAIL)] if rng.random() < 0.3 else [])
                    )
                image_ext = "jpg" if position % 2 else "png"
                members = {f"{key}.{image_ext}": _image(rng, "JPEG" if image_ext == "jpg" else "PNG")}
                if position % 9 != 4:  # every ninth sample lacks its caption member
                    members[f"{key}.txt"] = caption.encode()
                members[f"{key}.json"] = json.dumps(
                    {"uid": uid, "url": f"https://img.example/{key}.{image_ext}", "caption": caption}
                ).encode()
                if position % 5 == 0:
                    members[f"{key}.cls"] = str(position % 3).encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 1_700_000_000 + position
                    tar.addfile(info, io.BytesIO(data))
                samples[key] = (shard, position, uid, members)
    return samples


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    samples = make_pool(root / "pool")
    (root / "metadata.json").write_text(json.dumps(METADATA))
    argv = [
        "--input",
        str(root / "pool" / "{000000..000004}.tar"),
        "--input_preset",
        "datacomp",
        "--metadata",
        str(root / "metadata.json"),
        "--threshold",
        "6",
        "--seed",
        "3",
        "--output_dir",
        str(root / "out"),
        "--reshard_dir",
        str(root / "shards"),
        "--samples_per_shard",
        str(SAMPLES_PER_SHARD),
    ]
    assert curate.run(argv) == 0
    return root, samples, argv


def _kept(out: Path):
    subset = pq.read_table(out / "subset").to_pylist()
    return sorted(subset, key=lambda row: (row["shard"], int(row["wds_key"])))


def test_subset_holds_uids_and_the_shard_of_each_sample(curated):
    root, samples, _ = curated
    kept = _kept(root / "out")
    assert 0 < len(kept) < sum(SHARD_SIZES)
    for row in kept:
        shard, position, uid, members = samples[row["wds_key"]]
        assert row["key"] == uid and row["shard"] == str(root / "pool" / f"{shard:06d}.tar")
        assert row["url"].endswith(row["wds_key"] + (".jpg" if position % 2 else ".png"))
    assert not any(samples[row["wds_key"]][0] == 3 for row in kept)
    rejected = [
        json.loads(line) for f in (root / "out" / "rejected").glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    no_caption = sorted((r["raw"]["__key__"], r["reason"]) for r in rejected)
    assert no_caption == sorted(
        (k, "no_caption_member") for k, (_, position, _, _) in samples.items() if position % 9 == 4
    )


def test_reshard_round_trip_with_webdataset(curated):
    root, samples, _ = curated
    kept = _kept(root / "out")
    manifest = json.loads((root / "shards" / "manifest.json").read_text())
    tars = sorted(p.name for p in (root / "shards").glob("*.tar"))
    n = -(-len(kept) // SAMPLES_PER_SHARD)
    # Contiguous numbering, and the manifest's pattern names exactly those files.
    assert tars == [f"{i:06d}.tar" for i in range(n)] and manifest["num_shards"] == n
    assert list(braceexpand.braceexpand(manifest["train_data"])) == [str(root / "shards" / name) for name in tars]
    assert manifest["open_clip_args"] == [
        "--dataset-type",
        "webdataset",
        "--train-data",
        manifest["train_data"],
        "--train-num-samples",
        str(len(kept)),
    ]
    assert not (root / "shards" / ".fragments").exists()

    read = list(wds.WebDataset(manifest["train_data"], shardshuffle=False))
    # Exactly the kept samples, in (input shard, position) order, every member byte for byte.
    assert [s["__key__"] for s in read] == [row["wds_key"] for row in kept]
    assert manifest["train_num_samples"] == len(read) == len(kept)
    for sample in read:
        members = samples[sample["__key__"]][3]
        assert {k: v for k, v in sample.items() if not k.startswith("__")} == {
            name.split(".", 1)[1]: data for name, data in members.items()
        }
        image = sample.get("jpg") or sample.get("png")
        assert Image.open(io.BytesIO(image)).size[0] >= 4  # still a decodable image

    per_tar = []
    for name in tars:
        with tarfile.open(root / "shards" / name) as tar:
            infos = tar.getmembers()
            assert {(i.mtime, i.uid, i.gid, i.uname, i.mode) for i in infos} == {(0, 0, 0, "", 0o644)}
            per_tar.append(len({i.name.split(".", 1)[0] for i in infos}))
    assert per_tar == [s["nsamples"] for s in manifest["shards"]]
    assert per_tar[:-1] == [SAMPLES_PER_SHARD] * (n - 1) and 1 <= per_tar[-1] <= SAMPLES_PER_SHARD


def test_kept_key_lists_per_input_shard(curated):
    root, samples, _ = curated
    kept = _kept(root / "out")
    index = json.loads((root / "out" / "webdataset" / "shards.json").read_text())
    assert [s["shard"] for s in index["shards"]] == [
        str(root / "pool" / f"{i:06d}.tar") for i in range(len(SHARD_SIZES))
    ]
    assert index["kept"] == len(kept)
    for i, entry in enumerate(index["shards"]):
        listed = (root / "out" / "webdataset" / entry["keys_file"]).read_text().splitlines()
        assert listed == [row["wds_key"] for row in kept if row["shard"] == entry["shard"]]
        assert entry["kept"] == len(listed) and entry["keys_file"] == f"kept_keys/{i:06d}.txt"
    with_caption = [sum(1 for p in range(size) if p % 9 != 4) for size in SHARD_SIZES]
    assert [s["accepted"] for s in index["shards"]] == with_caption and index["shards"][3]["kept"] == 0


def test_subset_uids_npy_as_datacomp_resharder_reads_it(curated):
    root, samples, _ = curated
    kept_uids = {row["key"] for row in _kept(root / "out")}
    subset = np.load(root / "out" / "subset_uids.npy", mmap_mode="r")
    u16 = np.dtype("u8,u8")
    assert subset.dtype == u16 and subset.shape == (len(kept_uids),)
    as_ints = [(int(a) << 64) | int(b) for a, b in zip(subset["f0"], subset["f1"], strict=True)]
    assert as_ints == sorted(set(as_ints)) == sorted(int(uid, 16) for uid in kept_uids)  # sorted, no repeats
    assert np.array_equal(np.sort(subset), subset)
    for _, _, uid, _ in samples.values():
        key_u16 = np.array([divmod(int(uid, 16), 2**64)], u16)[0]  # resharder.py's own conversion
        count = np.searchsorted(subset, key_u16, "right") - np.searchsorted(subset, key_u16, "left")
        assert count == (1 if uid in kept_uids else 0), uid


def test_other_sharding_gives_the_same_bytes_and_reruns_need_overwrite(curated, tmp_path, capsys):
    root, _, argv = curated
    first_shards, first_out = _files(root / "shards"), _files(root / "out")
    other = [
        str(tmp_path / "out")
        if a == str(root / "out")
        else str(tmp_path / "shards")
        if a == str(root / "shards")
        else a
        for a in argv
    ]
    assert curate.run(other + ["--num_shards", "3"]) == 0
    again = _files(tmp_path / "shards")
    assert {k: v for k, v in again.items() if k.endswith(".tar")} == {
        k: v for k, v in first_shards.items() if k.endswith(".tar")
    }
    assert (tmp_path / "out" / "subset_uids.npy").read_bytes() == first_out["subset_uids.npy"]
    kept_lists = lambda files: {k: v for k, v in files.items() if k.startswith("webdataset/kept_keys/")}  # noqa: E731
    assert kept_lists(_files(tmp_path / "out")) == kept_lists(first_out)

    # A finished reshard directory is refused without --overwrite, even for a fresh output directory.
    fresh = [str(tmp_path / "out2") if a == str(tmp_path / "out") else a for a in other]
    assert curate.run(fresh) == 2
    assert "already holds a finished reshard" in capsys.readouterr().err
    assert curate.run(argv) == 2  # the first run's output directory is finished too
    capsys.readouterr()
    assert curate.run(argv + ["--overwrite"]) == 0
    assert _files(root / "shards") == first_shards and _files(root / "out") == first_out

    # A run killed after its reshard but before stats.json: the rerun replaces its leftovers.
    (root / "out" / "stats.json").unlink()
    (root / "shards" / "000099.tar").write_bytes(b"stale")
    (root / "shards" / ".fragments").mkdir()
    (root / "shards" / ".fragments" / "000000000-000000000.part").write_bytes(b"stale")
    assert curate.run(argv) == 0
    assert _files(root / "shards") == first_shards and _files(root / "out") == first_out


def test_reshard_and_shard_list_refusals(curated, tmp_path, capsys):
    root, _, argv = curated

    def run_with(**changes):
        args = list(argv)
        for flag, value in changes.items():
            args[args.index(f"--{flag}") + 1] = value
        status = curate.run(args)
        return status, capsys.readouterr().err

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("someone else's")
    status, err = run_with(output_dir=str(tmp_path / "o1"), reshard_dir=str(tmp_path / "busy"))
    assert status == 2 and "is not empty and is not a BalanceBeam reshard" in err
    status, err = run_with(output_dir=str(tmp_path / "o2"), reshard_dir=str(root / "pool"))
    assert status == 2 and "holds input shards" in err
    status, err = run_with(output_dir=str(tmp_path / "o3"), input=str(root / "pool" / "{000000..000009}.tar"))
    assert status == 2 and "5 of its 10 names match no file (first: " in err and err.count("\n") == 1
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
    assert (tmp_path / "busy" / "notes.txt").exists()


def test_plain_webdataset_keys_are_the_sample_keys(curated, tmp_path, capsys):
    root, samples, _ = curated
    out = tmp_path / "out"
    base = [
        "--input",
        str(root / "pool" / "*.tar"),
        "--metadata",
        str(root / "metadata.json"),
        "--threshold",
        "6",
        "--output_dir",
        str(out),
    ]
    assert curate.run(base + ["--handoff", "datacomp"]) == 2
    assert "needs every key to be a DataComp uid (32 hex digits), got '000000000'" in capsys.readouterr().err
    assert curate.run(base) == 0
    subset = pq.read_table(out / "subset")
    assert subset.column_names == ["key", "text", "shard", "wds_key"]
    assert subset.column("key").to_pylist() == subset.column("wds_key").to_pylist()
    assert set(subset.column("key").to_pylist()) <= set(samples)
    assert (out / "webdataset" / "shards.json").exists() and not (out / "subset_uids.npy").exists()
    assert not (out / "img2dataset").exists()


def _tar(path: Path, samples: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, caption in samples.items():
            for name, data in ((f"{key}.txt", caption.encode()), (f"{key}.jpg", b"\xff\xd8 not decoded")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_kept_keys_select_exactly_the_kept_samples_of_same_named_shards(tmp_path):
    """Two download folders with shards of the same names, keys with spaces: KeptKeys finds each."""
    rng = random.Random(5)
    for folder in ("a", "b"):
        samples = {f"{folder} sample {i:03d}": " ".join(rng.choices(HEAD + TAIL, k=2)) for i in range(40)}
        _tar(tmp_path / "pool" / folder / "000000.tar", samples)
    (tmp_path / "metadata.json").write_text(json.dumps(METADATA))
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "pool" / "*" / "*.tar"), "--metadata", str(tmp_path / "metadata.json")]
    assert curate.run(argv + ["--threshold", "6", "--output_dir", str(out), "--report", "false"]) == 0
    expected = sorted((row["shard"], row["wds_key"]) for row in pq.read_table(out / "subset").to_pylist())
    assert 0 < len(expected) < 80

    kept = KeptKeys.read(str(out))
    shards = [str(tmp_path / "pool" / folder / "000000.tar") for folder in ("a", "b")]
    selected = sorted((s["__url__"], s["__key__"]) for s in wds.WebDataset(shards, shardshuffle=False).select(kept))
    assert selected == expected
    # The same shards copied elsewhere (another mount): found below their common folder, not by base name.
    copy = tmp_path / "mounted"
    for folder in ("a", "b"):
        (copy / folder).mkdir(parents=True)
        (copy / folder / "000000.tar").write_bytes((tmp_path / "pool" / folder / "000000.tar").read_bytes())
    moved = [str(copy / folder / "000000.tar") for folder in ("a", "b")]
    again = sorted((s["__url__"], s["__key__"]) for s in wds.WebDataset(moved, shardshuffle=False).select(kept))
    assert [(url.replace(str(copy), str(tmp_path / "pool")), key) for url, key in again] == expected


def test_the_manifest_opens_from_any_working_directory(tmp_path):
    """--reshard_dir given relative to where the curation ran: train_data is written absolute."""
    make_pool(tmp_path / "pool")
    (tmp_path / "metadata.json").write_text(json.dumps(METADATA))
    argv = [
        sys.executable, "-m", "beam_pipeline.curate", "--input", str(tmp_path / "pool" / "{000000..000004}.tar"),
        "--metadata", str(tmp_path / "metadata.json"), "--threshold", "6", "--output_dir", "out",
        "--reshard_dir", "shards", "--report", "false", "--progress", "0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["train_data"].startswith(str(tmp_path / "shards") + "/")
    assert manifest["source"]["output_dir"] == str(tmp_path / "out")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    count = subprocess.run(
        [sys.executable, "-c", "import sys, webdataset as wds; print(sum(1 for _ in wds.WebDataset(sys.argv[1])))",
         manifest["train_data"]],
        cwd=elsewhere, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert count.returncode == 0, count.stderr
    assert int(count.stdout) == manifest["train_num_samples"] > 0
    assert f"open_clip needs --workers x GPUs <= {manifest['num_shards']}" in result.stdout
