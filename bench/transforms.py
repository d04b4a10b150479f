"""The benchmark transform: set one new attribute, so every item changes."""

from __future__ import annotations

from typing import Any


def set_flag(item: dict[str, Any]) -> dict[str, Any]:
    """Set ``flag`` to "ddbnb"."""
    item["flag"] = "ddbnb"
    return item
