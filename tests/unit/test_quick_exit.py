"""Worker processes end without heap teardown, with the other exit hooks run and the status kept."""

from __future__ import annotations

import subprocess
import sys
import types

from helpers import REPO
from transforms.runtime.quick_exit import SDK_WORKER_MODULE, running_as_sdk_worker

SCRIPT = """
import atexit, sys
sys.path.insert(0, {repo!r})
from transforms.runtime import quick_exit
atexit.register(lambda: print("earlier hook ran", file=sys.stderr))
quick_exit.running_as_sdk_worker = lambda main_module=None: {as_worker}
print("registered", quick_exit.exit_quickly_at_end(), flush=True)
sys.stdout.write("unflushed tail")
{ending}
"""


def _run(as_worker: bool, ending: str) -> subprocess.CompletedProcess:
    code = SCRIPT.format(repo=str(REPO), as_worker=as_worker, ending=ending)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_only_an_sdk_worker_main_module_counts():
    assert running_as_sdk_worker(types.SimpleNamespace(__spec__=types.SimpleNamespace(name=SDK_WORKER_MODULE)))
    assert not running_as_sdk_worker(types.SimpleNamespace(__spec__=types.SimpleNamespace(name="beam_pipeline.curate")))
    assert not running_as_sdk_worker(types.SimpleNamespace(__spec__=None))
    assert not running_as_sdk_worker()  # pytest itself


def test_a_worker_runs_the_other_hooks_flushes_and_exits_0():
    done = _run(True, "")
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["registered True", "unflushed tail"]  # buffered output survives os._exit
    assert done.stderr == "earlier hook ran\n"


def test_a_worker_that_failed_still_exits_1():
    done = _run(True, "raise RuntimeError('boom')")
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr and done.stderr.endswith("earlier hook ran\n")


def test_any_other_process_is_left_alone():
    done = _run(False, "")
    assert done.returncode == 0 and done.stdout.startswith("registered False")


def test_the_command_leaves_with_its_status_its_output_and_its_hooks_run():
    code = f"""
import atexit, sys
sys.path.insert(0, {str(REPO)!r})
from transforms.runtime import quick_exit
atexit.register(lambda: print("hook ran"))
sys.stdout.write("unflushed summary\\n")
quick_exit.exit_now(3)
print("not reached")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["unflushed summary", "hook ran"]
