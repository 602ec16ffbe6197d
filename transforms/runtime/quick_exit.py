"""Let a local process end without tearing down its heap: Beam's SDK workers, and the launcher.

No Beam import. When the DirectRunner's FnApiRunner finishes, it stops its SDK
worker subprocesses one after the other and waits for each to exit. A worker
that holds the 500k-entry automaton spends ~0.6 s in interpreter finalisation,
freeing millions of objects one by one, so a 2-worker run ends ~1.2 s late.
The launcher, holding the checked metadata and the pipeline graph, spent
another ~0.45 s in it after a run of the 500k list.

After the worker's harness has returned, every bundle is finished and
reported and its log handler is flushed; after the launcher's run has
returned, every output is written and the summary printed. Nothing is left
to do but run the exit hooks and free memory, which the operating system does
at once. So both leave with `os._exit` once the exit hooks have run (logging's
flush, the job servers' shutdown), keeping the exit status.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

SDK_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
_registered = [False]


def running_as_sdk_worker(main_module=None) -> bool:
    """Whether this process was started as `python -m apache_beam.runners.worker.sdk_worker_main`."""
    main_module = sys.modules.get("__main__") if main_module is None else main_module
    spec = getattr(main_module, "__spec__", None)
    return getattr(spec, "name", None) == SDK_WORKER_MODULE


def exit_status() -> int:
    """The status the interpreter would exit with: 1 once an uncaught exception was printed."""
    return 1 if getattr(sys, "last_value", None) is not None else 0


def _exit_now() -> None:
    # The hooks registered before this one (logging's flush, weakref finalizers)
    # would run after it: run them now, then skip only the heap teardown. The
    # interpreter has flushed sys.stdout and sys.stderr before any exit hook
    # (tests/unit/test_quick_exit.py checks that no output is lost).
    atexit.unregister(_exit_now)
    atexit._run_exitfuncs()
    os._exit(exit_status())


def exit_now(status: int) -> NoReturn:
    """End this process with `status` now: output flushed and exit hooks run, the heap left to the OS."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # what the hooks printed
    os._exit(status)


def exit_quickly_at_end() -> bool:
    """In an SDK worker process, end it without finalisation (once); elsewhere do nothing.

    Returns whether the hook is registered.
    """
    if _registered[0] or not running_as_sdk_worker():
        return _registered[0]
    atexit.register(_exit_now)
    _registered[0] = True
    return True
