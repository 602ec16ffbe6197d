"""A machine-local cache of built matchers, keyed by the metadata and the matching code.

No Beam import. Building the automaton of the 500k-entry list takes ~1.8 s
per worker process (parse, check, pad, insert, link); loading the same
automaton pickled on local disk takes ~0.3 s. A local run starts a fresh
worker process per core every time, so a rerun on the same metadata (another
t, another pool) loads instead of building.

The file name holds a digest of everything the automaton depends on: the
metadata file's sha256, the source of the padding and matching code, and the
pyahocorasick and Python versions. Any change makes a new name; a file that
does not load is rebuilt and replaced. One writer per file at a time (an
exclusive lock file); the others just build. The newest KEEP files are kept.

The cache directory is the user's own (created 0700): files in it are
unpickled, so it must not be writable by anyone else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import ahocorasick

from transforms.core import matching, spacing
from transforms.core.matching import EntryMatcher

KEEP = 3
PREFIX = "automaton-"
SUFFIX = ".pickle"
# A lock older than this belongs to a writer that died: write anyway.
STALE_LOCK_SECONDS = 600

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


def cache_path(cache_dir: str, metadata_sha256: str) -> str:
    """Where the matcher for this metadata, code and library version lives."""
    key = "\n".join(
        [
            metadata_sha256,
            _code_digest(),
            getattr(ahocorasick, "__version__", "?"),
            f"{sys.version_info.major}.{sys.version_info.minor}",
            str(pickle.HIGHEST_PROTOCOL),
        ]
    )
    return os.path.join(cache_dir, PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32] + SUFFIX)


def _load(path: str, num_entries: Optional[int]) -> Optional[EntryMatcher]:
    try:
        with open(path, "rb") as handle:
            matcher = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: rebuild it
        _LOGGER.warning("automaton cache %s does not load (%s: %s); rebuilding it", path, type(error).__name__, error)
        return None
    if not isinstance(matcher, EntryMatcher) or (num_entries is not None and matcher.num_entries != num_entries):
        _LOGGER.warning("automaton cache %s holds something else; rebuilding it", path)
        return None
    return matcher


def _store(path: str, matcher: EntryMatcher) -> bool:
    """Write `matcher` to `path` atomically, unless another process is writing it."""
    directory = os.path.dirname(path)
    lock = path + ".lock"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            if time.time() - os.path.getmtime(lock) < STALE_LOCK_SECONDS:
                return False  # another worker is writing the same file
            descriptor = os.open(lock, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(descriptor)
        try:
            handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", suffix=SUFFIX, delete=False)
            with handle:
                pickle.dump(matcher, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(handle.name, path)
        finally:
            os.unlink(lock)
        _prune(directory)
        return True
    except OSError as error:  # a read-only or full disk: the run goes on without a cache
        _LOGGER.warning("automaton cache %s not written: %s", path, error)
        return False


def _prune(directory: str) -> None:
    files = sorted(Path(directory).glob(PREFIX + "*" + SUFFIX), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in files[KEEP:]:
        stale.unlink(missing_ok=True)


def cached_matcher(
    cache_dir: Optional[str], metadata_sha256: str, build: Callable[[], EntryMatcher], num_entries: Optional[int] = None
) -> EntryMatcher:
    """The matcher from the cache, or `build()` and keep it there; no cache_dir: just build.

    `num_entries`, when given, must equal the cached matcher's (a cheap sanity check).
    """
    if not cache_dir:
        return build()
    path = cache_path(cache_dir, metadata_sha256)
    matcher = _load(path, num_entries)
    if matcher is not None:
        try:
            os.utime(path)  # most recently used: pruned last
        except OSError:
            pass
        return matcher
    matcher = build()
    _store(path, matcher)
    return matcher
