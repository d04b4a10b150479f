"""An emulation of provisioned throughput in front of DynamoDB Local, for rehearsing capacity limits.

DynamoDB Local never throttles. This small HTTP proxy forwards every call to
it, and charges each table's read and write units the way DynamoDB documents
them:

- token buckets refilled at the table's rate, saving up to 300 seconds of
  unused capacity as burst;
- writes: 1 unit per started KB of each item written (at least 1), checked
  before the call: a call the bucket cannot pay for is refused;
- reads: 1 unit per started 4 KB read, half for eventually consistent reads,
  charged after the call (the bucket may go into debt, as DynamoDB's does),
  and refused while the bucket is in debt;
- refusals answer HTTP 400 with ``ProvisionedThroughputExceededException`` in
  DynamoDB's JSON wire format, which boto3 reads as it reads AWS's;
- DescribeTable reports the emulated rates as the table's provisioned
  throughput, so a plan sees the capacity it will meet.

Each table's write calls, throttled write calls and accepted write units are
counted (``CapacityProxy.stats``), for tests and the benchmark.

Refusals carry ``ThrottlingReasons`` as DynamoDB's do since 2025
(``TableWriteProvisionedThroughputExceeded``, ``TableReadProvisionedThroughputExceeded``,
with the table's ARN). With ``key_range_write_units`` (off by default), each
partition key value of a table also gets its own write bucket at that rate, as
one hot partition would: a write past it is refused with
``TableWriteKeyRangeThroughputExceeded``. In a batch (BatchWriteItem,
BatchExecuteStatement) only the requests over their key range's rate are
refused, as UnprocessedItems or as statement errors (which carry no reasons);
a batch refused whole answers with the reason. With ``index_write_units``
(off by default), each global secondary index of a table gets a write bucket
at that rate, which DescribeTable reports as the index's provisioned write
units: every write to the table is charged to each of its GSIs as to the
table (as if the index projected everything and every write changed it,
which is what ddbnb's plan assumes), and a write an index cannot pay for is
refused with ``IndexWriteProvisionedThroughputExceeded`` and the index's ARN,
as DynamoDB refuses a base-table write its GSI throttles.

It is an emulation, kept small: no partitions beyond that, no adaptive
capacity, a batch over the table's rate is refused whole, item sizes by
DynamoDB's rules but delete and update sizes estimated from the request.
Run it with ``ddbnb sandbox up --write-units W --read-units R``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ddbnb.worker.items import item_size, write_units

#: Seconds of unused capacity a table saves up as burst.
BURST_S = 300.0
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "BatchExecuteStatement", "ExecuteStatement"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem"}
_TABLE_IN_STATEMENT = re.compile(r'(?:UPDATE|INTO|FROM)\s+"((?:[^"]|"")+)"', re.I)
THROTTLED = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded. "
    "Consider increasing your provisioning level with the UpdateTable API.",
}
#: A key range's bucket saves up at most this many seconds of its rate (a partition has little burst).
KEY_RANGE_BURST_S = 1.0
KEY_RANGE = "TableWriteKeyRangeThroughputExceeded"
INDEX_WRITE = "IndexWriteProvisionedThroughputExceeded"


class TableBuckets:
    """A table's read and write buckets."""

    def __init__(self, read_rate: float, write_rate: float, clock: Any = time.monotonic) -> None:
        self.rates = {"read": read_rate, "write": write_rate}
        self.tokens = {"read": read_rate, "write": write_rate}  # a new table: one second's worth
        self.clock = clock
        self.burst_s = BURST_S
        self.stamp = clock()
        self.lock = threading.Lock()
        names = ("write_calls", "throttled_writes", "write_units", "first_write", "last_write", "saved_at_first_write")
        self.stats = dict.fromkeys(names, 0.0)
        self.by_second: dict[int, float] = {}  # accepted write units in each second of the clock

    def _refill(self) -> None:
        now = self.clock()
        for kind, rate in self.rates.items():
            self.tokens[kind] = min(rate * self.burst_s, self.tokens[kind] + (now - self.stamp) * rate)
        self.stamp = now

    def take_write(self, units: float) -> bool:
        """Pay for a write before it is sent; False: throttle it."""
        with self.lock:
            self._refill()
            self.stats["write_calls"] += 1
            if self.rates["write"] and self.tokens["write"] < units:
                self.stats["throttled_writes"] += 1
                return False
            self.tokens["write"] -= units
            self.stats["write_units"] += units
            if not self.stats["first_write"]:
                self.stats["first_write"] = self.stamp
                self.stats["saved_at_first_write"] = self.tokens["write"] + units
            self.stats["last_write"] = self.stamp
            second = int(self.stamp)
            self.by_second[second] = self.by_second.get(second, 0.0) + units
            return True

    def refund(self, units: float) -> None:
        """Give back a write paid for but refused after all (another bucket could not pay): a throttle."""
        with self.lock:
            self.tokens["write"] += units
            self.stats["write_units"] -= units
            self.stats["throttled_writes"] += 1
            second = int(self.stamp)
            self.by_second[second] = self.by_second.get(second, 0.0) - units

    def may_read(self) -> bool:
        """Whether a read may start (the read bucket is not in debt)."""
        with self.lock:
            self._refill()
            return not self.rates["read"] or self.tokens["read"] >= 0

    def charge_read(self, units: float) -> None:
        """Charge a read after it ran (the bucket may go into debt)."""
        with self.lock:
            self.tokens["read"] -= units


def charged_write_units(operation: str, body: dict[str, Any]) -> dict[str, float]:
    """The write units a call costs, by table."""
    costs: dict[str, float] = {}

    def add(table: str, size: int) -> None:
        costs[table] = costs.get(table, 0.0) + write_units(size)

    if operation == "BatchWriteItem":
        for table, requests in body.get("RequestItems", {}).items():
            for request in requests:
                add(table, item_size(_batch_image(request)))
    elif operation in ("BatchExecuteStatement", "ExecuteStatement"):
        statements = body.get("Statements") or [body]
        for statement in statements:
            match = _TABLE_IN_STATEMENT.search(statement.get("Statement", ""))
            if match:
                add(match.group(1).replace('""', '"'), _statement_bytes(statement))
    else:
        add(body.get("TableName", ""), _item_call_bytes(body))
    return costs


def _batch_image(request: dict[str, Any]) -> dict[str, Any]:
    """What a BatchWriteItem request writes: the item put, or the key deleted."""
    image: dict[str, Any] = request.get("PutRequest", {}).get("Item") or request.get("DeleteRequest", {}).get("Key", {})
    return image


def _statement_bytes(statement: dict[str, Any]) -> int:
    """A PartiQL write's size, estimated from its parameters."""
    return sum(item_size({"p": p}) for p in statement.get("Parameters", []))


def _item_call_bytes(body: dict[str, Any]) -> int:
    """A PutItem, UpdateItem or DeleteItem call's size, estimated from its item or key and its values."""
    return item_size(body.get("Item") or body.get("Key") or {}) + item_size(body.get("ExpressionAttributeValues", {}))


def read_units(body: dict[str, Any], response: dict[str, Any]) -> float:
    """The read units a Scan, Query or GetItem consumed, by the bytes it read."""
    items = response.get("Items") or ([response["Item"]] if "Item" in response else [])
    size = sum(item_size(item) for item in items)
    units = max(1, math.ceil(size / 4096))
    return units if body.get("ConsistentRead") else units / 2


class CapacityProxy:
    """The proxy: per-table buckets at ``read_units`` / ``write_units`` per second, forwarding to ``target``."""

    def __init__(
        self,
        target: str,
        read_units: float,
        write_units: float,
        port: int = 0,
        key_range_write_units: float = 0.0,
        index_write_units: float = 0.0,
    ) -> None:
        self.target = target.rstrip("/")
        self.read_units, self.write_units = read_units, write_units
        self.key_range_write_units = key_range_write_units
        self.index_write_units = index_write_units
        self.indexes: dict[str, list[str]] = {}
        self.key_ranges: dict[tuple[str, str], TableBuckets] = {}
        self.hash_keys: dict[str, str] = {}
        self.key_range_refused = 0
        self.tables: dict[str, TableBuckets] = {}
        self.lock = threading.Lock()
        self.throttled = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                proxy.handle(self)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """Its endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def buckets(self, table: str, write_units: float | None = None) -> TableBuckets:
        """The buckets of ``table`` (or of a GSI, by :func:`index_name`), made on first use at the proxy's
        rates (or at ``write_units``)."""
        with self.lock:
            if table not in self.tables:
                writes = self.write_units if write_units is None else write_units
                self.tables[table] = TableBuckets(0 if write_units is not None else self.read_units, writes)
            return self.tables[table]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Charge the call to its table(s); refuse it, or forward it and charge its reads."""
        data = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        body: dict[str, Any] = json.loads(data or b"{}")
        refused: list[Any] = []
        if operation in WRITES and self.key_range_write_units:
            body, refused = self._over_key_ranges(request, operation, body)
            if not _requests(operation, body):
                return self._throttle(request, KEY_RANGE, _one_table(operation, refused))
            data = json.dumps(body).encode()
        if operation in WRITES:
            for table, units in charged_write_units(operation, body).items():
                if not self.buckets(table).take_write(units):
                    return self._throttle(request, "TableWriteProvisionedThroughputExceeded", table)
                index = self._take_indexes(request, table, units)
                if index:
                    self.buckets(table).refund(units)
                    return self._throttle(request, INDEX_WRITE, table, index)
        if operation in READS and not self.buckets(body.get("TableName", "")).may_read():
            return self._throttle(request, "TableReadProvisionedThroughputExceeded", body.get("TableName", ""))
        status, headers, answer = self._forward(request, data)
        if refused and status == 200:
            answer = _with_refused(operation, json.loads(answer), refused)
            headers = {k: v for k, v in headers.items() if k.lower() != "x-amz-crc32"}
        if operation in READS and status == 200:
            self.buckets(body.get("TableName", "")).charge_read(read_units(body, json.loads(answer or b"{}")))
        if operation == "DescribeTable" and status == 200:
            answer = self._as_provisioned(answer)
            headers = {k: v for k, v in headers.items() if k.lower() != "x-amz-crc32"}  # the body changed
        self._reply(request, status, headers, answer)

    def _as_provisioned(self, answer: bytes) -> bytes:
        """A DescribeTable answer that reports the emulated rates as provisioned throughput."""
        described = json.loads(answer)
        table = described.get("Table", {})
        table["BillingModeSummary"] = {"BillingMode": "PROVISIONED"}
        throughput = table.setdefault("ProvisionedThroughput", {})
        throughput.update(ReadCapacityUnits=int(self.read_units), WriteCapacityUnits=int(self.write_units))
        for index in table.get("GlobalSecondaryIndexes", []) if self.index_write_units else []:
            index.setdefault("ProvisionedThroughput", {})["WriteCapacityUnits"] = int(self.index_write_units)
        return json.dumps(described).encode()

    def stats(self, table: str) -> dict[str, float]:
        """What ``table`` was sent: write calls, throttled write calls, accepted write units, the first and
        last write's time, and the units saved up (burst) when the first write came. A GSI's are under
        ``index_name(table, index)``."""
        buckets = self.buckets(table)
        with buckets.lock:
            return dict(buckets.stats)

    def steady_write_rate(
        self, table: str, excluding_key: Any = None, during: tuple[float, float] | None = None
    ) -> float:
        """Write units per second accepted for ``table``, over the whole seconds between its first and last.

        The first and last second (ramp-up, saved-up burst, the tail) are left out;
        0 when the writes took less than three seconds. With ``excluding_key`` (a
        partition key value, wire format), the writes to that key range are left
        out, over the seconds the rest of the table was written. With ``during``
        (``time.monotonic()`` values), only the seconds between those count.
        """
        buckets = self.buckets(table)
        with buckets.lock:
            by_second = dict(buckets.by_second)
        if excluding_key is not None:
            hot = self.key_ranges.get(_range_key(table, excluding_key))
            for second, units in (hot.by_second if hot else {}).items():
                by_second[second] = by_second.get(second, 0.0) - units
            by_second = {second: units for second, units in by_second.items() if units > 1e-9}
        if during is not None:
            by_second = {second: units for second, units in by_second.items() if during[0] <= second <= during[1]}
        seconds = sorted(by_second)
        if len(seconds) < 3:
            return 0.0
        middle = range(seconds[0] + 1, seconds[-1])
        return sum(by_second.get(s, 0.0) for s in middle) / len(middle)

    def key_range_stats(self, table: str, key: Any) -> dict[str, float]:
        """What the partition key ``key`` (wire format) of ``table`` was sent, as :meth:`stats` counts it."""
        hot = self.key_ranges.get(_range_key(table, key))
        return dict(hot.stats) if hot else {}

    def _forward(self, request: BaseHTTPRequestHandler, data: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = _caller_headers(request)
        forwarded = urllib.request.Request(self.target + request.path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(forwarded, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def _throttle(self, request: BaseHTTPRequestHandler, reason: str, table: str, index: str = "") -> None:
        with self.lock:
            self.throttled += 1
        resource = f"arn:aws:dynamodb:us-east-1:000000000000:table/{index_name(table, index) if index else table}"
        body = json.dumps({**THROTTLED, "ThrottlingReasons": [{"reason": reason, "resource": resource}]}).encode()
        self._reply(request, 400, {"Content-Type": "application/x-amz-json-1.0"}, body)

    # -- what DynamoDB Local says of a table ----------------------------------------------------------------
    def _describe(self, request: BaseHTTPRequestHandler, table: str) -> None:
        """Learn ``table``'s partition key and GSIs (asked of DynamoDB Local once, with the caller's headers)."""
        if table not in self.hash_keys:
            described = _call(self.target, request, "DescribeTable", {"TableName": table}).get("Table", {})
            schema = described.get("KeySchema", [])
            self.indexes[table] = [index["IndexName"] for index in described.get("GlobalSecondaryIndexes", [])]
            self.hash_keys[table] = next((k["AttributeName"] for k in schema if k["KeyType"] == "HASH"), "")

    def _hash_key(self, request: BaseHTTPRequestHandler, table: str) -> str:
        """The partition key's name of ``table``."""
        self._describe(request, table)
        return self.hash_keys[table]

    # -- GSIs -----------------------------------------------------------------------------------------------
    def _take_indexes(self, request: BaseHTTPRequestHandler, table: str, units: float) -> str:
        """Charge a write of ``units`` to each GSI of ``table``; the first that cannot pay ("": all paid,
        and none is charged when one cannot)."""
        if not self.index_write_units:
            return ""
        self._describe(request, table)
        paid: list[TableBuckets] = []
        for index in self.indexes[table]:
            buckets = self.buckets(index_name(table, index), self.index_write_units)
            if not buckets.take_write(units):
                for bucket in paid:
                    bucket.refund(units)
                return index
            paid.append(buckets)
        return ""

    # -- hot key ranges -------------------------------------------------------------------------------------

    def _take_key_range(self, table: str, value: Any, units: float) -> bool:
        """Pay for a write to the partition key ``value`` of ``table``; False: that key range is hot."""
        key = _range_key(table, value)
        with self.lock:
            if key not in self.key_ranges:
                self.key_ranges[key] = TableBuckets(0, self.key_range_write_units)
                self.key_ranges[key].burst_s = KEY_RANGE_BURST_S
            buckets = self.key_ranges[key]
        if buckets.take_write(units):
            return True
        with self.lock:
            self.key_range_refused += 1
        return False

    def _over_key_ranges(
        self, request: BaseHTTPRequestHandler, operation: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Any]]:
        """The call without the requests whose key range is over its rate, and those (with their places)."""
        if operation == "BatchWriteItem":
            kept: dict[str, list[Any]] = {}
            refused: list[Any] = []
            for table, requests in body.get("RequestItems", {}).items():
                name = self._hash_key(request, table)
                for item in requests:
                    image = _batch_image(item)
                    if self._take_key_range(table, image.get(name), write_units(item_size(image))):
                        kept.setdefault(table, []).append(item)
                    else:
                        refused.append((table, item))
            return {**body, "RequestItems": kept}, refused
        if operation == "BatchExecuteStatement":
            statements, refused = [], []
            for place, statement in enumerate(body.get("Statements", [])):
                table, value = self._statement_key(request, statement)
                if table is None or self._take_key_range(table, value, write_units(_statement_bytes(statement))):
                    statements.append(statement)
                else:
                    refused.append((place, table))
            return {**body, "Statements": statements}, refused
        if operation == "ExecuteStatement":
            table, value = self._statement_key(request, body)
            if table is not None and not self._take_key_range(table, value, write_units(_statement_bytes(body))):
                return {}, [(0, table)]
            return body, []
        table = body.get("TableName", "")
        image = body.get("Item") or body.get("Key") or {}
        value = image.get(self._hash_key(request, table))
        if not self._take_key_range(table, value, write_units(_item_call_bytes(body))):
            return {}, [(0, table)]
        return body, []

    def _statement_key(self, request: BaseHTTPRequestHandler, statement: dict[str, Any]) -> tuple[str | None, Any]:
        """The table and partition key value a PartiQL write names (None: not found, so not limited)."""
        text = statement.get("Statement", "")
        match = _TABLE_IN_STATEMENT.search(text)
        if not match:
            return None, None
        table = match.group(1).replace('""', '"')
        name = self._hash_key(request, table)
        quoted = re.escape(name.replace('"', '""'))
        found = re.search(rf'"{quoted}"\s*=\s*\?', text) or re.search(rf"'{re.escape(name)}'\s*:\s*\?", text)
        if not found:
            return None, None
        place = text[: found.end()].count("?") - 1
        params = statement.get("Parameters", [])
        return (table, params[place]) if place < len(params) else (None, None)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def start(self) -> CapacityProxy:
        """Serve in a background thread."""
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def index_name(table: str, index: str) -> str:
    """How a GSI's buckets are filed, and its ARN's resource after ``table/``: ``<table>/index/<index>``."""
    return f"{table}/index/{index}"


def _range_key(table: str, value: Any) -> tuple[str, str]:
    """How the key range of the partition key ``value`` (wire format) of ``table`` is filed."""
    return table, json.dumps(value, sort_keys=True)


def _caller_headers(request: BaseHTTPRequestHandler) -> dict[str, str]:
    """The caller's headers, to send on to DynamoDB Local (its credentials keep each caller's tables apart)."""
    return {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}


def _requests(operation: str, body: dict[str, Any]) -> bool:
    """Whether a write call still holds something to send."""
    if operation == "BatchWriteItem":
        return any(body.get("RequestItems", {}).values())
    if operation == "BatchExecuteStatement":
        return bool(body.get("Statements"))
    return bool(body)


def _one_table(operation: str, refused: list[Any]) -> str:
    """The table a call refused whole was for."""
    return str(refused[0][0] if operation == "BatchWriteItem" else refused[0][1]) if refused else ""


def _with_refused(operation: str, answer: dict[str, Any], refused: list[Any]) -> bytes:
    """DynamoDB's answer with the requests refused before it was sent: UnprocessedItems, or statement errors."""
    if operation == "BatchWriteItem":
        unprocessed = answer.setdefault("UnprocessedItems", {})
        for table, item in refused:
            unprocessed.setdefault(table, []).append(item)
    elif operation == "BatchExecuteStatement":
        responses = answer.get("Responses", [])
        error = {"Code": "ProvisionedThroughputExceeded", "Message": "Throughput exceeds the key range's limit"}
        for place, table in refused:
            responses.insert(place, {"TableName": table, "Error": error})
    return json.dumps(answer).encode()


def _call(target: str, request: BaseHTTPRequestHandler, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Call DynamoDB Local directly with the caller's credentials (it keeps each one's tables apart)."""
    headers = {**_caller_headers(request), "X-Amz-Target": f"DynamoDB_20120810.{operation}"}
    sent = urllib.request.Request(target + "/", data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(sent, timeout=60) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError:
        return {}


def main(argv: list[str] | None = None) -> None:
    """``python -m ddbnb.emulation.capacity_proxy --target URL --port P --write-units W --read-units R``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="DynamoDB Local's URL")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--write-units", type=float, default=0.0, help="per table and second; 0: no limit")
    parser.add_argument("--read-units", type=float, default=0.0, help="per table and second; 0: no limit")
    parser.add_argument(
        "--key-range-write-units", type=float, default=0.0, help="per partition key value and second; 0: no limit"
    )
    parser.add_argument("--index-write-units", type=float, default=0.0, help="per GSI and second; 0: no limit")
    args = parser.parse_args(argv)
    proxy = CapacityProxy(
        args.target, args.read_units, args.write_units, args.port, args.key_range_write_units, args.index_write_units
    )
    print(f"capacity proxy on {proxy.url} -> {args.target}", flush=True)
    proxy.server.serve_forever()


if __name__ == "__main__":
    main()
