"""The journal of a migration: each written item's before-image and a digest of what was written.

Only the standard library and boto3: this module ships inside the Lambda package. Where ISA-L's
gzip (the ``isal`` package) is installed, as with ddbnb itself, it compresses and decompresses: the
same gzip format, about six times the speed of zlib at level 1. The Lambda package carries the
standard library's gzip instead; either reads what the other wrote.

One object per page, gzipped JSON lines, written (on disk: fsynced, renamed into
place, and the folder fsynced) before the page's writes are sent, so no write can exist without its entry. Each line is

    {"k": key, "b": before-image or null, "a": {attribute: digest} or null}

in wire format: ``b`` is the item as read (null when copying into a destination,
where the run wrote items that were not there), ``a`` digests each attribute of
the item as written (null for a delete; "" for an attribute written as it was
read, whose digest the rollback takes from ``b``). A page that is written again after
conflicts (conditional mode) rewrites its object before the new writes, without
the entries whose writes were refused, so the object always holds each key's
latest intended write.

Where it goes (``journal_to``): a folder (local engine),
``<folder>/segment-<n>/<name>.jsonl.gz``; or ``s3://bucket/prefix`` (aws engine),
the same names under the prefix. Names sort in the order they were written;
a rollback reads a segment's objects newest first (an undo log).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import boto3

from ddbnb.worker.clients import client, split_s3
from ddbnb.worker.jsontext import to_json_text

_gzip: Any
try:
    from isal import igzip as _gzip
except ImportError:  # the Lambda package: the standard library only
    import gzip as _gzip

#: The folder (or prefix) of a run that holds its journal.
FOLDER = "journal"
SUFFIX = ".jsonl.gz"
#: gzip level: 1 is within a few percent of 6 in size here, at a third of the CPU (zlib and ISA-L alike).
LEVEL = 1

WireItem = dict[str, Any]
Digest = dict[str, str]
#: The digest of an attribute written as it was read: the rollback takes it from the before-image.
SAME = ""


def _canonical(value: Mapping[str, Any]) -> str:
    """A wire value in one spelling (numbers normalized, sets sorted, binary as base64), self-delimiting."""
    ((tag, raw),) = value.items()
    if tag == "S":
        return f"S{len(raw)}:{raw}"
    if tag == "N":
        return "N" + _number(raw)
    if tag == "M":
        return "M{" + "".join(f"{len(k)}:{k}={_canonical(v)};" for k, v in sorted(raw.items())) + "}"
    if tag == "L":
        return "L[" + "".join(_canonical(v) + ";" for v in raw) + "]"
    if tag == "B":
        return "B" + _b64(raw)
    if tag == "BOOL":
        return "T" if raw else "F"
    if tag == "NULL":
        return "0"
    if tag == "SS":
        return "SS[" + "".join(f"{len(v)}:{v}" for v in sorted(raw)) + "]"
    if tag == "NS":
        return "NS[" + ",".join(sorted(_number(n) for n in raw)) + "]"
    if tag == "BS":
        return "BS[" + ",".join(sorted(_b64(b) for b in raw)) + "]"
    raise ValueError(f"unknown DynamoDB type tag {tag!r}")


#: Enough digits for any DynamoDB number (38 significant digits): normalizing never rounds.
_EXACT = Context(prec=60)


def _number(raw: str) -> str:
    number = Decimal(raw)
    return "0" if number == 0 else str(number.normalize(_EXACT))


def _b64(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else base64.b64encode(raw).decode("ascii")


def value_digest(value: Mapping[str, Any]) -> str:
    """A short digest of one attribute's value; equal for equal values, however DynamoDB spells them."""
    return hashlib.blake2b(_canonical(value).encode(), digest_size=8).hexdigest()


def item_digest(item: Mapping[str, Any] | None) -> Digest | None:
    """Each attribute's digest (None for an absent item)."""
    if item is None:
        return None
    return {name: value_digest(value) for name, value in item.items()}


def entry(key: WireItem, before: WireItem | None, after: WireItem | None, before_text: str = "") -> dict[str, Any]:
    """One journal line: ``key``, the item as read (``before``) and the digest of what is written (``after``).

    An attribute written as it was read is digested as ``SAME`` (the rollback
    digests it from the before-image): a transform that changes one attribute
    of twenty digests one. ``before_text``, when given, is ``before`` as
    DynamoDB sent it (:func:`ddbnb.worker.wire.item_texts`): the line carries it
    as it is, instead of encoding ``before`` again.
    """
    written = before if not before_text else Encoded(before_text)
    if after is None:
        return {"k": key, "b": written, "a": None}
    kept = before or {}
    # A kept attribute is usually the very object read (the write reuses it): ``is`` decides before ``==``.
    return {
        "k": key,
        "b": written,
        "a": {n: SAME if (old := kept.get(n)) is v or old == v else value_digest(v) for n, v in after.items()},
    }


class Encoded(str):
    """A value's JSON text, written into a journal line as it is."""


def after_digest(record: Mapping[str, Any]) -> Digest | None:
    """The digest of what a journal entry's write left (``SAME`` attributes digested from its before-image)."""
    after: Digest | None = record["a"]
    if after is None:
        return None
    before = record["b"] or {}
    return {name: value_digest(before[name]) if digest == SAME else digest for name, digest in after.items()}


def entry_for(
    raw: WireItem,
    written: WireItem | None,
    key_names: Iterable[str],
    target_keys: Iterable[str],
    in_place: bool,
    raw_text: str = "",
) -> dict[str, Any]:
    """The entry of one write of a run: in place, ``raw``'s key and ``raw`` as the before-image (``raw_text``:
    its JSON text as read, when known); into a destination, the written item's key and no before-image
    (``written`` is never None there)."""
    if in_place:
        return entry({name: raw[name] for name in key_names}, raw, written, raw_text)
    assert written is not None
    return entry({name: written[name] for name in target_keys}, None, written)


def differences(now: Digest | None, then: Digest | None) -> list[str]:
    """The attributes whose values differ between two digests (added, removed or changed), sorted."""
    now, then = now or {}, then or {}
    return sorted(name for name in now.keys() | then.keys() if now.get(name) != then.get(name))


def object_name(segment: int, name: str) -> str:
    """An object's path under the journal's root: ``segment-<n>/<name>``."""
    return f"segment-{segment}/{name}"


def encode(entries: list[dict[str, Any]]) -> bytes:
    """One journal object's body: the entries as gzipped JSON lines (binary as base64, as the wire carries it)."""
    body: bytes = _gzip.compress("".join(map(_line, entries)).encode(), compresslevel=LEVEL)
    return body


def _line(record: Mapping[str, Any]) -> str:
    before = record["b"]
    text = before if isinstance(before, Encoded) else to_json_text(before)
    return f'{{"k":{to_json_text(record["k"])},"b":{text},"a":{to_json_text(record["a"])}}}\n'


class JournalWriter:
    """Writes one segment's journal objects to a folder or an S3 prefix."""

    def __init__(self, target: str, segment: int, boto3_session: boto3.Session | None = None) -> None:
        self.target = target
        self.segment = segment
        self.session = boto3_session
        self.objects = 0
        self.bytes = 0
        self.named = 0

    def new_name(self) -> str:
        """A name that sorts after every earlier one of this segment: UTC to the microsecond, this writer's
        count, then a random tag (two invocations of one segment never run at once)."""
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:]
        self.named += 1
        return f"{stamp}-{self.named:06d}-{uuid.uuid4().hex[:8]}{SUFFIX}"

    def write(self, name: str, entries: list[dict[str, Any]]) -> None:
        """Write (or rewrite) object ``name`` with ``entries``; return once it is durable."""
        body = encode(entries)
        path = object_name(self.segment, name)
        if self.target.startswith("s3://"):
            bucket, prefix = split_s3(self.target)
            client("s3", self.session).put_object(Bucket=bucket, Key=f"{prefix}/{path}", Body=body)
        else:
            final = Path(self.target) / path
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = final.with_name(f"{final.name}.{os.getpid()}.tmp")
            with open(temporary, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
            _sync_folder(final.parent)  # the new name too: a power cut must not lose the entry before the write
        self.objects += 1
        self.bytes += len(body)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a file renamed into it survives a power cut (where the platform allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # a folder some file systems will not fsync
    finally:
        os.close(descriptor)


def segments(source: str, boto3_session: boto3.Session | None = None) -> list[int]:
    """The segments that hold journal objects under ``source`` (a folder or ``s3://bucket/prefix``)."""
    found: set[int] = set()
    if source.startswith("s3://"):
        bucket, prefix = split_s3(source)
        pages = client("s3", boto3_session).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/segment-", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.add(int(common["Prefix"].rstrip("/").rsplit("-", 1)[1]))
    elif Path(source).is_dir():
        for folder in Path(source).glob("segment-*"):
            if folder.is_dir() and any(folder.glob("*" + SUFFIX)):
                found.add(int(folder.name.rsplit("-", 1)[1]))
    return sorted(found)


def object_names(source: str, segment: int, boto3_session: boto3.Session | None = None) -> list[str]:
    """The names of a segment's journal objects, newest first."""
    names: list[str] = []
    if source.startswith("s3://"):
        bucket, prefix = split_s3(source)
        pages = client("s3", boto3_session).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/{object_name(segment, '')}"):
            names += [item["Key"].rsplit("/", 1)[1] for item in page.get("Contents", [])]
    else:
        names = [path.name for path in (Path(source) / f"segment-{segment}").glob("*" + SUFFIX)]
    return sorted((n for n in names if n.endswith(SUFFIX)), reverse=True)


def read_object(
    source: str, segment: int, name: str, boto3_session: boto3.Session | None = None
) -> list[dict[str, Any]]:
    """The entries of one journal object, in the order they were written."""
    path = object_name(segment, name)
    if source.startswith("s3://"):
        bucket, prefix = split_s3(source)
        body = client("s3", boto3_session).get_object(Bucket=bucket, Key=f"{prefix}/{path}")["Body"].read()
    else:
        body = (Path(source) / path).read_bytes()
    # Lines end in "\n" alone: a before-image as DynamoDB sent it may hold other line separators (U+2028).
    return [json.loads(line) for line in _gzip.decompress(body).decode().split("\n") if line]


def totals(source: str, boto3_session: boto3.Session | None = None) -> dict[str, int]:
    """How many objects and bytes the journal under ``source`` holds."""
    objects = size = 0
    for _, nbytes in _listing(source, boto3_session):
        objects += 1
        size += nbytes
    return {"objects": objects, "bytes": size}


def _listing(source: str, boto3_session: boto3.Session | None) -> Iterator[tuple[str, int]]:
    if source.startswith("s3://"):
        bucket, prefix = split_s3(source)
        pages = client("s3", boto3_session).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for item in page.get("Contents", []):
                if item["Key"].endswith(SUFFIX):
                    yield item["Key"], int(item["Size"])
    elif Path(source).is_dir():
        for path in Path(source).glob("segment-*/*" + SUFFIX):
            yield str(path), path.stat().st_size
