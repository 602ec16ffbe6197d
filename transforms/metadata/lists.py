"""Reading and checking a MetaCLIP metadata list (a JSON list of entry strings).

No Beam import. An entry's id is its index in the list, so anything that
would change ids (duplicates, non-strings) is refused, never repaired.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from typing import Sequence


class MetadataError(ValueError):
    """A metadata list the pipeline must refuse before any work."""


@dataclass(frozen=True)
class Metadata:
    entries: list[str]
    sha256: str  # of the file's bytes: workers check they load the same list

    def __len__(self) -> int:
        return len(self.entries)


def _examples(items: Sequence[object], limit: int = 3) -> str:
    return ", ".join(repr(item) for item in list(items)[:limit])


def id_corrupting_problems(items: Sequence[object]) -> list[str]:
    """Problems that would corrupt entry ids: non-strings and duplicates."""
    # The common case, a clean list, in two C-speed passes (every worker checks it).
    if all(type(item) is str for item in items) and len(set(items)) == len(items):
        return []
    problems = []
    non_strings = [(i, item) for i, item in enumerate(items) if not isinstance(item, str)]
    if non_strings:
        problems.append(
            f"{len(non_strings)} non-string entries (e.g. index {non_strings[0][0]}: {non_strings[0][1]!r})"
        )
    seen: set[str] = set()
    duplicates = []
    for item in items:
        if isinstance(item, str):
            if item in seen:
                duplicates.append(item)
            seen.add(item)
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate entries (e.g. {_examples(list(dict.fromkeys(duplicates)))})")
    return problems


# The last list parsed in this process. A worker reads the same list several
# times (the automaton, entry_counts.json, figures.json): parsing and checking
# 500k entries costs ~0.4 s a time, hashing the bytes ~0.02 s.
_last_parsed: list = [None]


def parse_metadata(data: bytes, name: str = "metadata", checked_sha256: str = "") -> Metadata:
    """Parse and check a metadata file's bytes (gzip is detected by magic number).

    Raises MetadataError with one line naming the file and the problem.
    The same bytes parsed again return the same Metadata (do not mutate it).
    Bytes whose sha256 is `checked_sha256` (checked when the run started, in
    another process) skip the duplicate check, ~0.2 s for 500k entries.
    """
    digest = hashlib.sha256(data).hexdigest()
    last = _last_parsed[0]
    if last is not None and last.sha256 == digest:
        return last
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise MetadataError(f"metadata file {name} is not a readable gzip file: {error}") from None
    try:
        items = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise MetadataError(f"metadata file {name} is not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise MetadataError(f"metadata file {name} must hold a JSON list of strings, not a JSON {type(items).__name__}")
    if not items:
        raise MetadataError(f"metadata file {name} holds an empty list: nothing could ever match")
    problems = [] if digest == checked_sha256 else id_corrupting_problems(items)
    if problems:
        raise MetadataError(
            f"metadata file {name} would corrupt entry ids: {'; '.join(problems)} "
            f"(run `python -m beam_pipeline.metadata validate {name}`)"
        )
    _last_parsed[0] = Metadata(items, digest)
    return _last_parsed[0]
