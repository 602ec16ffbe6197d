"""A run that failed because an SDK worker process died, told in one line.

No Beam import. On a local multi-process run, a worker killed by a signal
(SIGKILL from a user, or from the kernel's out-of-memory killer) makes Beam's
FnApiRunner raise `RuntimeError: Channel closed prematurely.` in the launcher,
after a couple of hundred lines of tracebacks from its threads. That says
nothing a user can act on. `message` turns it into the run's last line: a
worker process died (with the signal, when the warm process that forked it
reported it: beam_pipeline.launcher.warm_workers), nothing was finished (no
stats.json: the next run clears the leftovers), the same command can be rerun;
and when memory is the likely cause, what to lower.

Whether the kernel's out-of-memory killer ran is read from its counter in
/proc/vmstat (`oom_kill`, Linux 4.13+), before and after the run: it counts
every process it killed on the machine, so a rise says it ran during this run,
not that it chose our worker. Where the counter cannot be read, a SIGKILL
gets the hint as a possibility, not as a finding.

A worker killed before its first bundle leaves Beam's runner waiting for it
forever (measured with Beam 2.77: the launcher sat idle until killed). While
the run waits, `abort_on_worker_death` has the warm process's reports
interrupt it: a worker killed by a signal raises `WorkerDied` in the
launcher's main thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Iterable, Iterator, Optional, Protocol

VMSTAT = "/proc/vmstat"

# What Beam's launcher raises or logs when a worker's channel goes away under it.
LOST_WORKER_SIGNS = (
    "Channel closed prematurely",
    "Worker subprocess exited with return code",
)

OOM_HINT = "use fewer worker processes (--direct_num_workers) or a smaller --batch_size"
# The command's status when a worker died: the run can be started again as it was.
EXIT_STATUS = 3
# Sent by the launcher to its own main thread when a worker is reported killed.
INTERRUPT = signal.SIGUSR1
INTERRUPT_AGAIN_SECONDS = 1.0


class WorkerDied(BaseException):
    """A worker was killed while the run waited (a BaseException: Beam's runner catches Exception)."""


class Watchable(Protocol):
    def watch(self, on_death) -> None: ...

    def close(self, kill_workers: bool = False) -> None: ...


def end_quietly(warm: Optional[Watchable]) -> None:
    """After a worker died: end the others (Beam's runner never will), and hush the runner's threads.

    Beam's threads go on failing for a moment as their workers go (`Worker
    subprocess exited with return code 1`, logging clients cut): noise after the
    traceback already printed, which would otherwise land below the last line.
    """
    if warm is not None:
        warm.close(kill_workers=True)
    threading.excepthook = lambda arguments: None
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def abort_on_worker_death(warm: Optional[Watchable]) -> Iterator[None]:
    """While inside: a worker killed by a signal raises WorkerDied in this (the main) thread.

    Nothing where there is no warm process (cold workers: no one reports their
    deaths) or outside the main thread (no signal handler can be set there).
    """
    if warm is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True
    main = threading.main_thread().ident

    def on_death(pid: int, status: int) -> None:
        # Again each second until the main thread has left: the first WorkerDied can
        # land where Beam then waits for the dead worker anyway (a thread pool's
        # shutdown on the way out of the block that started the workers).
        while armed and os.WIFSIGNALED(status):
            signal.pthread_kill(main, INTERRUPT)
            time.sleep(INTERRUPT_AGAIN_SECONDS)

    def interrupt(signum, frame) -> None:
        if armed:
            raise WorkerDied()

    previous = signal.signal(INTERRUPT, interrupt)
    warm.watch(on_death)
    try:
        yield
    finally:
        armed = False
        signal.signal(INTERRUPT, previous)


def oom_kills(vmstat: str = VMSTAT) -> Optional[int]:
    """The kernel's count of processes its out-of-memory killer has killed since boot; None if unknown."""
    try:
        with open(vmstat, encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == "oom_kill" and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return None


def _texts(error: BaseException) -> Iterable[str]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield f"{type(error).__name__}: {error}"
        error = error.__cause__ or error.__context__


def looks_like_a_lost_worker(error: BaseException) -> bool:
    """Whether the runner's error (or one it was raised from) is Beam's sign of a worker gone."""
    return any(sign in text for text in _texts(error) for sign in LOST_WORKER_SIGNS)


def describe_status(status: int) -> str:
    """An os.waitpid status in words: 'killed by signal 9 (SIGKILL)', 'exit status 1'."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            return f"killed by signal {number}"
        return f"killed by signal {number} ({name})"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def message(
    error: BaseException,
    deaths: list[tuple[int, int]],
    oom_before: Optional[int],
    oom_after: Optional[int],
) -> Optional[str]:
    """The one line for a run that failed because a worker died; None when that is not why it failed.

    `deaths`: (pid, wait status) of the workers that ended abnormally, as the warm
    process reported them (empty for cold workers, whose parent is Beam's shell).
    A worker killed by a signal is a finding on its own; otherwise the error must
    carry Beam's sign of a lost worker.
    """
    signalled = [(pid, status) for pid, status in deaths if os.WIFSIGNALED(status)]
    if not signalled and not looks_like_a_lost_worker(error):
        return None
    first = (signalled or deaths or [None])[0]
    if first is None:
        what = "an SDK worker process died (how is not known: it was not started by the warm process)"
        sigkill = None
    else:
        pid, status = first
        what = f"an SDK worker process died (pid {pid}, {describe_status(status)})"
        sigkill = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    line = f"{what}: the run did not finish and wrote no stats.json; rerunning the same command is safe"
    oom_ran = oom_before is not None and oom_after is not None and oom_after > oom_before
    if oom_ran:
        return f"{line}. The kernel's out-of-memory killer ran during this run: {OOM_HINT}"
    if sigkill is not False and (oom_before is None or oom_after is None):
        # Unknowable here: SIGKILL is also what the out-of-memory killer sends.
        return f"{line}. If memory ran out (the out-of-memory killer sends SIGKILL): {OOM_HINT}"
    return line
