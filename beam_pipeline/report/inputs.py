"""The report's inputs: the four JSON files of an output directory, read and checked
(load_inputs, ReportError), and the figures computed from them (head_tail,
top_entries, the threshold that defines the head)."""

from __future__ import annotations

import itertools
import json
from typing import Optional, Sequence

import numpy as np
import orjson
from apache_beam.io.filesystems import FileSystems

INPUTS = ("stats.json", "entry_counts.json", "entry_counts_kept.json", "figures.json")
TOP_ENTRIES = 30


class ReportError(Exception):
    """An output directory the report cannot be built from; the message is one line."""


def _read_json(output_dir: str, name: str):
    path = FileSystems.join(output_dir, name)
    if not FileSystems.exists(path):
        hint = (
            " (a run from before the report existed lacks it: rerun the curation)"
            if name != "stats.json"
            else " (not a finished curation run)"
        )
        raise ReportError(f"{path} is missing{hint}")
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        raw = handle.read()
    try:
        # orjson: an entry count file of 500k pairs parses in 0.16 s, not the json
        # module's 0.35 s. What orjson refuses (NaN, integers over 64 bits, invalid
        # JSON) goes to the json module, which accepts what it always did and words the error.
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} is not valid JSON: {error}") from None


def load_inputs(output_dir: str) -> dict:
    """The four input documents, checked for the shape the report relies on (stats.json alone for
    a run without MetaCLIP balancing: "balanced" is False)."""
    output_dir = output_dir.rstrip("/") or "/"
    stats = _read_json(output_dir, "stats.json")
    if isinstance(stats, dict) and stats.get("balance") == "none":
        # --balance none: no entry counts; the report is the run and filter figures.
        return {"output_dir": output_dir, "stats": stats, "figures": {}, "balanced": False}
    docs = {name: _read_json(output_dir, name) for name in INPUTS}
    for name in INPUTS:
        if not isinstance(docs[name], dict):
            raise ReportError(f"{FileSystems.join(output_dir, name)} must hold a JSON object")
    before, after = docs["entry_counts.json"], docs["entry_counts_kept.json"]
    entry_t = None
    if before and all(isinstance(value, dict) for value in before.values()):
        # --mode metaclip2: {language: {entry: count}}; entries shown as "language:entry",
        # each with its language's t. Compared and counted language by language: new
        # dicts keyed "language:entry" doubled the time to load 500k entries.
        by_language = docs["stats.json"].get("thresholds_by_language") or {}
        default_t = docs["stats.json"].get("threshold", 0)
        entry_t = np.repeat(
            np.array([by_language.get(language, default_t) for language in before], dtype=np.int64),
            [len(entries) for entries in before.values()],
        )
        same = list(before) == list(after) and all(
            isinstance(after[language], dict) and list(entries) == list(after[language])
            for language, entries in before.items()
        )
        entries = [f"{language}:{entry}" for language, language_entries in before.items() for entry in language_entries]
        counts, kept_counts = (
            itertools.chain.from_iterable(value.values() for value in document.values()) for document in (before, after)
        )
    else:
        entries = list(before)
        same = entries == list(after)  # one list comparison in C, not a Python loop over 500k keys
        counts, kept_counts = before.values(), after.values()
    if not same:
        raise ReportError(
            "entry_counts_kept.json does not list the same entries, in the same order, as entry_counts.json"
        )
    return {
        "output_dir": output_dir,
        "stats": docs["stats.json"],
        "entries": entries,
        "counts": np.fromiter(counts, dtype=np.int64, count=len(entries)),
        "kept_counts": np.fromiter(kept_counts, dtype=np.int64, count=len(entries)),
        "figures": docs["figures.json"],
        "entry_t": entry_t,
        "balanced": True,
    }


def head_threshold(data: dict):
    """What 'head' means: count > t, with one t, or (metaclip2) each entry's language's t."""
    return data["entry_t"] if data.get("entry_t") is not None else scalar_threshold(data["stats"])


def scalar_threshold(stats: dict) -> Optional[int]:
    """The run's single t, or None when stats.json has none (e.g. per-language thresholds)."""
    value = stats.get("threshold")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def head_tail(counts: np.ndarray, kept_counts: np.ndarray, threshold: int) -> dict:
    """Matches in head entries (count > t before balancing) and in the rest, before and after."""
    head = counts > threshold
    return {
        "before_head": int(counts[head].sum()),
        "before_total": int(counts.sum()),
        "after_head": int(kept_counts[head].sum()),
        "after_total": int(kept_counts.sum()),
    }


def top_entries(
    entries: Sequence[str], counts: np.ndarray, kept_counts: np.ndarray, threshold: int, limit: int = TOP_ENTRIES
) -> list[dict]:
    """The largest head entries (count > t), ties in metadata order, with kept count and p_e."""
    entry_t = np.broadcast_to(np.asarray(threshold), counts.shape)  # one t, or one per entry
    order = np.flatnonzero(counts > entry_t)
    order = order[np.argsort(-counts[order], kind="stable")][:limit]
    return [
        {
            "entry": entries[i],
            "count": int(counts[i]),
            "kept": int(kept_counts[i]),
            "p_e": int(entry_t[i]) / int(counts[i]),
        }
        for i in order.tolist()
    ]
