"""The one place ddbnb builds AWS clients, all with the same botocore Config.

Endpoints, credentials and region come from the standard places (profile,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>``), which botocore reads itself.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import NoRegionError

from ddbnb.exceptions import DdbnbError

#: Shared client settings. Throttled calls are retried by botocore (standard
#: mode); BatchWriteItem's UnprocessedItems are retried by ddbnb.writes.
CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
    user_agent_extra="ddbnb",
)


def client(service: str, boto3_session: boto3.Session | None = None, config: Config = CONFIG) -> Any:
    """Return a boto3 client for ``service`` built with :data:`CONFIG` (or ``config``)."""
    session = boto3_session or boto3.Session()
    try:
        return session.client(service, config=config)
    except NoRegionError:
        raise DdbnbError(
            "No AWS region is configured: set AWS_DEFAULT_REGION, or use a profile that names a region."
        ) from None


def describe_where(dynamodb: Any) -> str:
    """Say which endpoint and region a client talks to, for error messages."""
    return f"{dynamodb.meta.endpoint_url} (region {dynamodb.meta.region_name})"
