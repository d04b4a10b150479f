"""The demo migration: upgrade orders to schema version 2 and purge tombstones.

A transform gets one item with Python types (Decimal, set, bytes, ...) and
returns the new item, the same item to leave it alone, or None to delete it.
Keep it idempotent: a retried or re-run item must come out the same.
"""

from __future__ import annotations

from typing import Any


def upgrade_order(item: dict[str, Any]) -> dict[str, Any] | None:
    """Normalise the status, add line_count and total_cents, and drop purged orders."""
    if item.get("status") == "purged":
        return None
    if item.get("schema_version") == 2:
        return item
    item["status"] = str(item.get("status", "unknown")).lower()
    item["line_count"] = len(item.get("lines", []))
    item["total_cents"] = int(item["total"] * 100)
    item["schema_version"] = 2
    return item
