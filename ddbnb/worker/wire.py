"""A DynamoDB client that speaks wire-format JSON directly.

Only the standard library and boto3: this module ships inside the Lambda package.

botocore validates, serializes and parses every attribute of every item by
walking the service model, which costs about 0.4 ms of CPU per item and
makes the client, not DynamoDB, the bottleneck of a migration. This client
keeps everything else botocore does (credentials, signing, endpoints,
retries, event hooks) but sends the request body ddbnb already built and
hands back the response body as parsed JSON. Items stay in wire format, with
binary values as base64 strings, exactly as DynamoDB's JSON protocol carries
them.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C scanner, as json.loads uses
from json.scanner import make_scanner
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError

from ddbnb.worker.clients import CONFIG, client
from ddbnb.worker.jsontext import to_json_bytes

#: botocore neither validates (ddbnb builds the bodies itself) nor retries: :meth:`WireClient.call`
#: retries what never reached DynamoDB, and every answer DynamoDB gives, throttling included, reaches
#: the caller at once. So there is one retry layer for throttling (:mod:`ddbnb.worker.writes`), and
#: the pacing hears of each throttled call once.
WIRE_CONFIG = CONFIG.merge(Config(parameter_validation=False, retries={"mode": "standard", "total_max_attempts": 1}))
T = TypeVar("T")
#: Attempts of a call whose connection failed (refused, reset, timed out).
CONNECTION_ATTEMPTS = 8

_METHODS = {
    "Scan": "scan",
    "Query": "query",
    "BatchWriteItem": "batch_write_item",
    "PutItem": "put_item",
    "DeleteItem": "delete_item",
    "UpdateItem": "update_item",
    "GetItem": "get_item",
    "BatchGetItem": "batch_get_item",
    "BatchExecuteStatement": "batch_execute_statement",
}


#: Reads whose items keep their JSON text as the response spelled it (see :func:`item_texts`).
_READS = ("Scan", "Query")
#: Where a read's response keeps its items' texts: a key DynamoDB never sends.
ITEM_TEXTS = "ddbnb:ItemTexts"


class WireClient:
    """Call DynamoDB operations with wire-format JSON payloads."""

    def __init__(self, boto3_session: boto3.Session | None = None) -> None:
        self.client = client("dynamodb", boto3_session, config=WIRE_CONFIG)
        self._payload = threading.local()
        events = self.client.meta.events
        for operation in _METHODS:
            # First, so hooks registered by users and tests see the real body.
            events.register_first(f"before-call.dynamodb.{operation}", self._send_payload)
            keep = _keeping(parse_page if operation in _READS else json.loads)
            events.register(f"before-parse.dynamodb.{operation}", keep)

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send ``payload`` as the body of ``operation``; return the response as JSON.

        A call whose connection fails is sent again (up to :data:`CONNECTION_ATTEMPTS`
        times, with backoff); an error DynamoDB answers is raised at once.
        """
        return self.call_tracked(operation, payload)[0]

    def call_tracked(self, operation: str, payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """:meth:`call`, and whether the call was sent again after a send whose response was lost.

        A read timeout or a connection closed mid-answer leaves a send's outcome
        unknown: DynamoDB may have applied it. A conditional write sent again then
        fails its own guard, which only looks like a conflict (the caller checks).
        A connection that was never made (refused, connect timeout) sent nothing.
        """
        resent = False

        def send() -> dict[str, Any]:
            nonlocal resent
            try:
                return self._call_once(operation, payload)
            except HTTPClientError:
                resent = True  # the request may have reached DynamoDB: the next send is a re-send
                raise

        response = self.retrying(send)
        return response, resent

    def retrying(self, send: Callable[[], T]) -> T:
        """Call ``send`` (which uses :attr:`client`) again while its connection fails, with backoff."""
        for attempt in range(CONNECTION_ATTEMPTS - 1):
            try:
                return send()
            except (BotocoreConnectionError, HTTPClientError):
                time.sleep(random.uniform(0, min(5.0, 0.1 * 2**attempt)))
        return send()

    def _call_once(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._payload.body = to_json_bytes(payload)
        # botocore still sees the table names, which endpoint rules may route on.
        names: dict[str, Any]
        if "RequestItems" in payload:
            empty: Any = {} if operation == "BatchGetItem" else []  # KeysAndAttributes, or a list of writes
            names = {"RequestItems": {table: empty for table in payload["RequestItems"]}}
        elif "Statements" in payload:
            names = {"Statements": []}
        else:
            names = {"TableName": payload["TableName"]}
        try:
            response: dict[str, Any] = getattr(self.client, _METHODS[operation])(**names)
        finally:
            self._payload.body = None
        return response

    def _send_payload(self, params: dict[str, Any], **_: Any) -> None:
        body = getattr(self._payload, "body", None)
        if body is not None:
            params["body"] = body


def _keeping(parse: Callable[[bytes], dict[str, Any]]) -> Callable[..., None]:
    """A before-parse hook that hands back a successful response's body as ``parse`` reads it."""

    def keep(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
        if response_dict.get("status_code", 500) < 300 and response_dict.get("body"):
            customized_response_dict.update(parse(response_dict["body"]))
            response_dict["body"] = b"{}"

    return keep


def item_texts(page: Mapping[str, Any]) -> dict[int, tuple[dict[str, Any], str]]:
    """Each item of a Scan or Query page with its JSON text as DynamoDB sent it, by ``id`` of the item.

    The journal writes an item as read from this text instead of encoding it
    again. Empty for a page that came another way.
    """
    return {id(item): (item, text) for item, text in zip(page.get("Items", ()), page.get(ITEM_TEXTS, ()), strict=False)}


_SPACE = re.compile(r"[ \t\n\r]*")
_SCAN = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # the stub names the class, not the context


def _skip(text: str, at: int) -> int:
    """Where the JSON whitespace from ``at`` ends."""
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # the pattern matches the empty string


def parse_page(body: bytes) -> dict[str, Any]:
    """A read's response parsed as :func:`json.loads` would, plus its items' own texts under :data:`ITEM_TEXTS`.

    The items are parsed one at a time by the standard library's scanner, which
    says where each ends. A body this parser does not expect is parsed whole
    and keeps no texts.
    """
    text = body.decode()
    try:
        return _parse_object(text)
    except (ValueError, IndexError, StopIteration):
        whole: dict[str, Any] = json.loads(text)
        return whole


def _parse_object(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    at = _skip(text, 0)
    if text[at] != "{":
        raise ValueError("not an object")
    at = _skip(text, at + 1)
    while text[at] != "}":
        if text[at] != '"':
            raise ValueError("not a name")
        name, at = scanstring(text, at + 1)
        at = _skip(text, at)
        if text[at] != ":":
            raise ValueError("no colon")
        at = _skip(text, at + 1)
        if name == "Items" and text[at] == "[":
            out["Items"], out[ITEM_TEXTS], at = _parse_items(text, at + 1)
        else:
            out[name], at = _SCAN(text, at)
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
            if text[at] == "}":
                raise ValueError("a comma before the end")
        elif text[at] != "}":
            raise ValueError("no comma")
    if text[_skip(text, at + 1) :]:
        raise ValueError("text after the object")
    return out


def _parse_items(text: str, at: int) -> tuple[list[Any], list[str], int]:
    items: list[Any] = []
    texts: list[str] = []
    at = _skip(text, at)
    if text[at] == "]":
        return items, texts, at + 1
    while True:
        item, end = _SCAN(text, at)
        items.append(item)
        texts.append(text[at:end])
        at = _skip(text, end)
        if text[at] == "]":
            return items, texts, at + 1
        if text[at] != ",":
            raise ValueError("no comma")
        at = _skip(text, at + 1)


#: Environment variables that decide where and as whom a default-session client talks.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
)
_by_session: weakref.WeakKeyDictionary[boto3.Session, WireClient] = weakref.WeakKeyDictionary()
_by_env: dict[tuple[str, ...], WireClient] = {}
_cache_lock = threading.Lock()


def shared_client(boto3_session: boto3.Session | None = None) -> WireClient:
    """The process's WireClient for ``boto3_session`` (or for the default session as the environment sets it up).

    Building a client costs about 0.1 s of CPU; a worker that runs segment after
    segment (or a warm Lambda) reuses one. Clients are thread-safe.
    """
    with _cache_lock:
        if boto3_session is not None:
            found = _by_session.get(boto3_session)
            if found is None:
                found = _by_session[boto3_session] = WireClient(boto3_session)
            return found
        key = tuple(os.environ.get(name, "") for name in _CLIENT_ENV)
        if key not in _by_env:
            _by_env[key] = WireClient()
        return _by_env[key]
