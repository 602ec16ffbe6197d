"""The value checks of the curation's options (beam_pipeline.options declares each flag with its check).

Each turns a flag's text into its value, or refuses it with one line naming the flag.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

HANDOFFS = ("webdataset", "datacomp", "img2dataset")


class UsageError(ValueError):
    """A bad option, input or metadata file: one line, exit status 2, no traceback."""


class BadValue(Exception):
    """Raised by the value checks below. Not a ValueError on purpose: argparse would turn
    one into its own "invalid value" message; this one reaches parse_curation_args as is."""


def integer(name: str, minimum: int, below: Optional[int] = None) -> Callable[[str], int]:
    def check(value: str) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise BadValue(f"--{name} must be an integer, got {value!r}") from None
        if number < minimum:
            raise BadValue(f"--{name} must be >= {minimum}, got {number}")
        if below is not None and number >= below:
            raise BadValue(f"--{name} must be below 2**{below.bit_length() - 1}, got {number}")
        return number

    return check


def number(name: str, low: Optional[float] = None, high: Optional[float] = None) -> Callable[[str], float]:
    """A finite float, within [low, high] when they are given."""

    def check(value: str) -> float:
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            raise BadValue(f"--{name} must be a number, got {value!r}") from None
        if low is not None and high is not None:
            if not low <= parsed <= high:
                raise BadValue(f"--{name} must be between {low} and {high}, got {value!r}")
        elif not math.isfinite(parsed):
            raise BadValue(f"--{name} must be a finite number, got {value!r}")
        return parsed

    return check


def boolean(name: str) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise BadValue(f"--{name} must be true or false, got {value!r}")

    return check


def seconds(name: str) -> Callable[[str], float]:
    def check(value: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BadValue(f"--{name} must be a number of seconds, got {value!r}") from None
        if not number >= 0 or math.isinf(number):
            raise BadValue(f"--{name} must be a finite number of seconds >= 0, got {value!r}")
        return number

    return check


def handoff_list(value: str) -> Optional[tuple[str, ...]]:
    """--handoff: None for auto; else the named hand-offs (empty for none)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["auto"]:
        return None
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in HANDOFFS]
    if unknown or not names:
        raise BadValue(f"--handoff takes auto, none, or a comma-separated list of {', '.join(HANDOFFS)}; got {value!r}")
    return tuple(dict.fromkeys(names))


def column_names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise BadValue(f"--column_names must be distinct non-empty names separated by commas, got {','.join(names)!r}")
    return names


def non_blank(name: str, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.strip():
            raise BadValue(f"--{name} must name {what}")
        return value

    return check
