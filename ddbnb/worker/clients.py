"""The one place ddbnb builds AWS clients, all with the same botocore Config.

Endpoints, credentials and region come from the standard places (profile,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>``), which botocore reads itself, except
``AWS_REGION``, which this factory reads when nothing else names a region.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, NoRegionError

from ddbnb.exceptions import DdbnbError, EndpointUnreachableError

#: Shared client settings. Throttled calls are retried by botocore (standard
#: mode); BatchWriteItem's UnprocessedItems are retried by ddbnb.worker.writes.
CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
    user_agent_extra="ddbnb",
)
#: For the first call of a command (DescribeTable): an endpoint that does not
#: answer is reported in about a second, not after eight retries.
QUICK_CONFIG = CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=3))

F = TypeVar("F", bound=Callable[..., Any])


def client(service: str, boto3_session: boto3.Session | None = None, config: Config = CONFIG) -> Any:
    """Return a boto3 client for ``service`` built with :data:`CONFIG` (or ``config``)."""
    session = boto3_session or boto3.Session()
    region = session.region_name or os.environ.get("AWS_REGION") or None
    try:
        return session.client(service, config=config, region_name=region)
    except NoRegionError:
        raise DdbnbError(
            "No AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION), or use a profile that names a region."
        ) from None


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/or/prefix`` as (bucket, key), the key without a trailing slash."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key.rstrip("/")


def describe_where(dynamodb: Any) -> str:
    """Say which endpoint and region a client talks to, for error messages."""
    return f"{dynamodb.meta.endpoint_url} (region {dynamodb.meta.region_name})"


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unreachable(exc: EndpointConnectionError) -> EndpointUnreachableError:
    """The one-line error for an endpoint that does not answer."""
    url = str(exc.kwargs.get("endpoint_url", ""))
    if is_loopback(url):
        hint = (
            "nothing answers on this loopback address. If it is the sandbox, start it with "
            '`ddbnb sandbox up` and load its settings with eval "$(ddbnb sandbox env)"; to reach AWS '
            "instead, unset AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB."
        )
    else:
        hint = "check the network, the region and the AWS_ENDPOINT_URL* settings."
    return EndpointUnreachableError(url, hint)


def clear_errors(func: F) -> F:
    """Turn an unreachable endpoint into one line that names it (for public functions)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EndpointConnectionError as exc:
            raise unreachable(exc) from None

    return wrapper  # type: ignore[return-value]
