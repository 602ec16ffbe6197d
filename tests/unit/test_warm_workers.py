"""Warm SDK workers: forked by a warm process on a relay's request, with its environment, its status sent back.

Each case runs in a fresh interpreter: the warm process is only forked from a
process with a single thread, which pytest's own process need not be.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm workers are Linux only")

PRELUDE = f"""
import atexit, json, os, subprocess, sys, threading
sys.path.insert(0, {str(REPO)!r})
from beam_pipeline.launcher import warm_workers
"""


def _script(body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment, cwd=REPO
    )


def test_a_worker_runs_in_a_fork_with_the_relays_environment_and_its_status_comes_back(tmp_path):
    done = _script(f"""
        def body(environment):
            with open({str(tmp_path / "seen.json")!r}, "w") as out:
                json.dump({{"token": environment.get("TOKEN"), "parent": os.getppid(),
                            "own_environ": os.environ.get("TOKEN")}}, out)
            return 3
        warm = warm_workers.start(body=body)
        relay = subprocess.run(warm.command, shell=True, env=dict(os.environ, TOKEN="abc"))
        seen = json.load(open({str(tmp_path / "seen.json")!r}))
        print(json.dumps({{"status": relay.returncode, "seen": seen, "warm": warm.pid}}))
        warm.close()
        """)
    assert done.returncode == 0, done.stderr
    result = __import__("json").loads(done.stdout)
    assert result["status"] == 3
    assert result["seen"]["token"] == "abc"
    assert result["seen"]["parent"] == result["warm"], "the worker was not forked by the warm process"


def test_a_worker_that_raises_or_exits_reports_its_status():
    done = _script("""
        def failing(environment):
            raise RuntimeError("boom in the worker")
        def exiting(environment):
            sys.exit(7)
        for body in (failing, exiting):
            warm = warm_workers.start(body=body)
            print(subprocess.run(warm.command, shell=True).returncode)
            warm.close()
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "7"]
    assert "RuntimeError: boom in the worker" in done.stderr


def test_workers_skip_the_launchers_exit_hooks_and_keep_their_output():
    done = _script("""
        atexit.register(lambda: print("launcher hook", flush=True))
        def body(environment):
            sys.stdout.write("worker output, unflushed")
            return 0
        warm = warm_workers.start(body=body)
        subprocess.run(warm.command, shell=True)
        warm.close()
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("launcher hook") == 1  # the launcher's own exit, not the worker's nor the warm process's
    assert "worker output, unflushed" in done.stdout


def test_close_ends_the_warm_process_and_removes_its_private_socket():
    done = _script("""
        warm = warm_workers.start(body=lambda environment: 0)
        directory = os.path.dirname(warm.command.split()[-1])
        print(oct(os.stat(directory).st_mode & 0o777))
        warm.close()
        try:
            os.kill(warm.pid, 0)
            print("alive")
        except ProcessLookupError:
            print("gone")
        print(os.path.exists(directory))
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [oct(stat.S_IRWXU), "gone", "False"]


def test_the_warm_process_ends_with_the_launcher_even_without_close():
    done = _script("""
        warm = warm_workers.start(body=lambda environment: 0)
        print(warm.pid, os.path.dirname(warm.command.split()[-1]), flush=True)
        os._exit(0)  # no close(): the pipe's end is closed with the process
        """)
    assert done.returncode == 0, done.stderr
    pid, directory = done.stdout.split()
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)  # not our child: gone once it has exited (init reaps it)
        except ProcessLookupError:
            # and its private socket's directory with it (a killed launcher never closes)
            assert not os.path.exists(directory), directory
            return
        time.sleep(0.05)
    pytest.fail(f"the warm process {pid} outlived its launcher")


def test_the_warm_process_holds_none_of_the_launchers_pipes_open():
    # The prebuild child waits for EOF on its stdin: a copy of the write end kept
    # by the warm process would keep it waiting after the launcher closed it.
    done = _script("""
        import select
        read_end, write_end = os.pipe()
        warm = warm_workers.start(body=lambda environment: 0)
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 10)
        print("eof" if ready and os.read(read_end, 1) == b"" else "held open")
        warm.close()
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["eof"]


def test_no_warm_process_beside_other_threads_or_when_switched_off():
    done = _script(
        """
        print(warm_workers.start(body=lambda environment: 0) is None)
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        print(warm_workers.start(body=lambda environment: 0) is None)
        stop.set()
        """,
        env={"BALANCEBEAM_WARM_WORKERS": "0"},
    )
    assert done.stdout.split() == ["True", "True"], done.stderr
    threaded = _script("""
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        print(warm_workers.start(body=lambda environment: 0) is None)
        stop.set()
        """)
    assert threaded.stdout.split() == ["True"], threaded.stderr


def test_a_relay_with_no_warm_process_starts_a_cold_worker(tmp_path):
    relay = os.path.join(REPO, "beam_pipeline", "launcher", "worker_relay.py")
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_SERVICE_DESCRIPTOR")}
    done = subprocess.run(
        [sys.executable, "-I", "-S", relay, str(tmp_path / "no-such-socket")],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=REPO,
    )
    # Beam's own worker, started in its place, fails for want of the runner's control address.
    assert done.returncode != 0
    assert "CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr


def test_a_forked_workers_cpu_time_counts_in_the_launchers_children():
    # As for a cold worker, which Beam waits for: `time`, and bench_first_run's cpu_s, see it.
    done = _script("""
        import resource, time
        import apache_beam.runners.worker.sdk_worker_main  # as the launcher has: the warm process's own CPU stays small
        def body(environment):
            end = time.process_time() + 1.0
            while time.process_time() < end:
                pass
            return 0
        warm = warm_workers.start(body=body)
        subprocess.run(warm.command, shell=True)
        warm.close()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(children.ru_utime + children.ru_stime)
        """)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) >= 0.95


def test_the_warm_process_reports_each_worker_that_died_with_its_signal_or_status():
    # The launcher's run fails with Beam's `Channel closed prematurely.`; the warm
    # process, each worker's parent, is what knows that a signal ended it.
    done = _script("""
        import signal
        def body(environment):
            how = environment["HOW"]
            if how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            return {"clean": 0, "status": 5}[how]
        warm = warm_workers.start(body=body)
        for how in ("clean", "sigkill", "status"):
            subprocess.run(warm.command, shell=True, env=dict(os.environ, HOW=how))
        import time
        deadline = time.monotonic() + 10
        deaths = warm.deaths(wait_seconds=5)
        while len(deaths) < 2 and time.monotonic() < deadline:  # each is reported once reaped
            time.sleep(0.05)
            deaths = warm.deaths()
        print(json.dumps([[os.WIFSIGNALED(s) and os.WTERMSIG(s), os.WIFEXITED(s) and os.WEXITSTATUS(s)]
                          for _, s in deaths]))
        warm.close()
        print(len(warm.deaths()))  # what was reported stays readable after close
        """)
    assert done.returncode == 0, done.stderr
    reported, after_close = done.stdout.splitlines()
    assert __import__("json").loads(reported) == [[9, False], [False, 5]]  # the clean exit is not a death
    assert after_close == "2"


def test_deaths_records_parse_and_skip_garbage():
    from beam_pipeline.launcher.warm_workers import parse_deaths

    assert parse_deaths(b"12 9\nnot a record\n13 256\n") == [(12, 9), (13, 256)]
