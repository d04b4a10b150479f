"""What the Lambda handler calls: the segment worker with a deadline from the Lambda context.

Only the standard library and boto3: this module ships inside the Lambda package.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ddbnb.worker.segment import process_segment

#: Seconds kept free before the Lambda timeout, so the worker returns its cursor in time.
SAFETY_S = 30.0


def handle(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Process one segment until it ends or the invocation nears its timeout."""
    remaining = context.get_remaining_time_in_millis() / 1000
    deadline = time.time() + remaining - min(SAFETY_S, remaining / 4)
    return process_segment(event, deadline=deadline)
