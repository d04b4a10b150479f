"""Parameter checks shared by the public API and the segment worker.

Only the standard library: this module ships inside the Lambda package.
"""

from __future__ import annotations

from typing import Any

from ddbnb.exceptions import InvalidParameterError

MAX_TOTAL_SEGMENTS = 1_000_000
WRITE_MODES = ("batch",)
ENGINES = ("local", "aws")


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise InvalidParameterError."""
    bound = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(name, value, f"a whole number {bound}")
    if value < low or (high is not None and value > high):
        raise InvalidParameterError(name, value, f"a whole number {bound}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InvalidParameterError."""
    if value not in choices:
        raise InvalidParameterError(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return str(value)


def check_name(name: str, value: Any) -> str:
    """Return a non-empty table name, else raise InvalidParameterError."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(name, value, "a non-empty table name")
    return value


def check_rate(name: str, value: Any) -> float:
    """Return a rate in items per second; 0 means unlimited."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidParameterError(name, value, "a number of items per second, 0 for no limit")
    return float(value)


def check_total_segments(value: Any) -> int:
    """Return a valid TotalSegments for a parallel scan."""
    return check_int("total_segments", value, 1, MAX_TOTAL_SEGMENTS)
