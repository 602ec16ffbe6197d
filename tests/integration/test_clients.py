"""The hand-off outputs read by their real clients, as a user runs them (`make test-integration`).

A DataComp-style pool whose URLs point at images served from 127.0.0.1 is curated; the
`img2dataset/` output is downloaded with img2dataset 1.47 (its own environment), by the
command the run's summary prints; the downloaded shards are curated again with a reshard;
then, with webdataset 1.0.2 and 0.2.86 alike: the reshards are read through
`manifest.json` from another directory, `KeptKeys` selects the kept samples of the
downloaded shards, and online balancing draws three epochs from them; and
`subset_uids.npy` is searched as DataComp's resharder searches it. Every check compares
with `subset/`.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import REPO

# Given relative to the repository by the Makefile; the commands below run elsewhere.
IMG2DATASET = os.environ.get("BALANCEBEAM_IMG2DATASET", "") and str(
    Path(os.environ["BALANCEBEAM_IMG2DATASET"]).resolve()
)
OLD_WEBDATASET = os.environ.get("BALANCEBEAM_OLD_WEBDATASET", "") and str(
    Path(os.environ["BALANCEBEAM_OLD_WEBDATASET"]).resolve()
)
WORDS = ["dog", "cat", "photo", "zebu", "beach", "a", "the", "of"]
METADATA = ["dog", "cat", "photo", "zebu", "beach"]
POOL_SIZE, MISSING_EVERY = 160, 17  # every 17th URL answers 404
SERVER_SECONDS = 600  # the server stops by itself after this, whatever happens to the test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Small JPEGs served on 127.0.0.1 (a free port) until the tests end, or SERVER_SECONDS."""
    root = tmp_path_factory.mktemp("www")
    rng = random.Random(3)
    for i in range(POOL_SIZE):
        if i % MISSING_EVERY:
            buffer = io.BytesIO()
            Image.new("RGB", (48, 32), tuple(rng.randrange(256) for _ in range(3))).save(buffer, format="JPEG")
            (root / f"{i:04d}.jpg").write_bytes(buffer.getvalue())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        # img2dataset opens up to 256 connections at once; the default backlog of 5 drops
        # most of them, and the retried ones time out.
        request_queue_size = 1024

    httpd = Server(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    timer = threading.Timer(SERVER_SECONDS, httpd.shutdown)
    timer.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    timer.cancel()
    httpd.shutdown()


def _uid(i: int) -> str:
    return f"{random.Random(i).getrandbits(128):032x}"


@pytest.fixture(scope="module")
def runs(server, tmp_path_factory):
    """The first curation (DataComp pool metadata), the download, and the second (the downloaded shards)."""
    if not IMG2DATASET:
        pytest.fail("BALANCEBEAM_IMG2DATASET is not set: run the integration tier with `make test-integration`")
    root = tmp_path_factory.mktemp("clients")
    rng = random.Random(7)
    pool = root / "pool"
    pool.mkdir()
    pq.write_table(
        pa.table({
            "uid": [_uid(i) for i in range(POOL_SIZE)],
            "url": [f"{server}/{i:04d}.jpg" for i in range(POOL_SIZE)],
            "text": [" ".join(rng.choices(WORDS, k=4)) for _ in range(POOL_SIZE)],
        }),
        pool / "00000000.parquet",
    )  # fmt: skip
    (root / "metadata.json").write_text(json.dumps(METADATA))
    common = ["--metadata", str(root / "metadata.json"), "--threshold", "25", "--seed", "4", "--report", "false"]
    first = root / "first"
    summary = _curate(["--input", str(pool / "*.parquet"), "--input_preset", "datacomp"] + common, first)
    (command,) = [line.split("download with", 1)[1].strip() for line in summary.splitlines() if "download with" in line]
    images = root / "images"
    env = {**os.environ, "PATH": f"{Path(IMG2DATASET).parent}:{os.environ['PATH']}", "NO_ALBUMENTATIONS_UPDATE": "1"}
    download = subprocess.run(
        command.replace("--output_folder images/", f"--output_folder {images}") + " --processes_count 1",
        shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert download.returncode == 0, download.stderr[-3000:]
    second = root / "second"
    shards = sorted(str(p) for p in images.glob("*.tar"))
    reshard = ["--reshard_dir", str(root / "reshards"), "--samples_per_shard", "20"]
    _curate(["--input", str(images / "*.tar"), "--input_preset", "datacomp"] + reshard + common, second)
    return {"root": root, "first": first, "second": second, "shards": shards, "reshards": root / "reshards"}


def _curate(argv: list[str], out: Path) -> str:
    """Run the command line as a user does; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.curate", *argv, "--output_dir", str(out), "--progress", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _subset_keys(out: Path) -> set:
    return set(pq.read_table(out / "subset", columns=["key"]).column("key").to_pylist())


# What the clients do, run with one webdataset or the other: a JSON request in, a JSON answer out.
_CLIENT = r"""
import json, sys
import webdataset as wds
from transforms.handoff.kept_keys import KeptKeys
from transforms.handoff.online_balancing import MatchIndex, OnlineBalancing, webdataset_select

request = json.loads(sys.argv[1])
uid = lambda sample: json.loads(sample["json"])["uid"]
answer = {"version": getattr(wds, "__version__", "?")}
manifest = json.load(open(request["manifest"]))
answer["reshards"] = sorted(uid(s) for s in wds.WebDataset(manifest["train_data"], shardshuffle=False))
kept = KeptKeys.read(request["second"])
pipeline = wds.DataPipeline(wds.SimpleShardList(request["shards"]), wds.tarfile_to_samples(), wds.select(kept))
answer["kept"] = sorted(uid(s) for s in pipeline)
balancing = OnlineBalancing(MatchIndex.read(request["second"]), seed=9)
answer["epochs"] = []
for epoch in range(3):
    draw = wds.DataPipeline(
        wds.SimpleShardList(request["shards"]), wds.tarfile_to_samples(), webdataset_select(balancing, epoch, uid)
    )
    answer["epochs"].append([sorted(uid(s) for s in draw), sorted(balancing.epoch_keys(epoch))])
print(json.dumps(answer))
"""


@pytest.mark.parametrize("webdataset_line", ["1.0.2", "0.2.86"])
def test_reshards_kept_keys_and_online_balancing_with_webdataset(runs, tmp_path, webdataset_line):
    if webdataset_line == "0.2.86" and not OLD_WEBDATASET:
        pytest.fail("BALANCEBEAM_OLD_WEBDATASET is not set: run the integration tier with `make test-integration`")
    path = [str(REPO)] if webdataset_line == "1.0.2" else [OLD_WEBDATASET, str(REPO)]
    request = {"manifest": str(runs["reshards"] / "manifest.json"), "second": str(runs["second"]),
               "shards": runs["shards"]}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", _CLIENT, json.dumps(request)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(path)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["version"] == webdataset_line
    kept = _subset_keys(runs["second"])
    assert 0 < len(kept) and answer["reshards"] == sorted(kept) and answer["kept"] == sorted(kept)
    sizes = []
    for drawn, expected in answer["epochs"]:
        assert drawn == expected and drawn
        sizes.append(len(drawn))
    assert len({tuple(drawn) for drawn, _ in answer["epochs"]}) == 3  # a fresh draw each epoch


def test_img2dataset_downloaded_exactly_the_kept_images_that_exist(runs):
    kept = _subset_keys(runs["first"])
    downloaded = set()
    for shard in runs["shards"]:
        table = pq.read_table(shard.replace(".tar", ".parquet"))
        downloaded |= {row["uid"] for row in table.to_pylist() if row["status"] == "success"}
    missing = {_uid(i) for i in range(POOL_SIZE) if i % MISSING_EVERY == 0}
    assert downloaded == kept - missing and kept & missing  # the 404s among the kept were tried, not written
    # The second curation saw exactly those samples, every one with its uid and caption.
    stats = json.loads((runs["second"] / "stats.json").read_text())
    assert stats["records_read"] == len(downloaded) and stats["records_rejected"] == 0


@pytest.mark.parametrize("run", ["first", "second"])
def test_subset_uids_as_datacomp_resharder_searches_them(runs, run):
    out = runs[run]
    kept = _subset_keys(out)
    subset = np.load(out / "subset_uids.npy")
    assert subset.dtype == np.dtype("u8,u8") and len(subset) == len(kept)
    for uid in {_uid(i) for i in range(POOL_SIZE)}:
        probe = np.array([divmod(int(uid, 16), 2**64)], np.dtype("u8,u8"))[0]
        count = np.searchsorted(subset, probe, "right") - np.searchsorted(subset, probe, "left")
        assert count == (uid in kept), uid
