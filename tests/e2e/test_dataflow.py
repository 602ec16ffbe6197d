"""Dataflow, offline: the --setup_file package, and a dry-run translation of the job graph.

`DataflowRunner --dry_run=True` with a dummy project and a gs:// temp location builds the
job (Runner v2 pipeline proto, staged artifacts: the sdist that --setup_file makes) and
stops before any request to Google Cloud: no credentials, no network.  Inputs, metadata and
output are local files here, which is fine for a translation (a real run needs gs:// paths:
docs/scale-out.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

from beam_pipeline import curate
from beam_pipeline.curation.graph import build_curation
from beam_pipeline.curation.runners import make_runner
from helpers import REPO, prepared_config

# The chain of stages (beam_pipeline/curation/graph.py), and what each holds.
EXPECTED_STEPS = ["ReadCaptions", "Balance", "WriteOutputs", "WriteStats"]
EXPECTED_INNER_STEPS = [
    "Balance/MatchEntries/MatchBatch",
    "Balance/CountEntries/SumPerBlock",
    "Balance/BalancedSample/KeepOrDrop",
    "WriteOutputs/WriteMatchesAndSubset",
    "WriteOutputs/WriteRejected",
    "WriteOutputs/WriteDocuments",
]


@contextlib.contextmanager
def no_network():
    """Refuse, and record in the list it yields, any non-loopback connection or name lookup."""
    import socket

    attempts: list = []
    local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            attempts.append(address)
            raise OSError("network use refused by the test guard")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in local:
            attempts.append(host)
            raise socket.gaierror("name lookup refused by the test guard")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo


def requirement_lines() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def package_sources() -> set[str]:
    """The .py files of both top-level packages and all their subpackages, relative to the repository."""
    return {
        str(p.relative_to(REPO)) for package in ("beam_pipeline", "transforms") for p in (REPO / package).rglob("*.py")
    }


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    (root / "pool.jsonl").write_text(
        "".join(
            json.dumps({"key": f"k{i}", "text": text}) + "\n"
            for i, text in enumerate(["a red car", "hot dog", "nothing"])
        ),
        encoding="utf-8",
    )
    (root / "metadata.json").write_text(json.dumps(["red car", "car", "hot dog", "dog"]), encoding="utf-8")
    return root


def dataflow_args(pool: Path, output_dir: Path) -> list[str]:
    return [
        "--input",
        str(pool / "pool.jsonl"),
        "--metadata",
        str(pool / "metadata.json"),
        "--threshold",
        "2",
        "--output_dir",
        str(output_dir),
        "--runner=DataflowRunner",
        "--dry_run=True",
        "--project=dummy-project",
        "--region=us-central1",
        "--temp_location=gs://dummy-bucket/tmp",
        "--staging_location=gs://dummy-bucket/staging",
        f"--setup_file={REPO / 'setup.py'}",
        "--machine_type=n2-standard-4",
        "--max_num_workers=4",
    ]


@pytest.fixture(scope="module")
def translated(small_pool, tmp_path_factory):
    """(dry-run result, seconds, network attempts): the curation translated for Dataflow."""
    argv = dataflow_args(small_pool, tmp_path_factory.mktemp("dataflow") / "out")
    with no_network() as attempts:
        started = time.monotonic()
        config, options = prepared_config(argv)
        pipeline = beam.Pipeline(runner=make_runner(options), options=options)
        build_curation(pipeline, config)
        result = pipeline.run()
        seconds = time.monotonic() - started
    print(f"\nDataflow dry-run translation, --setup_file sdist included: {seconds:.1f} s")
    yield result, seconds, list(attempts)
    remove_staging_directories(result)


def remove_staging_directories(result) -> None:
    """The stager's temporary directories (sdist, pickled main session) are ours to remove."""
    for directory in {Path(path).parent for path in staged_files(result.job.proto_pipeline).values()}:
        if directory.parent == Path(tempfile.gettempdir()) and directory.name.startswith("tmp"):
            shutil.rmtree(directory, ignore_errors=True)


def staged_files(proto: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """Staged name -> local file, over every environment's artifacts."""
    files = {}
    for environment in proto.components.environments.values():
        for artifact in environment.dependencies:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
            files[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
    return files


def test_dry_run_translates_offline(translated):
    result, seconds, attempts = translated
    assert attempts == [], f"the dry run tried the network: {attempts}"
    assert result.job is not None and result.job.proto.type.name == "JOB_TYPE_BATCH"
    assert seconds < 60


def test_job_graph_has_the_curation_steps(translated):
    proto = translated[0].job.proto_pipeline
    transforms = proto.components.transforms
    (root_id,) = proto.root_transform_ids
    top_level = [transforms[t].unique_name for t in transforms[root_id].subtransforms]
    assert [name for name in top_level if name in EXPECTED_STEPS] == EXPECTED_STEPS, top_level
    names = {t.unique_name: t for t in transforms.values()}
    for inner in EXPECTED_INNER_STEPS:
        assert inner in names, f"{inner} missing from the job graph"
    # The counts reach the sampler as a side input, not through a join.
    payload = beam_runner_api_pb2.ParDoPayload.FromString(names["Balance/BalancedSample/KeepOrDrop"].spec.payload)
    assert len(payload.side_inputs) == 1


def test_workers_get_both_packages_from_the_setup_file(translated):
    files = staged_files(translated[0].job.proto_pipeline)
    assert "workflow.tar.gz" in files, f"no --setup_file package among the staged files: {sorted(files)}"
    with tarfile.open(files["workflow.tar.gz"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = (package_sources() | {"setup.py", "requirements.txt"}) - names
    assert not missing, f"the package Dataflow workers install lacks {sorted(missing)}"


def test_worker_image_matches_the_pinned_beam(translated):
    (environment,) = translated[0].job.proto_pipeline.components.environments.values()
    image = beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
    (pin,) = [line for line in requirement_lines() if re.match(r"apache-beam(\[.*\])?==", line)]
    version = pin.split("==")[1]
    assert beam.version.__version__ == version, "the venv's Beam is not the pinned one"
    assert image.endswith(f"beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk:{version}"), image


def test_sdist_ships_both_packages_and_the_requirements_setup_py_reads(tmp_path):
    """`python setup.py sdist` (what the Dataflow stager runs for --setup_file), built and re-read."""
    subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "sdist",
            "--dist-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (sdist_path,) = tmp_path.glob("balancebeam-*.tar.gz")
    with tarfile.open(sdist_path) as sdist:
        sdist.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    shipped = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
    missing = (package_sources() | {"setup.py", "requirements.txt"}) - shipped
    assert not missing, f"the sdist lacks {sorted(missing)}"
    # A worker installs from the unpacked sdist: setup.py there must find requirements.txt.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=unpacked,
        check=True,
        capture_output=True,
    )
    requires = (tmp_path / "balancebeam.egg-info" / "requires.txt").read_text().split()
    assert requires == requirement_lines()


def test_run_returns_without_waiting_for_a_dataflow_job(small_pool, tmp_path, monkeypatch):
    """The submitter exits once the job is submitted (a Flex Template launcher must not block)."""
    submit = DataflowRunner.run_pipeline
    submitted = []

    def run_pipeline_that_must_not_be_waited_for(self, pipeline, options):
        result = submit(self, pipeline, options)
        submitted.append(result)

        def wait_until_finish(duration=None):
            raise AssertionError("run() waited for a Dataflow job")

        result.wait_until_finish = wait_until_finish
        return result

    monkeypatch.setattr(DataflowRunner, "run_pipeline", run_pipeline_that_must_not_be_waited_for)
    output_dir = tmp_path / "out"
    printed = io.StringIO()
    with no_network() as attempts, contextlib.redirect_stdout(printed):
        status = curate.run(dataflow_args(small_pool, output_dir))
    for result in submitted:
        remove_staging_directories(result)
    assert status == 0
    assert len(submitted) == 1 and attempts == []
    assert printed.getvalue() == "dry run: the job was translated for DataflowRunner; nothing was submitted\n"
    assert not (output_dir / "stats.json").exists()


@pytest.mark.parametrize("flag", ["--input", "--metadata", "--output_dir"])
def test_a_real_dataflow_run_refuses_local_paths_before_any_work(small_pool, tmp_path, capsys, flag):
    """Workers cannot read the launcher's disk: one line, exit 2, nothing listed or sent."""
    argv = [arg for arg in dataflow_args(small_pool, tmp_path / "out") if arg != "--dry_run=True"]
    remote = {"--input": "gs://bucket/pool/*.jsonl", "--metadata": "gs://bucket/m.json", "--output_dir": "gs://b/out"}
    for other, value in remote.items():
        if other != flag:
            argv[argv.index(other) + 1] = value
    with no_network() as attempts:
        assert curate.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and "Dataflow workers cannot read" in err and err.count("\n") == 1
    assert attempts == []


def _translated_size(pool: Path, files: int, output_dir: Path) -> int:
    """Bytes of the translated Dataflow job for a pool of `files` JSON Lines files (one --input glob)."""
    pool.mkdir()
    for i in range(files):
        (pool / f"part-{i:06d}.jsonl").write_text(json.dumps({"key": f"k{i}", "text": "a red car"}) + "\n")
    (pool / "metadata.json").write_text(json.dumps(["red car", "car"]))
    argv = dataflow_args(pool, output_dir)
    argv[argv.index("--input") + 1] = str(pool / "*.jsonl")
    argv += ["--num_shards", "2"]
    with no_network():
        config, options = prepared_config(argv)
        pipeline = beam.Pipeline(runner=make_runner(options), options=options)
        build_curation(pipeline, config)
        result = pipeline.run()
    assert len(config.paths) == files
    remove_staging_directories(result)
    return result.job.proto_pipeline.ByteSize()


def test_the_job_graph_does_not_grow_with_the_number_of_input_files(tmp_path):
    """The files are listed inside the pipeline from the --input patterns: 2,000 files make
    the same graph as 10, up to the digits of stats.json's input_files and the few dozen
    bytes by which the compressed pickles in a translation vary from one to the next
    (seen: up to 96). Embedding the list, as before, added ~6 KB here, where the names
    compress well; Dataflow refuses graphs over 10 MB, which the issue put at about 100k
    real shard paths."""
    small = _translated_size(tmp_path / "pool_a", 10, tmp_path / "out_a")
    large = _translated_size(tmp_path / "pool_b", 2000, tmp_path / "out_b")
    assert abs(large - small) < 512, (small, large)


def test_a_dry_run_says_nothing_was_submitted_and_nothing_else(small_pool, tmp_path):
    """As a user runs it (issue 34, item 6): no 'submitted' line, and the sdist build's stderr
    (`No module named build` before Beam falls back to `setup.py sdist`) stays out of the terminal."""
    argv = dataflow_args(small_pool, tmp_path / "out")
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the stager's sdist and pickles: removed with tmp_path
    command = [sys.executable, "-m", "beam_pipeline.curate", *argv]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["dry run: the job was translated for DataflowRunner; nothing was submitted"]
    assert run.stderr == ""
