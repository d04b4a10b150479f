"""The Lambda entry point: one call into ddbnb."""

from typing import Any

from ddbnb.worker.lambda_entry import handle


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Process one parallel-scan segment from the event's cursor, a batch of stream records, or a capacity action."""
    return handle(event, context)
