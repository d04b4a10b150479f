"""Parameter checks shared by the public API and the segment worker.

Only the standard library: this module ships inside the Lambda package.
"""

from __future__ import annotations

import re
from typing import Any

from ddbnb.exceptions import InvalidParameterError

MAX_TOTAL_SEGMENTS = 1_000_000
WRITE_MODES = ("batch", "conditional")
ENGINES = ("local", "aws")
#: DynamoDB's rule for table names: 3 to 255 of a-z, A-Z, 0-9, '_', '-' and '.'.
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
#: A table may also be named by its ARN (up to 1,024 characters).
TABLE_ARN = re.compile(r"arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/([A-Za-z0-9_.-]{3,255})")


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
    """Return a non-empty name (stacks, buckets), else raise InvalidParameterError."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(name, value, "a non-empty name")
    return value


def check_table_name(name: str, value: Any) -> str:
    """Return a table name (or table ARN) that follows DynamoDB's rules, else raise InvalidParameterError."""
    if isinstance(value, str) and (TABLE_NAME.fullmatch(value) or (len(value) <= 1024 and TABLE_ARN.fullmatch(value))):
        return value
    raise InvalidParameterError(
        name, value, "a DynamoDB table name: 3 to 255 characters among a-z, A-Z, 0-9, '_', '-' and '.' (or its ARN)"
    )


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real bool; a string such as "False" is refused, never read as true."""
    if not isinstance(value, bool):
        raise InvalidParameterError(
            name,
            value,
            f"True or False, as a bool (with papermill: -p {name} True, not -r; in YAML: true/false)",
        )
    return value


def check_share(name: str, value: Any) -> float:
    """Return a share from 0 to 1 (0.25 is 25%)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidParameterError(name, value, "a share from 0 to 1 (0.25 means 25%)")
    return float(value)


def check_percentage(name: str, value: Any) -> float:
    """Return a percentage from 0 to 100."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise InvalidParameterError(name, value, "a percentage from 0 to 100")
    return float(value)


def check_rate(name: str, value: Any) -> float:
    """Return a rate per second (items or capacity units); 0 means unlimited."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidParameterError(name, value, "a number per second, 0 for no limit")
    return float(value)


def check_attribute(name: str, value: Any) -> str:
    """Return an attribute name ("" for none), else raise InvalidParameterError."""
    if not isinstance(value, str) or len(value) > 255:
        raise InvalidParameterError(name, value, "an attribute name (a string), or '' for none")
    return value


def check_total_segments(value: Any) -> int:
    """Return a valid TotalSegments for a parallel scan."""
    return check_int("total_segments", value, 1, MAX_TOTAL_SEGMENTS)


def check_limits(
    max_concurrency: Any, rate_limit: Any, capacity_share: Any, max_read_units: Any, max_write_units: Any
) -> tuple[float, float]:
    """Check a run's limits (a migration's or a rollback's); return the rate limit and the capacity share."""
    check_int("max_concurrency", max_concurrency, 0, 10_000)
    rate = check_rate("rate_limit", rate_limit)
    share = check_share("capacity_share", capacity_share)
    check_rate("max_read_units", max_read_units)
    check_rate("max_write_units", max_write_units)
    return rate, share
