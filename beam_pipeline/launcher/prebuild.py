"""Build a local run's automaton into the machine's cache while the run starts up.

No Beam import. On a first run every worker process used to build the
automaton itself once it had started (~2 s of the first pass). Instead the
command starts this module as a child process first thing (`start`), before
its own ~1 s of imports, and the child reads the metadata file and builds
the matcher meanwhile, on the core the launcher leaves idle. Once the run's
checks have passed, the launcher tells it where the file goes (`Prebuild.go`:
the cache, the sha256 and the matcher the run checked); the child then takes
the cache file's lock at once, so that a worker that asks before the build
ends waits for the file (transforms.runtime.automaton_cache) instead of
building it too, and writes the file when the build is done.

    python -m beam_pipeline.launcher.prebuild -- CURATE_ARGUMENTS...   (the order: one JSON line on stdin)

The child reads what it needs from the command line before the launcher has
parsed it (`flag_value`): --metadata, --matcher, and where to find captions to
lay a daachorse automaton out for (`profile_captions`: a local Parquet pool's
first file; best effort, the match sets are the same without). Should the
run's checked matcher differ from the one it read, it builds that one after
the order. No order (stdin closed: failed checks, a run that needs no
automaton here) ends the child without writing, and so do a list whose sha256
is not the one the run checked, a cached file already there, another builder
at work or an unwritable cache: the workers then build as they would without it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import subprocess
import sys
import threading
from typing import Callable, Optional, Sequence

from transforms.core.columns import TEXT
from transforms.core.matching import DAACHORSE, MATCHERS, PROFILE_CAPTIONS, EntryMatcher
from transforms.metadata.lists import Metadata, MetadataError, parse_metadata
from transforms.runtime import automaton_cache


class Prebuild:
    """The launcher's handle on a started child: give it its order, or cancel it."""

    def __init__(self, metadata_path: str, process: subprocess.Popen):
        self.metadata_path = metadata_path
        self._process = process
        self._ordered = False

    def go(self, cache_dir: str, metadata_sha256: str, matcher: str) -> None:
        """Write the matcher for the list of `metadata_sha256` into `cache_dir` once built."""
        order = {"cache_dir": cache_dir, "sha256": metadata_sha256, "matcher": matcher}
        try:
            self._process.stdin.write(json.dumps(order).encode("utf-8") + b"\n")
            self._process.stdin.close()
            self._ordered = True
        except OSError:  # the child is gone (an unreadable list): the workers build
            self.cancel()

    def cancel(self) -> None:
        """No file to write: the child, which has written nothing yet, is stopped at once."""
        if not self._ordered:
            self._process.kill()
        self.wait()

    def wait(self) -> None:
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        self._process.wait()


def flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value of `flag` (e.g. "--metadata") in a command line, either spelling, or None.

    Read before the command line is parsed, for `start`: the last one counts, as
    with argparse. An abbreviated flag is not found, which only means no early
    start (or another matcher built first, or no profile).
    """
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def start(argv: Sequence[str]) -> Optional[Prebuild]:
    """Start the child for a command line whose --metadata is a local file; else None (the workers build)."""
    metadata_path = flag_value(argv, "--metadata")
    if not metadata_path or not os.path.isfile(metadata_path):
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, "--", *argv], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    return Prebuild(metadata_path, process)


def profile_captions(argv: Sequence[str], limit: int = PROFILE_CAPTIONS) -> list[str]:
    """Captions to lay the automaton out for, read before the run's checks; best effort.

    The first file of an --input pattern (the last given), when it is a local
    Parquet file, from the caption column the run will read (--text_field, else
    the --input_preset's, else `text`). Any other input, or any failure, gives
    none: the automaton is then laid out without a profile and matches the same.
    """
    # Imported here: the command's early start must not wait for pyarrow.
    import pyarrow.parquet as pq

    from transforms.formats.layout import infer_format, preset_fields
    from transforms.formats.tar import expand_braces

    pattern = flag_value(argv, "--input")
    if not pattern:
        return []
    try:
        paths = sorted({path for name in expand_braces(pattern) for path in glob.glob(name)})
        fmt = flag_value(argv, "--input_format")
        first = next((path for path in paths if (fmt or infer_format(path)) == "parquet"), None)
        if first is None:
            return []
        parquet = pq.ParquetFile(first)
        field, preset = flag_value(argv, "--text_field"), flag_value(argv, "--input_preset")
        if field is None:
            field = preset_fields(preset, "parquet", parquet.schema_arrow.names)["text_field"] if preset else TEXT
        batch = next(parquet.iter_batches(batch_size=limit, columns=[field]), None)
        texts = [] if batch is None else batch.column(field).to_pylist()
    except Exception:  # noqa: BLE001 - only a speed-up: the run's own checks and reader judge the input
        return []
    return [text for text in texts if isinstance(text, str)]


def _read(metadata_path: str) -> Optional[Metadata]:
    try:
        with open(metadata_path, "rb") as handle:
            data = handle.read()
        # The entry-id checks (~0.12 s for 500k entries) are the launcher's: an order names
        # the sha256 of a list that passed them, and only those bytes are ever written.
        metadata = parse_metadata(data, metadata_path, checked_sha256=hashlib.sha256(data).hexdigest())
    except (OSError, MetadataError):
        return None  # the run's checks say what is wrong
    # Only a non-string entry would break the build (~0.01 s for 500k): the run refuses the list.
    return metadata if all(type(entry) is str for entry in metadata.entries) else None


class _Order:
    """The launcher's order, read from stdin beside the build; the cache file's lock taken as it comes.

    `abandon()` is called, from the reading thread, as soon as it is clear that
    nothing will be written (no order, the list changed, the file is there or being
    built, the cache cannot be written): the child process passes os._exit, so that
    a cancelled run or a launcher that died leaves no build running on.
    """

    def __init__(self, metadata_sha256: str, abandon: Callable[[], None]):
        self._sha256 = metadata_sha256
        self._abandon = abandon
        self.matcher: Optional[str] = None
        self.path: Optional[str] = None
        self.lock: Optional[str] = None
        self._thread = threading.Thread(target=self._take, daemon=True)
        self._thread.start()

    def _take(self) -> None:
        if not self._took():
            self._abandon()

    def _took(self) -> bool:
        line = sys.stdin.buffer.readline()
        if not line:
            return False
        order = json.loads(line)
        if order["sha256"] != self._sha256:
            return False  # the list changed between this read and the run's checks
        path = automaton_cache.cache_path(order["cache_dir"], self._sha256, order["matcher"])
        if os.path.exists(path):
            return False
        try:
            self.lock = automaton_cache.take_lock(path)  # None: a worker got there first and builds it
        except OSError:
            return False  # an unwritable cache: the workers build without it
        self.matcher, self.path = order["matcher"], path
        return self.lock is not None

    def wait(self) -> None:
        self._thread.join()


def main(argv: Sequence[str], abandon: Callable[[], None] = lambda: None) -> int:
    """The child: build, and write the file the order names. `abandon`: see _Order."""
    argv = argv[1:] if argv[:1] == ["--"] else argv
    metadata = _read(flag_value(argv, "--metadata") or "")
    if metadata is None:
        return 0
    order = _Order(metadata.sha256, abandon)
    matcher = flag_value(argv, "--matcher")
    matcher = matcher if matcher in MATCHERS else DAACHORSE
    # The build releases the GIL (daachorse) or yields it often (pyahocorasick):
    # the order is taken, and the lock with it, while it runs.
    profile = profile_captions(argv)
    built = EntryMatcher(metadata.entries, matcher, profile)
    order.wait()
    if order.lock is None:
        return 0
    try:
        if order.matcher != matcher:
            built = EntryMatcher(metadata.entries, order.matcher, profile)
        automaton_cache.write(order.path, built)
    except OSError:
        return 0
    finally:
        automaton_cache.release_lock(order.lock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], abandon=lambda: os._exit(0)))
