"""Curations on gs:// for real: a local Cloud Storage emulator on 127.0.0.1 (`make test-integration`).

Dataflow runs read and write gs:// only, and on an object store a rename is a copy and a
delete. `gcp-storage-emulator` (the integration environment's, `--in-memory`) serves the
JSON API that google-cloud-storage and Beam's GcsIO both use once STORAGE_EMULATOR_HOST
names it; the fixture starts it on a free port of 127.0.0.1 and stops it, each within a
bounded time. Each run here is compared, byte for byte, with the same run on local files:
MetaCLIP with gs:// input, metadata and output; webdataset input resharded to gs://; a
DataComp filter + covariance selection run; and a run killed midway, then rerun.

Credentials: Beam asks google-auth for the default credentials and, finding none, retries
for ~20 s (and probes the metadata server of a GCE machine) before connecting anonymously.
An `authorized_user` file whose access token is already there and unexpired
(GOOGLE_APPLICATION_CREDENTIALS) is found at once and never refreshed: no request leaves
127.0.0.1 (GCE_METADATA_HOST is pointed there too, should anything look).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO

EMULATOR = os.environ.get("BALANCEBEAM_GCS_EMULATOR", "") and str(
    Path(os.environ["BALANCEBEAM_GCS_EMULATOR"]).resolve()
)
BUCKET = "balancebeam-test"
START_SECONDS = 60
STOP_SECONDS = 10
RUN_SECONDS = 600

pytestmark = pytest.mark.skipif(not EMULATOR, reason="needs BALANCEBEAM_GCS_EMULATOR (make test-integration)")

CREDENTIALS = {
    "type": "authorized_user",
    "client_id": "emulator",
    "client_secret": "emulator",
    "refresh_token": "emulator",
    "token": "emulator",
    "expiry": "2999-01-01T00:00:00Z",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gcs:
    """The running emulator: the environment a run needs, and the bucket's objects."""

    def __init__(self, url: str, environment: dict):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.url, self.environment = url, environment
        client = storage.Client(
            project="balancebeam-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
        )
        self.bucket = client.bucket(BUCKET)
        self._client = client

    def upload(self, directory: Path, prefix: str) -> str:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.bucket.blob(f"{prefix}/{path.relative_to(directory)}").upload_from_filename(str(path))
        return f"gs://{BUCKET}/{prefix}"

    def names(self, prefix: str) -> list[str]:
        """The names under `prefix`/ (listed only: a run may rename them away meanwhile)."""
        return [blob.name[len(prefix) + 1 :] for blob in self._client.list_blobs(BUCKET, prefix=prefix + "/")]

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix`/, by its name below it (hidden ones included)."""
        return {
            blob.name[len(prefix) + 1 :]: blob.download_as_bytes()
            for blob in self._client.list_blobs(BUCKET, prefix=prefix + "/")
        }


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gcs")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "emulator.log", "w")
    command = [EMULATOR, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", BUCKET]
    emulator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if emulator.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the emulator did not start: {(root / 'emulator.log').read_text()[-2000:]}")
            time.sleep(0.2)
        credentials = root / "credentials.json"
        credentials.write_text(json.dumps(CREDENTIALS))
        environment = {
            "STORAGE_EMULATOR_HOST": url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": "balancebeam-test",
            "GCE_METADATA_HOST": "127.0.0.1:1",
            "GCE_METADATA_IP": "127.0.0.1:1",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }
        yield Gcs(url, environment)
    finally:
        emulator.terminate()
        try:
            emulator.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(emulator.pid, signal.SIGKILL)
            emulator.wait(STOP_SECONDS)
        log.close()


def _curate(gcs: Gcs, *argv: str, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "beam_pipeline.curate", *argv, "--report", "false", "--progress", "0"]
    environment = {**os.environ, **gcs.environment}
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=RUN_SECONDS)
    done.seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unable to find default credentials" not in done.stderr  # no ~20 s of retries
    return done


def _local_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _final(files: dict[str, bytes]) -> dict[str, bytes]:
    """Files under their final names: no temporary (`.name.tmp-*`) or spill (`.balancebeam-work/`) ones."""
    return {name: data for name, data in files.items() if not any(part.startswith(".") for part in name.split("/"))}


def _temporary(files: dict[str, bytes]) -> list[str]:
    """Names of temporary objects (`.name.tmp-*`) or of the spill directory: none may outlive a run."""
    return [name for name in files if ".tmp-" in name or name.startswith(".balancebeam-work/")]


def _swapped(value, swaps: list[tuple[str, str]]):
    if isinstance(value, str):
        for gs_path, local_path in swaps:
            value = value.replace(gs_path, local_path)
    elif isinstance(value, list):
        value = [_swapped(item, swaps) for item in value]
    elif isinstance(value, dict):
        value = {key: _swapped(item, swaps) for key, item in value.items()}
    return value


def _same_but_for_paths(gs_files: dict, local_files: dict, swaps: list[tuple[str, str]]) -> None:
    """Byte-identical, except in a file that names an input or output location: then the same once swapped.

    Those are rejected/ (each rejected record's source file), the reshards' manifest.json
    (their own and the output's location) and a webdataset run's Parquet outputs (each
    sample's `shard`): Parquet files are compared row by row, the others byte by byte.
    """
    import pyarrow.parquet as pq

    assert sorted(gs_files) == sorted(local_files)
    for name, data in gs_files.items():
        expected = local_files[name]
        if data == expected:
            continue
        assert any(gs_path.encode() in data for gs_path, _ in swaps), f"{name} differs and names no gs:// location"
        if name.endswith(".parquet"):
            got, want = (pq.read_table(io.BytesIO(b)) for b in (data, expected))
            assert got.schema == want.schema, name
            assert _swapped(got.to_pylist(), swaps) == want.to_pylist(), name
        else:
            assert _swapped(data.decode("utf-8"), swaps) == expected.decode("utf-8"), name


@pytest.fixture(scope="module")
def demo_pool(tmp_path_factory):
    from beam_pipeline.demo import make_demo_data

    metadata, pool = make_demo_data(tmp_path_factory.mktemp("demo"), captions=60_000, shards=4)
    return metadata, pool


def _metaclip_flags(inputs: str, metadata: str, out: str) -> list[str]:
    return ["--input", inputs, "--metadata", metadata, "--threshold", "300", "--num_shards", "4", "--output_dir", out]


def test_metaclip_on_gs_gives_the_bytes_of_the_local_run(gcs, demo_pool, tmp_path):
    metadata, pool = demo_pool
    local = tmp_path / "local"
    local_run = _curate(gcs, *_metaclip_flags(str(pool / "*.jsonl"), str(metadata), str(local)))
    pool_url = gcs.upload(pool, "metaclip/pool")
    metadata_url = gcs.upload(metadata.parent, "metaclip/meta") + "/" + metadata.name
    gs_run = _curate(gcs, *_metaclip_flags(pool_url + "/*.jsonl", metadata_url, f"gs://{BUCKET}/metaclip/out"))
    objects = gcs.objects("metaclip/out")
    assert not _temporary(objects)
    _same_but_for_paths(objects, _local_files(local), [(pool_url, str(pool))])
    print(
        f"metaclip: {len(objects)} objects, {sum(map(len, objects.values()))} bytes; "
        f"{gs_run.seconds:.1f} s on gs://, {local_run.seconds:.1f} s local"
    )


def _webdataset_pool(directory: Path) -> None:
    directory.mkdir(parents=True)
    words = ["dog", "cat", "photo", "beach", "zebu"]
    for shard in range(3):
        with tarfile.open(directory / f"{shard:06d}.tar", "w") as tar:
            for position in range(40):
                key = f"{shard:05d}{position:04d}"
                caption = f"a {words[position % 5]} and a {words[(position * 7 + shard) % 5]}"
                members = {
                    f"{key}.jpg": bytes([shard, position]) * 50,
                    f"{key}.txt": caption.encode(),
                    f"{key}.json": json.dumps({"uid": f"{shard * 1000 + position:032x}", "caption": caption}).encode(),
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))


def test_webdataset_reshards_to_gs_give_the_bytes_of_the_local_reshards(gcs, tmp_path):
    _webdataset_pool(tmp_path / "pool")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text(json.dumps(["dog", "cat", "photo", "beach", "zebu"]))

    def flags(pool: str, metadata: str, out: str, shards: str) -> list[str]:
        return ["--input", pool + "/{000000..000002}.tar", "--input_preset", "datacomp", "--metadata", metadata,
                "--threshold", "10", "--seed", "3", "--output_dir", out, "--reshard_dir", shards,
                "--samples_per_shard", "7"]  # fmt: skip

    local_out, local_shards = tmp_path / "out", tmp_path / "shards"
    _curate(
        gcs, *flags(str(tmp_path / "pool"), str(tmp_path / "meta" / "metadata.json"), str(local_out), str(local_shards))
    )
    pool_url = gcs.upload(tmp_path / "pool", "wds/pool")
    metadata_url = gcs.upload(tmp_path / "meta", "wds/meta") + "/metadata.json"
    shards_url = f"gs://{BUCKET}/wds/shards"
    out_url = f"gs://{BUCKET}/wds/out"
    run = _curate(gcs, *flags(pool_url, metadata_url, out_url, shards_url))
    shards = gcs.objects("wds/shards")
    assert any(name.endswith(".tar") for name in shards) and "manifest.json" in shards
    assert not _temporary(shards)
    swaps = [(pool_url, str(tmp_path / "pool")), (shards_url, str(local_shards)), (out_url, str(local_out))]
    _same_but_for_paths(shards, _local_files(local_shards), swaps)
    _same_but_for_paths(gcs.objects("wds/out"), _local_files(local_out), swaps)
    print(f"reshards: {sum(name.endswith('.tar') for name in shards)} tars, {run.seconds:.1f} s")


def test_filter_and_select_on_gs_give_the_bytes_of_the_local_run(gcs, tmp_path):
    from datacomp_pool import write_pool

    write_pool(tmp_path / "pool")
    flags = ["--input_preset", "datacomp", "--filter", "basic,clip_score", "--clip_score_fraction", "0.3",
             "--balance", "none", "--select", "covariance", "--select_fraction", "0.5", "--seed", "5"]  # fmt: skip
    local = tmp_path / "out"
    _curate(gcs, "--input", str(tmp_path / "pool" / "*.parquet"), *flags, "--output_dir", str(local))
    pool_url = gcs.upload(tmp_path / "pool", "select/pool")
    run = _curate(gcs, "--input", pool_url + "/*.parquet", *flags, "--output_dir", f"gs://{BUCKET}/select/out")
    objects = gcs.objects("select/out")
    assert "filtered/part-00000-of-00001.jsonl" in objects or any(n.startswith("filtered/") for n in objects)
    _same_but_for_paths(objects, _local_files(local), [(pool_url, str(tmp_path / "pool"))])
    stats = json.loads(objects["stats.json"])
    print(f"filter + select: kept {stats['records_kept']} of {stats['records_read']}, {run.seconds:.1f} s")


def test_a_run_killed_midway_on_gs_reruns_to_the_clean_bytes(gcs, demo_pool):
    metadata, pool = demo_pool
    pool_url = gcs.upload(pool, "kill/pool")
    metadata_url = gcs.upload(metadata.parent, "kill/meta") + "/" + metadata.name
    clean_run = _curate(gcs, *_metaclip_flags(pool_url + "/*.jsonl", metadata_url, f"gs://{BUCKET}/kill/clean"))
    clean = gcs.objects("kill/clean")

    argv = _metaclip_flags(pool_url + "/*.jsonl", metadata_url, f"gs://{BUCKET}/kill/out")
    command = [sys.executable, "-m", "beam_pipeline.curate", *argv, "--report", "false", "--progress", "0"]
    environment = {**os.environ, **gcs.environment}
    run = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    # Killed once the first output objects are there, as a user's Ctrl-\ or an evicted VM would.
    deadline = time.monotonic() + RUN_SECONDS
    while run.poll() is None and time.monotonic() < deadline and not _final(dict.fromkeys(gcs.names("kill/out"))):
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(STOP_SECONDS)
    partial = _final(gcs.objects("kill/out"))
    assert partial and "stats.json" not in partial
    for name, data in partial.items():
        assert data == clean[name], f"{name}: a partial object under a final name"

    rerun = _curate(gcs, *argv)
    again = gcs.objects("kill/out")
    assert not _temporary(again)
    assert again == clean, "the rerun differs from the clean run"
    print(
        f"kill: {len(partial)} objects left by the killed run; rerun {rerun.seconds:.1f} s, "
        f"clean {clean_run.seconds:.1f} s"
    )
