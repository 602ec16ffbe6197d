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

The warm process is each worker's parent, so it alone learns how a worker
ended: a worker killed by a signal (SIGKILL from a user or the kernel's
out-of-memory killer) or gone with a non-zero status is written, as its wait
status, to a second pipe that the launcher reads when its run fails
(`WarmWorkers.deaths`): the run's last line can then name the signal
(beam_pipeline.curation.worker_failure) instead of Beam's `Channel closed
prematurely.`

Linux only (fork after imports is not safe on macOS), never where the
launcher already runs threads (an in-process run after another, in tests), and
not with BALANCEBEAM_WARM_WORKERS=0; otherwise, and whenever the relay cannot
reach the warm process, workers start cold as before.
"""

from __future__ import annotations

import contextlib
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
# Written by the launcher before it closes its end of the pipe: end the workers too.
KILL_WORKERS = b"k"
# A Unix socket's path must fit sockaddr_un.sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


class WarmWorkers:
    """The launcher's handle on the warm process: the worker command to run, and `close`."""

    def __init__(self, pid: int, directory: str, socket_path: str, keep_alive: int, deaths: int = -1):
        self.pid = pid
        self._directory = directory
        self._keep_alive = keep_alive
        self._deaths = deaths
        self._seen: list[tuple[int, int]] = []
        self._seen_changed = threading.Condition()
        self._watcher: Optional[threading.Thread] = None
        self.command = f"{shlex.quote(sys.executable)} -I -S {shlex.quote(RELAY)} {shlex.quote(socket_path)}"

    def watch(self, on_death: Callable[[int, int], None]) -> None:
        """From now on read the deaths in a thread of this process, calling `on_death(pid, status)` for each.

        A worker that dies before its first bundle leaves Beam's runner waiting
        for it forever: the launcher needs to hear of it while it waits.
        """
        if self._deaths >= 0 and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, args=(on_death,), name="bb-worker-deaths", daemon=True)
            self._watcher.start()

    def _watch(self, on_death: Callable[[int, int], None]) -> None:
        while True:
            chunk = self._read(None)
            if not chunk:
                return  # the warm process is gone, and with it every report
            for pid, status in self._record(chunk):
                on_death(pid, status)

    def _read(self, timeout: Optional[float]) -> Optional[bytes]:
        """What the deaths pipe holds; None when nothing came within `timeout`, b"" once it is closed."""
        ready, _, _ = select.select([self._deaths], [], [], timeout)
        return os.read(self._deaths, 1 << 16) if ready else None

    def _record(self, chunk: bytes) -> list[tuple[int, int]]:
        deaths = parse_deaths(chunk)  # each record is one write of a few bytes: never split between reads
        with self._seen_changed:
            self._seen.extend(deaths)
            self._seen_changed.notify_all()
        return deaths

    def deaths(self, wait_seconds: float = 0.0) -> list[tuple[int, int]]:
        """(pid, wait status) of each worker that died by a signal or a non-zero status, so far.

        `wait_seconds`: how long to wait for the first one. A run that failed
        because a worker died may notice it (its channel closed) a moment before
        the warm process has reaped the worker.
        """
        if self._watcher is None and self._deaths >= 0:
            deadline = time.monotonic() + wait_seconds
            while True:
                chunk = self._read(0.0 if self._seen else max(0.0, deadline - time.monotonic()))
                if not chunk:
                    break
                self._record(chunk)
        with self._seen_changed:
            self._seen_changed.wait_for(lambda: self._seen, timeout=wait_seconds if self._watcher else 0)
            return list(self._seen)

    def close(self, kill_workers: bool = False) -> None:
        """End the warm process (workers it forked run on until the runner stops them); it removes its socket.

        `kill_workers`: a failed run's, whose runner will never stop its workers
        (one of them died): the warm process kills them first (SIGKILL).
        """
        if self._keep_alive < 0:
            return
        if kill_workers:
            with contextlib.suppress(OSError):
                os.write(self._keep_alive, KILL_WORKERS)
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
        if self._deaths >= 0:
            if self._watcher is not None:
                self._watcher.join(CLOSE_SECONDS)  # the pipe's writer is gone: it has read its end
            os.close(self._deaths)
            self._deaths = -1


def parse_deaths(data: bytes) -> list[tuple[int, int]]:
    """The records of the deaths pipe: one `PID STATUS` line per worker (STATUS: os.waitpid's)."""
    deaths = []
    for line in data.decode("ascii", errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 2 and all(field.lstrip("-").isdigit() for field in fields):
            deaths.append((int(fields[0]), int(fields[1])))
    return deaths


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
    deaths, report = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the launcher's buffered output again
    pid = os.fork()
    if pid == 0:
        try:
            os.close(keep_alive)
            os.close(deaths)
            _serve(server, alive, directory, body or run_sdk_harness, report)
        finally:
            os._exit(0)
    os.close(alive)
    os.close(report)
    server.close()
    return WarmWorkers(pid, directory, socket_path, keep_alive, deaths)


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


def _serve(server: socket.socket, alive: int, directory: str, body: WorkerBody, report: int = -1) -> None:
    """The warm process: fork a worker per request until the launcher is gone, then remove `directory`.

    `report`: the deaths pipe, where each worker that ended by a signal or a
    non-zero status is written as it is reaped (never blocking: a full or closed
    pipe loses the record, not the worker).
    """
    _close_other_descriptors({server.fileno(), alive, report})
    _name_process(WARM_PROCESS_NAME)
    # Ctrl-C is the launcher's to handle; this process ends with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if report >= 0:
        os.set_blocking(report, False)
    # The one import a worker needs that the launcher has not made. (Importing the
    # report's matplotlib here as well was measured: what the report gained, the
    # automaton build, sharing the cores with it, lost.)
    importlib.import_module(SDK_WORKER_MODULE)

    workers: dict[int, int] = {}  # pid -> a pidfd that becomes readable when it ends (-1: none, polled)
    while True:
        polled = -1 in workers.values()
        watched = [server, alive, *(fd for fd in workers.values() if fd >= 0)]
        ready, _, _ = select.select(watched, [], [], POLL_SECONDS if polled else None)
        _reap(workers, report, block=False)
        if alive in ready:
            if os.read(alive, 1) == KILL_WORKERS:
                for pid in workers:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            break  # closed: the launcher is done with workers, or gone
        if server not in ready:
            continue
        connection, _ = server.accept()
        pid = os.fork()
        if pid == 0:
            server.close()
            os.close(alive)
            if report >= 0:
                os.close(report)
            for fd in workers.values():
                if fd >= 0:
                    os.close(fd)
            _run_worker(connection, body)
        connection.close()
        workers[pid] = _pidfd(pid)
    # The socket's directory is removed here, not by the launcher's close(): a launcher
    # that was killed, or left with os._exit, never calls it.
    server.close()
    shutil.rmtree(directory, ignore_errors=True)
    # Each worker's status went back over its socket. Waiting for every one (they
    # have ended, or end now, with the runner) also adds their CPU time to this
    # process's children's, and through it to the launcher's: the `time` of a run.
    _reap(workers, report, block=True)


# How often the warm process looks for ended workers where the kernel gives no pidfd (before Linux 5.3).
POLL_SECONDS = 0.2


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _reap(workers: dict[int, int], report: int, block: bool) -> None:
    """Wait for the workers that have ended (all of them: `block`); report the abnormal ends."""
    for pid, fd in list(workers.items()):
        ended, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if ended == 0:
            continue
        del workers[pid]
        if fd >= 0:
            os.close(fd)
        if status != 0 and report >= 0:
            try:
                os.write(report, f"{pid} {status}\n".encode("ascii"))
            except OSError:  # the launcher has stopped listening (closed, gone, or a full pipe)
                pass


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
