"""Local SDK workers forked from a warm process instead of started cold.

No Beam import at load. In --direct_running_mode=multi_processing the
DirectRunner starts each SDK worker as a new interpreter
(`python -m apache_beam.runners.worker.sdk_worker_main`), which spends ~1 s of
CPU importing Beam, pyarrow and the pipeline's modules again, while the
launcher and the automaton build keep both cores of a small machine busy.

The launcher has imported all of them by the time it has built its options.
`start()` forks it there, while it still runs one thread, into a warm process
that imports Beam's worker module and then waits on a Unix socket in a private
directory (mode 0700: only this user may ask it for a worker). The runner's
worker command becomes `beam_pipeline/launcher/worker_relay.py SOCKET`, a
standard-library script that starts in ~10 ms and sends the environment Beam
gave it; the warm process forks a worker with that environment, which runs
Beam's `sdk_worker_main.main` as a cold one would, and sends its exit status
back for the relay to exit with. The warm process ends when the launcher
closes its end of a pipe (`WarmWorkers.close`) or exits.

Linux only (fork after imports is not safe on macOS), never where the
launcher already runs threads (an in-process run after another, in tests), and
not with BALANCEBEAM_WARM_WORKERS=0; otherwise, and whenever the relay cannot
reach the warm process, workers start cold as before.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import random
import select
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Callable, Mapping, Optional

from transforms.runtime.quick_exit import SDK_WORKER_MODULE

# A worker's body: given the environment Beam set for it, run and return the exit status.
WorkerBody = Callable[[Mapping[str, str]], int]

RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_relay.py")
PR_SET_NAME = 15  # <linux/prctl.h>
# How long `close` waits for the warm process (it is idle, or finishing an import) before killing it.
CLOSE_SECONDS = 10
# A Unix socket's path must fit sockaddr_un.sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


class WarmWorkers:
    """The launcher's handle on the warm process: the worker command to run, and `close`."""

    def __init__(self, pid: int, directory: str, socket_path: str, keep_alive: int):
        self.pid = pid
        self._directory = directory
        self._keep_alive = keep_alive
        self.command = f"{shlex.quote(sys.executable)} -I -S {shlex.quote(RELAY)} {shlex.quote(socket_path)}"

    def close(self) -> None:
        """End the warm process (workers it forked run on until the runner stops them); it removes its socket."""
        if self._keep_alive < 0:
            return
        os.close(self._keep_alive)
        self._keep_alive = -1
        deadline = time.monotonic() + CLOSE_SECONDS
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:  # never seen; a hung warm process must not hold the command
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                shutil.rmtree(self._directory, ignore_errors=True)  # what the killed process did not
                break
            time.sleep(0.005)


# The processes' names (`ps -o comm`, psutil's name(); at most 15 bytes): their command
# lines are the launcher's, copied by fork.
WARM_PROCESS_NAME = "bb-warm"
WORKER_PROCESS_NAME = "bb-sdk-worker"

# Set to 0 to start every worker cold, as Beam does.
SWITCH = "BALANCEBEAM_WARM_WORKERS"


def supported() -> bool:
    """Whether this process may fork a warm process now: Linux, no thread but this one, not switched off."""
    return (
        os.environ.get(SWITCH, "1") != "0"
        and sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and threading.active_count() == 1
    )


def start(body: Optional[WorkerBody] = None) -> Optional[WarmWorkers]:
    """Fork the warm process; None where that is not safe or not possible (workers then start cold).

    `body`: what each forked worker runs (tests); Beam's SDK harness by default.
    """
    if not supported():
        return None
    directory = tempfile.mkdtemp(prefix="balancebeam-workers-")
    socket_path = os.path.join(directory, "socket")
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        shutil.rmtree(directory, ignore_errors=True)
        return None
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(16)
    alive, keep_alive = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the launcher's buffered output again
    pid = os.fork()
    if pid == 0:
        try:
            os.close(keep_alive)
            _serve(server, alive, directory, body or run_sdk_harness)
        finally:
            os._exit(0)
    os.close(alive)
    server.close()
    return WarmWorkers(pid, directory, socket_path, keep_alive)


def _name_process(name: str) -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode("ascii"), 0, 0, 0)
    except (OSError, AttributeError):  # a name only; the process works without it
        pass


def _close_other_descriptors(keep: set) -> None:
    # The launcher's pipes (the prebuild child's stdin among them) must see their
    # ends closed when the launcher closes them, not held open by this copy.
    low = 3
    for fd in sorted(keep) + [os.sysconf("SC_OPEN_MAX")]:
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


def _serve(server: socket.socket, alive: int, directory: str, body: WorkerBody) -> None:
    """The warm process: fork a worker per request until the launcher is gone, then remove `directory`."""
    _close_other_descriptors({server.fileno(), alive})
    _name_process(WARM_PROCESS_NAME)
    # Ctrl-C is the launcher's to handle; this process ends with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The one import a worker needs that the launcher has not made. (Importing the
    # report's matplotlib here as well was measured: what the report gained, the
    # automaton build, sharing the cores with it, lost.)
    importlib.import_module(SDK_WORKER_MODULE)

    workers: list[int] = []
    while True:
        ready, _, _ = select.select([server, alive], [], [])
        if alive in ready:
            break  # closed: the launcher is done with workers, or gone
        connection, _ = server.accept()
        pid = os.fork()
        if pid == 0:
            server.close()
            os.close(alive)
            _run_worker(connection, body)
        connection.close()
        workers = [worker for worker in workers if os.waitpid(worker, os.WNOHANG) == (0, 0)] + [pid]
    # The socket's directory is removed here, not by the launcher's close(): a launcher
    # that was killed, or left with os._exit, never calls it.
    server.close()
    shutil.rmtree(directory, ignore_errors=True)
    # Each worker's status went back over its socket. Waiting for every one (they
    # have ended, or end now, with the runner) also adds their CPU time to this
    # process's children's, and through it to the launcher's: the `time` of a run.
    for worker in workers:
        os.waitpid(worker, 0)


def _received(connection: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = connection.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_sdk_harness(environment: Mapping[str, str]) -> int:
    """Beam's SDK worker, as `python -m apache_beam.runners.worker.sdk_worker_main` runs it with `environment`."""
    from apache_beam.runners.worker import sdk_worker_main

    os.environ.clear()
    os.environ.update(environment)
    # As in a cold worker: its own argv, its own random state, no log handler but Beam's.
    sys.argv = [sdk_worker_main.__file__]
    random.seed()
    logging.getLogger().handlers.clear()
    sdk_worker_main.main(sys.argv)
    return 0


def _run_worker(connection: socket.socket, body: WorkerBody) -> None:
    """A forked worker: run `body` with the relay's environment, send back the status, exit."""
    status = 1
    try:
        _name_process(WORKER_PROCESS_NAME)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        status = body(json.loads(_received(connection)))
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as a cold worker would, then its status sent
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            connection.sendall(str(status).encode("ascii"))
            connection.close()
        finally:
            # The launcher's exit hooks were copied with its memory: none of them is the worker's.
            os._exit(status)
