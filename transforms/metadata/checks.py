"""What `python -m beam_pipeline.metadata validate` reports about a list.

No Beam import. The id-corrupting problems (non-strings, duplicates) come
from `metadata_list.id_corrupting_problems`, the very check that makes the
curation refuse a file, so both say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from transforms.core.spacing import can_ever_match
from transforms.metadata.lists import id_corrupting_problems


@dataclass
class Finding:
    """One kind of problem: how many entries have it, and a few of them."""

    severity: str  # "error" (would corrupt ids) or "warning"
    kind: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)


def check_entries(items: Sequence[object], max_examples: int = 5) -> list[Finding]:
    """Every problem of a decoded metadata list, errors first."""
    findings = []
    problems = id_corrupting_problems(items)

    def core_message(word: str, fallback: str) -> str:
        # "<n> <word> entries (e.g. ...)": the example part may hold any text.
        return next((p for p in problems if p.split(" (", 1)[0].endswith(f" {word} entries")), fallback)

    non_strings = [i for i, item in enumerate(items) if not isinstance(item, str)]
    if non_strings:
        examples = [f"id {i}: {items[i]!r} ({type(items[i]).__name__})" for i in non_strings[:max_examples]]
        message = core_message("non-string", f"{len(non_strings)} non-string entries")
        findings.append(Finding("error", "non_string", message, len(non_strings), examples))
    ids_of: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids_of.setdefault(item, []).append(i)
    repeated = [(entry, ids) for entry, ids in ids_of.items() if len(ids) > 1]
    if repeated:
        examples = [f"{entry!r} at ids {', '.join(map(str, ids))}" for entry, ids in repeated[:max_examples]]
        count = sum(len(ids) - 1 for _, ids in repeated)
        findings.append(
            Finding("error", "duplicate", core_message("duplicate", f"{count} duplicate entries"), count, examples)
        )

    strings = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
    warnings = (
        (
            "empty",
            "empty",
            "(it matches every caption with two spaces in a row once spaced, e.g. any 'a, b')",
            lambda e: e == "",
        ),
        ("white_space", "", "with leading or trailing white space", lambda e: e != e.strip()),
        (
            "never_matches",
            "",
            (
                "that can never match (holding , . ; : ? ! ` without a space on each side, "
                "or a tab, newline or carriage return)"
            ),
            lambda e: not can_ever_match(e),
        ),
    )
    for kind, adjective, description, test in warnings:
        hits = [(i, entry) for i, entry in strings if test(entry)]
        if hits:
            examples = [f"id {i}: {entry!r}" for i, entry in hits[:max_examples]]
            noun = "entry" if len(hits) == 1 else "entries"
            message = " ".join(part for part in (str(len(hits)), adjective, noun, description) if part)
            findings.append(Finding("warning", kind, message, len(hits), examples))
    return findings
