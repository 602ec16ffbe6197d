"""The same curation on every local runner set-up gives byte-identical outputs.

Set-ups (docs/scale-out.md):
  direct                   the DirectRunner's engine, the Python FnApiRunner, in-process
                           (`make_runner` selects it: no Prism download attempt)
  direct_multi_processing  --direct_running_mode=multi_processing --direct_num_workers=2
  portable_loopback        --runner=PortableRunner --job_endpoint=embed --environment_type=LOOPBACK
                           (the Fn API path of the Flink and Spark job servers)
the command as a process of its own with multi_processing (command_multi_processing: its
workers forked from a warm process, beam_pipeline.launcher.warm_workers), and, beyond these, a
standalone job server process with an EXTERNAL worker pool: the deployment shape of a Flink
or Spark job server, without Java.

Every run happens under a guard that refuses (and records) any connection or name lookup
that is not loopback, so a runner that tries to download something fails here at once
instead of stalling.  The pool and metadata are made here: no ../shared needed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline.curate import run
from helpers import REPO
from transforms.core.matching import match_entries_brute_force

ENTRIES = [
    "dog",
    "cat",
    "hot dog",
    "hot",
    "red car",
    "car",
    "new york",
    "new york city",
    "york city",
    "golden retriever",
    "retriever",
    "beach",
    "sunset",
    "mountain",
    "river",
    "bridge",
    "café",
    "東京",
    "t-shirt",
    "C++",
    "rock 'n' roll",
    "e-mail",
    "coffee",
    "book",
    "guitar",
    "tree",
    "snow",
    "city",
    "night",
    "rain",
    "never matched entry",
]
FILLER = ["a", "the", "photo", "of", "with", "and", "in", "on", "my", "old", "big", "small", "at"]

THRESHOLD, SEED, NUM_SHARDS, BATCH_SIZE = 6, 11, 3, 16

RUNNER_SETUPS = {
    "direct": [],
    "direct_multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    "portable_loopback": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
}

# A guard against network use, as source so that a subprocess can run it too.
GUARD_SOURCE = r'''
import socket as _socket

def install_network_guard():
    """Refuse, and record, every non-loopback connect() and name lookup of this process."""
    attempts = []
    local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "[::]", "", None}
    connect, getaddrinfo = _socket.socket.connect, _socket.getaddrinfo

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if self.family in (_socket.AF_INET, _socket.AF_INET6) and host not in local:
            attempts.append(("connect", address))
            raise OSError("network use refused by the test guard")
        return connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in local:
            attempts.append(("getaddrinfo", host))
            raise _socket.gaierror("name lookup refused by the test guard")
        return getaddrinfo(host, *args, **kwargs)

    def uninstall():
        _socket.socket.connect, _socket.getaddrinfo = connect, getaddrinfo

    _socket.socket.connect, _socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
    return attempts, uninstall
'''
_guard_namespace: dict = {}
exec(GUARD_SOURCE, _guard_namespace)  # our own constant source
install_network_guard = _guard_namespace["install_network_guard"]

# Runs the curation CLI under the guard; exit status 97 if it tried the network.
CLI_UNDER_GUARD = (
    GUARD_SOURCE
    + r"""
import atexit, os, runpy, sys
attempts, _ = install_network_guard()

def _refuse_if_attempted():
    # An exit hook: the command leaves with os._exit once its hooks have run.
    if attempts:
        print("NETWORK ATTEMPTS:", attempts, file=sys.stderr, flush=True)
        os._exit(97)

atexit.register(_refuse_if_attempted)
sys.argv = ["beam_pipeline.curate"] + sys.argv[1:]
runpy.run_module("beam_pipeline.curate", run_name="__main__", alter_sys=True)
"""
)


@dataclass
class Pool:
    inputs: list[Path]
    metadata: Path
    accepted_texts: list[str]
    records: int
    rejected: Counter


def _caption(rng: random.Random) -> str:
    words = rng.choices(FILLER, k=rng.randint(1, 6))
    # A heavy head (the first entries) and a long tail, like a real pool.
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        entry = ENTRIES[min(int(rng.paretovariate(0.8)) - 1, len(ENTRIES) - 2)]
        words.insert(rng.randrange(len(words) + 1), entry)
    separator = rng.choice([" ", " ", " ", ", ", "  "])
    return separator.join(words) + rng.choice(["", "", ".", "!"])


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Pool:
    """Three JSON Lines shards (one gzipped), a few unusable rows, a small metadata list."""
    root = tmp_path_factory.mktemp("pool")
    rng = random.Random(20261122)
    accepted, rejected, records = [], Counter(), 0
    inputs = []
    for name, count in (("shard-a.jsonl", 140), ("shard-b.jsonl.gz", 110), ("shard-c.jsonl", 90)):
        lines = []
        for row in range(count):
            key = f"{name.split('.')[0]}-{row:04d}"
            text = _caption(rng)
            lines.append(
                json.dumps({"key": key, "text": text, "url": f"https://img.example/{key}.jpg"}, ensure_ascii=False)
            )
            accepted.append(text)
        lines.insert(17, '{"key": "broken", "text": ')
        lines.insert(40, json.dumps({"key": f"{name}-empty", "text": "   ", "url": "u"}))
        lines.insert(63, json.dumps({"key": f"{name}-no-text", "url": "u"}))
        rejected.update(malformed_json=1, empty_text=1, missing_text=1)
        records += len(lines)
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = root / name
        path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
        inputs.append(path)
    metadata = root / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES, ensure_ascii=False), encoding="utf-8")
    return Pool(inputs, metadata, accepted, records, rejected)


def curation_args(pool: Pool, output_dir: Path) -> list[str]:
    args = []
    for path in pool.inputs:
        args += ["--input", str(path)]
    return args + [
        "--metadata",
        str(pool.metadata),
        "--threshold",
        str(THRESHOLD),
        "--seed",
        str(SEED),
        "--num_shards",
        str(NUM_SHARDS),
        "--batch_size",
        str(BATCH_SIZE),
        "--output_dir",
        str(output_dir),
    ]


@dataclass
class Run:
    output_dir: Path
    status: int
    seconds: float
    network_attempts: list
    printed: str


@pytest.fixture(scope="module")
def runs(pool, tmp_path_factory) -> dict[str, Run]:
    results = {}
    for name, runner_args in RUNNER_SETUPS.items():
        output_dir = tmp_path_factory.mktemp(name) / "out"
        attempts, uninstall = install_network_guard()
        printed = io.StringIO()
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(printed):
                status = run(curation_args(pool, output_dir) + runner_args)
        finally:
            uninstall()
        results[name] = Run(output_dir, status, time.monotonic() - started, attempts, printed.getvalue())
    # The command as a process of its own: its multi_processing workers are forked
    # from a warm process (beam_pipeline.launcher.warm_workers), which an in-process run
    # after another, with Beam's threads left running, does not fork.
    output_dir = tmp_path_factory.mktemp("command_multi_processing") / "out"
    started = time.monotonic()
    done = run_cli(curation_args(pool, output_dir) + RUNNER_SETUPS["direct_multi_processing"])
    attempts = ["see stderr"] if done.returncode == 97 else []
    printed = done.stdout + done.stderr
    results["command_multi_processing"] = Run(
        output_dir, done.returncode, time.monotonic() - started, attempts, printed
    )
    print("\nseconds per runner set-up: " + ", ".join(f"{name} {r.seconds:.1f}" for name, r in results.items()))
    return results


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_every_setup_finishes_here_without_touching_the_network(runs):
    for name, result in runs.items():
        assert result.status == 0, f"{name}: exit status {result.status}\n{result.printed}"
        assert result.network_attempts == [], f"{name} tried the network: {result.network_attempts}"
        assert "curation finished" in result.printed, f"{name} returned before the job finished:\n{result.printed}"
        assert result.seconds < 60, f"{name} took {result.seconds:.0f} s"


def test_outputs_are_byte_identical_on_every_runner(runs):
    report_files = {"figures.json", "entry_counts_kept.json", "report.html", "size_vs_threshold.csv"} | {
        f"plots/{name}.png"
        for name in (
            "entry_counts",
            "head_tail_share",
            "matches_per_caption",
            "kept_rate_by_matches",
            "caption_length",
            "size_vs_threshold",
            "funnel",  # where the records went (the report's top)
        )
    }
    expected_files = (
        {"entry_counts.json", "stats.json", "rejected/part-00000-of-00001.jsonl"}
        | report_files
        | {
            f"{kind}/part-{shard:05d}-of-{NUM_SHARDS:05d}.parquet"
            for kind in ("matches", "subset")
            for shard in range(NUM_SHARDS)
        }
    )
    reference_name, *others = runs
    reference = tree(runs[reference_name].output_dir)
    assert set(reference) == expected_files  # no temporary file left behind either
    for name in others:
        outputs = tree(runs[name].output_dir)
        assert sorted(outputs) == sorted(reference), f"{name} wrote other files than {reference_name}"
        for path in ("entry_counts.json", "stats.json"):
            assert outputs[path] == reference[path], f"{name}: {path} differs from {reference_name}'s"
        different = [path for path in reference if outputs[path] != reference[path]]
        assert different == [], f"{name}: these files differ from {reference_name}'s: {different}"


def test_outputs_are_the_curation_of_the_pool(runs, pool):
    """The identical outputs are also right, and not trivially so (a head, a tail, drops)."""
    out = runs["direct"].output_dir
    expected_counts = Counter()
    for text in pool.accepted_texts:
        expected_counts.update(match_entries_brute_force(text, ENTRIES))
    counts = json.loads((out / "entry_counts.json").read_text(encoding="utf-8"))
    assert list(counts) == ENTRIES
    assert counts == {entry: expected_counts[i] for i, entry in enumerate(ENTRIES)}

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["records_read"] == pool.records
    assert stats["records_rejected"] == sum(pool.rejected.values())
    assert stats["rejected_by_reason"] == dict(pool.rejected)
    assert (stats["threshold"], stats["seed"], stats["num_shards"]) == (THRESHOLD, SEED, NUM_SHARDS)
    assert stats["entries_over_threshold"] == sum(1 for c in expected_counts.values() if c > THRESHOLD) > 0

    matches = pq.read_table(out / "matches").to_pylist()
    subset = pq.read_table(out / "subset").to_pylist()
    assert len(matches) == len(pool.accepted_texts) == stats["records_accepted"]
    assert 0 < len(subset) == stats["records_kept"] < stats["records_matched"]
    assert {row["key"] for row in subset} <= {row["key"] for row in matches if row["keep_prob"] > 0}
    rejected_lines = (out / "rejected/part-00000-of-00001.jsonl").read_text(encoding="utf-8").splitlines()
    assert Counter(json.loads(line)["reason"] for line in rejected_lines) == pool.rejected


def test_multi_processing_workers_get_the_pipeline_options(tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.curation.runners import make_runner

    def probe(directory: str) -> None:
        # Defined in here so that it is pickled by value: SDK worker processes cannot import this test module.
        from apache_beam.io.filesystems import FileSystems

        worker_options = FileSystems._pipeline_options  # the SDK worker sets them from the job's options
        seen = None if worker_options is None else worker_options.get_all_options().get("s3_endpoint_url")
        Path(directory, f"worker-{os.getpid()}.json").write_text(
            json.dumps({"pid": os.getpid(), "s3_endpoint_url": seen})
        )

    endpoint = "http://minio.invalid:9000"
    options = PipelineOptions(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=1", f"--s3_endpoint_url={endpoint}"]
    )
    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        _ = pipeline | beam.Create([str(tmp_path)]) | beam.Map(probe)
    (report,) = [json.loads(p.read_text()) for p in tmp_path.glob("worker-*.json")]
    assert report["pid"] != os.getpid(), "multi_processing ran the DoFn in this process"
    assert report["s3_endpoint_url"] == endpoint, f"the SDK worker process saw {report['s3_endpoint_url']!r}"


WARM_WORKER_PROBE = r"""
import json, os, sys
from pathlib import Path
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from beam_pipeline.curation.runners import make_runner
from beam_pipeline.launcher import warm_workers

directory = sys.argv[1]
warm = warm_workers.start()

def probe(item):
    # Pickled by value (defined in __main__): what process ran it, and whose child it is.
    Path(directory, f"worker-{os.getpid()}.json").write_text(json.dumps({"parent": os.getppid()}))
    return item

options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
with beam.Pipeline(runner=make_runner(options, worker_command=warm.command), options=options) as pipeline:
    _ = pipeline | beam.Create(range(8)) | beam.Map(probe)
warm.close()
print(json.dumps({"launcher": os.getpid(), "warm": warm.pid}))
"""


def test_multi_processing_workers_forked_by_the_warm_process_run_the_pipeline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WARM_WORKER_PROBE, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pids = json.loads(done.stdout.splitlines()[-1])
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("worker-*.json")]
    assert reports, "no worker ran the DoFn"
    assert {r["parent"] for r in reports} == {pids["warm"]}, "a worker was not forked by the warm process"


# --- a standalone job server: the Flink / Spark deployment shape -----------------------------


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    """Beam's Python job service in its own process ('localhost:PORT'), as a Flink job server would run."""
    root = tmp_path_factory.mktemp("job_server")
    port_file, log = root / "port", (root / "log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            "0",
            "--port_file",
            str(port_file),
            "--staging_dir",
            str(root / "staging"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the job server did not start: {(root / 'log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield f"localhost:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def worker_pool():
    """An EXTERNAL environment: a Beam worker pool ('localhost:PORT') serving SDK workers from this process."""
    from apache_beam.runners.worker.worker_pool_main import (
        BeamFnExternalWorkerPoolServicer,
    )

    address, server = BeamFnExternalWorkerPoolServicer.start(use_process=False, port=0)
    yield address
    server.stop(0)


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI_UNDER_GUARD, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_job_server_with_external_workers_gives_the_same_outputs(pool, runs, job_server, worker_pool, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        curation_args(pool, out)
        + [
            "--runner=PortableRunner",
            f"--job_endpoint={job_server}",
            "--environment_type=EXTERNAL",
            f"--environment_config={worker_pool}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The submitter may return before the job ends: the job lives in the job server and the pool.
    assert wait_for(out / "stats.json", 90), "the job never finished (no stats.json)"
    assert tree(out) == tree(runs["direct"].output_dir)


def test_a_submitter_that_hosts_the_workers_waits_for_the_job(pool, job_server, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        curation_args(pool, out)
        + ["--runner=PortableRunner", f"--job_endpoint={job_server}", "--environment_type=LOOPBACK"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "stats.json").exists(), "exit status 0, but the job died with the submitter: no stats.json"
