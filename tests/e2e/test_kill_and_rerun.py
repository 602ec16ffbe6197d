"""A run killed at any point leaves no partial file under a final name, and a
rerun into the same directory produces the complete, identical result."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from beam_pipeline.demo import make_demo_data
from helpers import REPO, demo_pool_command


def _final_files(directory: Path) -> dict[str, bytes]:
    """Files under their final names: temporary files ('.name.tmp-*') and the spill
    directory between the passes ('.balancebeam-work/') are hidden."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


def _command(pool: Path, metadata: Path, out: Path) -> list[str]:
    return demo_pool_command(pool, metadata, out)


@pytest.fixture(scope="module")
def pool_and_clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    metadata, pool = make_demo_data(root / "data", captions=200_000, shards=6)
    clean = root / "clean"
    subprocess.run(_command(pool, metadata, clean), cwd=REPO, check=True, capture_output=True, timeout=300)
    return pool, metadata, _final_files(clean), root


def _kill_when(condition, command, timeout=120.0) -> bool:
    """Start the run in its own process group; SIGKILL the group once condition() holds."""
    process = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.005)
    finished = process.poll() is not None
    if not finished:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return not finished


@pytest.mark.parametrize("kill_point", ["while_matching", "after_first_output_file"])
def test_kill_then_rerun_gives_the_clean_result(pool_and_clean_run, kill_point):
    pool, metadata, clean, root = pool_and_clean_run
    out = root / kill_point
    started = time.monotonic()
    if kill_point == "while_matching":
        condition = lambda: time.monotonic() - started > 2.5  # noqa: E731 - imports done, pipeline reading and matching
    else:
        condition = lambda: out.exists() and bool(_final_files(out))  # noqa: E731
    killed = _kill_when(condition, _command(pool, metadata, out))
    assert killed, "the run finished before the kill point; make the pool bigger"
    partial = _final_files(out) if out.exists() else {}
    assert "stats.json" not in partial
    # Whatever exists under a final name is complete: the very bytes of the clean run.
    for name, data in partial.items():
        assert data == clean[name], name
    rerun = subprocess.run(_command(pool, metadata, out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _final_files(out) == clean
    assert not [p for p in out.rglob(".*")], "temporary files or spill files left behind"
