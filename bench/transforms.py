"""The benchmark transforms: set one new attribute, so every item changes (or delete every item)."""

from __future__ import annotations

from typing import Any


def set_flag(item: dict[str, Any]) -> dict[str, Any]:
    """Set ``flag`` to "ddbnb"."""
    item["flag"] = "ddbnb"
    return item


def set_hash_flag(item: dict[str, Any]) -> dict[str, Any]:
    """Set ``#flag``, a name PartiQL cannot carry in a document path (so the write goes through the item API)."""
    item["#flag"] = "ddbnb"
    return item


def delete_all(item: dict[str, Any]) -> None:
    """Delete every item."""
    return None
