"""A multi-process run whose SDK worker is killed ends with one clear line, and the rerun is whole.

The worker is a real one: forked by the warm process (beam_pipeline/launcher/warm_workers.py)
for the relay the DirectRunner started, and killed with SIGKILL as soon as it is seen
(before its first bundle: Beam 2.77's runner alone then waits for it forever) or while
the first pass runs (Beam alone raises `Channel closed prematurely.`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from beam_pipeline.demo import make_demo_data
from helpers import REPO, demo_pool_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm workers are Linux only")


def _command(pool: Path, metadata: Path, out: Path) -> list[str]:
    return demo_pool_command(
        pool,
        metadata,
        out,
        "--cache_dir",
        "none",
        "--progress",
        "0",
        "--report",
        "false",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )


def _final_files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


def _stat(pid: int) -> Optional[tuple[str, int]]:
    """(name, parent pid) of a process, or None once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = data[data.index("(") + 1 : data.rindex(")")]
    return name, int(data[data.rindex(")") + 2 :].split()[1])


def _worker_of(launcher: int) -> Optional[int]:
    """A `bb-sdk-worker` process whose parent (the warm process) is the launcher's child."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None and info[0] == "bb-sdk-worker":
                parent = _stat(info[1])
                if parent is not None and parent[1] == launcher:
                    return int(entry)
    return None


@pytest.fixture(scope="module")
def pool_and_clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("worker_death")
    metadata, pool = make_demo_data(root / "data", captions=200_000, shards=6)
    clean = root / "clean"
    subprocess.run(_command(pool, metadata, clean), cwd=REPO, check=True, capture_output=True, timeout=300)
    return root, pool, metadata, _final_files(clean)


@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["before_its_first_bundle", "while_matching"])
def test_a_killed_worker_ends_the_run_with_one_line_and_the_rerun_gives_the_clean_bytes(pool_and_clean_run, delay):
    root, pool, metadata, clean = pool_and_clean_run
    out = root / f"killed-{delay}"
    log = root / f"killed-{delay}.stderr"  # a file, not a pipe: Beam's workers log a lot while the test waits
    with open(log, "w") as stderr_file:
        run = subprocess.Popen(_command(pool, metadata, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr_file)
    worker, deadline = None, time.monotonic() + 120
    while worker is None and run.poll() is None and time.monotonic() < deadline:
        worker = _worker_of(run.pid)
        time.sleep(0.01)
    assert worker is not None, "no worker process seen"
    time.sleep(delay)
    os.kill(worker, signal.SIGKILL)
    try:
        run.wait(timeout=120)  # Beam's runner alone would wait forever for a worker killed this early
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
        pytest.fail("the run went on waiting for its dead worker")
    stderr = log.read_text()

    assert run.returncode == 3, stderr[-2000:]
    last = stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"error: an SDK worker process died (pid {worker}, killed by signal 9 (SIGKILL)): "), last
    assert last.endswith("rerunning the same command is safe") or "--batch_size" in last, last
    assert "Traceback" in stderr  # the full story stays above the line
    assert "stats.json" not in _final_files(out)

    rerun = subprocess.run(_command(pool, metadata, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _final_files(out) == clean
