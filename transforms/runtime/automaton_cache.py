"""A machine-local cache of built matchers, keyed by the metadata and the matching code.

No Beam import. Building the automaton of the 500k-entry list takes ~2 s
per worker process (parse, check, pad, insert, link); loading it from local
disk takes ~0.05 s (daachorse) or ~0.3 s (pyahocorasick). A local run starts a
fresh worker process per core every time, so a rerun on the same metadata
(another t, another pool) loads instead of building.

The file name holds a digest of everything the automaton depends on: the
metadata file's sha256, the matcher library and its version, the source of
the padding and matching code, and the Python version. Any change makes a
new name; a file that does not load is rebuilt and replaced. One builder per
file at a time (an exclusive lock file naming its host and process); the
others wait for its file. The newest KEEP files are kept.

The cache directory is the user's own (created 0700), and that is checked,
as ssh checks its keys: a directory or file that another user owns or that
group or others may write is refused (`unsafe_reason`: the command fails
before any work, one line; a worker builds without the cache), since a file
planted there would be loaded by the next run. And loading runs no code a
file names: the unpickler only makes the few classes a matcher is made of
(`_MatcherUnpickler`); any other name in a file makes it a foreign file, rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import socket
import stat
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Optional

from transforms.core import matching, spacing
from transforms.core.matching import DAACHORSE, EntryMatcher

KEEP = 3
PREFIX = "automaton-"
SUFFIX = ".pickle"
# A lock older than this belongs to a builder that died: build anyway.
STALE_LOCK_SECONDS = 600
# How long a process waits for another one building the same matcher (~2 s for 500k entries).
WAIT_SECONDS = 120
WAIT_POLL_SECONDS = 0.05

_LOGGER = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """$BALANCEBEAM_CACHE_DIR, else $XDG_CACHE_HOME/balancebeam, else ~/.cache/balancebeam."""
    given = os.environ.get("BALANCEBEAM_CACHE_DIR")
    if given:
        return given
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "balancebeam")


def _code_digest() -> str:
    digest = hashlib.sha256()
    for module in (spacing, matching):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def cache_path(cache_dir: str, metadata_sha256: str, matcher: str = DAACHORSE) -> str:
    """Where the matcher for this metadata, library, code and library version lives."""
    key = "\n".join(
        [
            metadata_sha256,
            _code_digest(),
            matcher,
            version(matcher),
            f"{sys.version_info.major}.{sys.version_info.minor}",
            str(pickle.HIGHEST_PROTOCOL),
        ]
    )
    return os.path.join(cache_dir, PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32] + SUFFIX)


def _why_not_private(info: os.stat_result, what: str, path: str) -> Optional[str]:
    if info.st_uid != os.geteuid():
        return f"{what} {path} is owned by another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} {path} may be written by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def unsafe_reason(cache_dir: str) -> Optional[str]:
    """Why `cache_dir` must not be used (someone else could put a file there), or None.

    The directory, when it exists, must be the user's and writable by the user
    only; each directory above it the user's or root's, and not writable by
    others unless sticky (/tmp: no one may rename what another user owns in it).
    A group-writable directory above is tolerated: a user's own group, on many
    systems, by default.
    """
    path = os.path.realpath(cache_dir)
    if os.path.lexists(path):
        info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            return f"{path} is not a directory"
        reason = _why_not_private(info, "the directory", path)
        if reason:
            return reason
    parent = os.path.dirname(path)
    while True:
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(parent)
            if info.st_uid not in (0, os.geteuid()):
                return f"the directory {parent} above it is owned by another user (uid {info.st_uid})"
            if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
                return (
                    f"the directory {parent} above it may be written by anyone (mode {stat.S_IMODE(info.st_mode):04o})"
                )
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


# Every global a cached matcher's pickle names (protocol 5): the matcher, its automaton, numpy's arrays.
_MATCHER_GLOBALS = frozenset(
    {
        ("transforms.core.matching", "EntryMatcher"),
        ("daachorse", "DoubleArrayAhoCorasick"),
        ("ahocorasick", "Automaton"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "dtype"),
    }
)


class _MatcherUnpickler(pickle.Unpickler):
    """Unpickles a matcher and nothing else: a file naming any other callable is refused, not run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _MATCHER_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a matcher")
        return super().find_class(module, name)


def _open_private(path: str):
    """`path` opened for reading if it is the user's own regular file, written by the user only."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    handle = os.fdopen(descriptor, "rb")
    info = os.fstat(descriptor)  # the very file read, not a name that could be swapped meanwhile
    reason = "it is not a regular file" if not stat.S_ISREG(info.st_mode) else _why_not_private(info, "it", path)
    if reason:
        handle.close()
        raise PermissionError(reason)
    return handle


def _load(path: str, num_entries: Optional[int], matcher_name: str) -> Optional[EntryMatcher]:
    try:
        with _open_private(path) as handle:
            matcher = _MatcherUnpickler(handle).load()
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: rebuild it
        _LOGGER.warning("automaton cache %s does not load (%s: %s); rebuilding it", path, type(error).__name__, error)
        return None
    if (
        not isinstance(matcher, EntryMatcher)
        or matcher.matcher != matcher_name
        or (num_entries is not None and matcher.num_entries != num_entries)
    ):
        _LOGGER.warning("automaton cache %s holds something else; rebuilding it", path)
        return None
    return matcher


def _lock_is_live(lock: str) -> bool:
    """True while the process that holds `lock` may still be building (not stale, not dead)."""
    try:
        age = time.time() - os.path.getmtime(lock)
        with open(lock, encoding="ascii", errors="replace") as handle:
            host, _, pid = handle.read().partition(" ")
    except OSError:
        return False  # released meanwhile
    if age >= STALE_LOCK_SECONDS:
        return False
    if host == socket.gethostname() and pid.strip().isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False  # its builder died
        except OSError:
            pass  # alive, another user's
    return True


def take_lock(path: str) -> Optional[str]:
    """Create `path`.lock for this process, or None when another live builder holds it."""
    lock = path + ".lock"
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            if _lock_is_live(lock):
                return None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # a dead builder's: take it over
            continue
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()}")
        return lock
    return None


def release_lock(lock: str) -> None:
    """Remove a lock that take_lock gave this process."""
    with contextlib.suppress(OSError):
        os.unlink(lock)


def write(path: str, matcher: EntryMatcher) -> None:
    """Write `matcher` to `path` atomically (a reader never sees half a file)."""
    directory = os.path.dirname(path)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", suffix=SUFFIX, delete=False)
    try:
        with handle:
            pickle.dump(matcher, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
    _prune(directory)


def _wait_for_builder(path: str, num_entries: Optional[int], matcher: str) -> Optional[EntryMatcher]:
    """Another process is building this matcher: wait for its file rather than build it twice."""
    deadline = time.monotonic() + WAIT_SECONDS
    lock = path + ".lock"
    while time.monotonic() < deadline and _lock_is_live(lock):
        time.sleep(WAIT_POLL_SECONDS)
    return _load(path, num_entries, matcher)


def _prune(directory: str) -> None:
    files = sorted(Path(directory).glob(PREFIX + "*" + SUFFIX), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in files[KEEP:]:
        stale.unlink(missing_ok=True)


def cached_matcher(
    cache_dir: Optional[str],
    metadata_sha256: str,
    build: Callable[[], EntryMatcher],
    num_entries: Optional[int] = None,
    matcher: str = DAACHORSE,
) -> EntryMatcher:
    """The matcher from the cache, or `build()` and keep it there; no cache_dir: just build.

    `build` must make a matcher of library `matcher`. `num_entries`, when
    given, must equal the cached matcher's (a cheap sanity check). While
    another process builds the same matcher (the launcher's `prebuild`, or a
    worker that came first), this one waits for its file instead of building
    it too; a builder that died or takes over WAIT_SECONDS is not waited for.
    """
    if not cache_dir:
        return build()
    unsafe = unsafe_reason(cache_dir)
    if unsafe:  # the command refused it before any work; it has changed since
        _LOGGER.warning("automaton cache %s not used: %s", cache_dir, unsafe)
        return build()
    path = cache_path(cache_dir, metadata_sha256, matcher)
    loaded = _load(path, num_entries, matcher)
    if loaded is None:
        try:
            lock = take_lock(path)
        except OSError as error:  # a read-only or full disk: the run goes on without a cache
            _LOGGER.warning("automaton cache %s not used: %s", path, error)
            return build()
        if lock is None:
            loaded = _wait_for_builder(path, num_entries, matcher)
        else:
            try:
                built = build()
                try:
                    write(path, built)
                except OSError as error:
                    _LOGGER.warning("automaton cache %s not written: %s", path, error)
                return built
            finally:
                release_lock(lock)
    if loaded is None:
        return build()
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: pruned last
    return loaded
