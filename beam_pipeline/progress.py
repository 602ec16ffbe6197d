"""Progress lines for local runs: what the pipeline has done so far, at a steady pace.

Beam's local engine reports metrics only when the run ends, and its workers
may be other processes. The spill files between the passes (transforms.beam.spill)
say in their names how many rows they hold, so a thread that lists the spill
directory every few seconds knows how far each pass is, from any number of
worker processes, without asking them anything.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Optional, TextIO

from apache_beam.io.filesystems import FileSystems

# spill_name(): <label>-<random>-<rows>r[-<matched>m][-s<shard>].arrow
_SPILL_NAME = re.compile(
    r"^(?P<label>[A-Za-z0-9_]+)-[0-9a-f]{16}-(?P<rows>\d+)r(?:-(?P<matched>\d+)m)?(?:-s\d+)?\.arrow$"
)


def spill_totals(spill_dir: str) -> dict[str, int]:
    """Rows per spill label, plus `matched_with_entries`, summed over the files there now."""
    totals: dict[str, int] = {}
    try:
        found = FileSystems.match([FileSystems.join(spill_dir, "**")])[0].metadata_list
    except Exception:  # noqa: BLE001 - not created yet, or being deleted at the end
        return totals
    for metadata in found:
        name = _SPILL_NAME.match(metadata.path.rsplit("/", 1)[-1])
        if name:
            totals[name["label"]] = totals.get(name["label"], 0) + int(name["rows"])
            if name["matched"]:
                totals["matched_with_entries"] = totals.get("matched_with_entries", 0) + int(name["matched"])
    return totals


def progress_line(totals: dict[str, int], seconds: float, started: bool = False, balancing: bool = True) -> str:
    """One line: records read and matched so far (and their rate while reading), then the sampling pass.

    `started`: whether an earlier line saw spill files. They are deleted once
    stats.json is written, so none after some means the run is finishing.
    `balancing` False (--balance none): no pass leaves counted spill files, so the line
    only says the run goes on.
    """
    return _line(totals, seconds, started, balancing) + _dedup_part(totals)


def _dedup_part(totals: dict[str, int]) -> str:
    """--dedup url/text: the records the exact kinds have read so far (the batches kept on
    disk while the key groups are found: transforms.beam.dedup)."""
    read = totals.get("DedupExact")
    return f"; exact dedup read {read:,}" if read else ""


def _line(totals: dict[str, int], seconds: float, started: bool, balancing: bool) -> str:
    if not balancing:
        return _selection_line(totals, seconds)
    read = totals.get("matched", 0)
    if not read and started:
        return f"[{seconds:6.0f} s] finishing: the report and the clean-up"
    if not read:
        return f"[{seconds:6.0f} s] starting: workers load the metadata and build the automaton"
    sampled, kept = totals.get("WriteMatches", 0), totals.get("WriteSubset", 0)
    rate = f" ({read / seconds:,.0f}/s)" if seconds > 0 and not (sampled or kept) else ""
    line = f"[{seconds:6.0f} s] read and matched {read:,}{rate}, {totals.get('matched_with_entries', 0):,} with entries"
    if sampled or kept:
        # The two writers flush independently: each figure is a lower bound of its own.
        line += f"; sampling: {sampled:,} rows to matches/, {kept:,} kept rows to subset/"
    return line


def _selection_line(totals: dict[str, int], seconds: float) -> str:
    """--balance none: the covariance selection's spill files and markers (transforms.beam.select)
    say how many records were read, how many reached the selection, and its parts done / total."""
    read, members = totals.get("SelectRead", 0), totals.get("SelectMembers", 0)
    if not read and not members:
        return f"[{seconds:6.0f} s] running: no per-pass figures without MetaCLIP balancing"
    line = f"[{seconds:6.0f} s] records read {read:,}, reaching the selection {members:,}"
    if totals.get("SelectParts"):
        line += f"; selection parts done {totals.get('SelectPartsDone', 0):,} / {totals['SelectParts']:,}"
    return line


class ProgressReporter:
    """Prints progress_line every `interval` seconds while a run goes on (a daemon thread)."""

    def __init__(self, spill_dir: str, interval: float, stream: Optional[TextIO] = None, balancing: bool = True):
        self._balancing = balancing
        self._spill_dir = spill_dir
        self._interval = interval
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ProgressReporter":
        if self._interval > 0:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="balancebeam-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        started = False
        while not self._stop.wait(self._interval):
            totals = spill_totals(self._spill_dir)
            seconds = time.monotonic() - self._started
            print(progress_line(totals, seconds, started, self._balancing), file=self._stream, flush=True)
            started = started or bool(totals.get("matched"))
