"""Build a local run's automaton into the machine's cache while the run starts up.

No Beam import. On a first run every worker process used to build the
automaton itself once it had started (~2 s of the first pass). The launcher
instead starts this module as a child process as soon as its checks are done:
the build then overlaps the ~2 s in which the launcher constructs the pipeline
and the workers start, time in which a core is mostly idle, and the workers
load the finished file (transforms.runtime.automaton_cache waits for a builder
that holds the file's lock instead of building the same automaton again).

    python -m transforms.runtime.prebuild CACHE_DIR METADATA_FILE SHA256 MATCHER

Only a local metadata file whose bytes still have the run's sha256 is built;
anything else (a cached file already there, another builder at work, a
changed file) ends the child quietly, and the workers build as they would
without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

from transforms.core.matching import EntryMatcher
from transforms.metadata.lists import MetadataError, parse_metadata
from transforms.runtime import automaton_cache


def start(cache_dir: str, metadata_path: str, metadata_sha256: str, matcher: str) -> Optional[subprocess.Popen]:
    """Start the child that builds this matcher into `cache_dir`; None when there is nothing to build."""
    if not os.path.isfile(metadata_path):
        return None  # a remote list: the workers read it themselves
    if os.path.exists(automaton_cache.cache_path(cache_dir, metadata_sha256, matcher)):
        return None
    return subprocess.Popen(
        [sys.executable, "-m", __name__, cache_dir, metadata_path, metadata_sha256, matcher],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _build(metadata_path: str, metadata_sha256: str, matcher: str) -> EntryMatcher:
    with open(metadata_path, "rb") as handle:
        metadata = parse_metadata(handle.read(), metadata_path, checked_sha256=metadata_sha256)
    if metadata.sha256 != metadata_sha256:
        raise MetadataError(f"metadata file {metadata_path} changed after the run started")
    return EntryMatcher(metadata.entries, matcher)


def main(argv: Sequence[str]) -> int:
    cache_dir, metadata_path, metadata_sha256, matcher = argv
    path = automaton_cache.cache_path(cache_dir, metadata_sha256, matcher)
    try:
        lock = automaton_cache.take_lock(path)
    except OSError:
        return 0  # an unwritable cache: the workers build without it
    if lock is None:
        return 0  # a worker got there first and is building it
    try:
        automaton_cache.write(path, _build(metadata_path, metadata_sha256, matcher))
    except (OSError, MetadataError):
        return 0  # the workers build it, and say why if it fails there too
    finally:
        automaton_cache.release_lock(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
