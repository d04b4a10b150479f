"""Follow and verify against DynamoDB Local's stream: a live application writes during and after the run,
and the target ends exactly the transform of the source, provably, and rolls back exactly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

import ddbnb
from ddbnb.cli import main
from ddbnb.exceptions import RunNotFinishedError, StreamRequiredError, StreamTrimmedError
from ddbnb.follow import _LocalFollow
from ddbnb.runfolder import RunFolder
from ddbnb.status import run_status
from ddbnb.worker.clients import client
from ddbnb.worker.items import deserialize
from tests.conftest import ROOT, create_table, put_items, scan_all, spec
from tests.fixtures.transforms import regroup

IMAGES = "NEW_AND_OLD_IMAGES"


def source_item(i: int, group: str = "g0", kind: str = "keep") -> dict[str, Any]:
    return {
        "pk": {"S": f"p{i % 7}"},
        "sk": {"S": f"s{i:05d}"},
        "n": {"N": str(i)},
        "group": {"S": group},
        "kind": {"S": kind},
    }


class Application:
    """Threads that add to counters, move items (their copy's key), delete, drop (the transform leaves
    them out of a copy) and create items, until stopped; or, as an old version of the application, write
    whole items in the old shape (no ``flag``)."""

    def __init__(self, table: str, items: int, old_shape: bool = False, seed: int = 7) -> None:
        self.table, self.items, self.old_shape = table, items, old_shape
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> Application:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()

    def wait_for(self, writes: int, timeout_s: float = 60.0) -> None:
        """Block until the application has made at least ``writes`` writes (a loaded machine may take
        seconds for a few), or fail when it has not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.writes < writes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.writes >= writes, f"the application made {self.writes} writes, not {writes}, in {timeout_s} s"

    def run(self) -> None:
        dynamodb = client("dynamodb")
        while not self.stopped.is_set():
            self.write_one(dynamodb)
            self.writes += 1

    def write_one(self, dynamodb: Any) -> None:
        i = self.random.randrange(self.items + self.items // 10)  # some keys are new
        key = {"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:05d}"}}
        if self.old_shape:
            dynamodb.put_item(TableName=self.table, Item=source_item(i, kind="old-version"))
            return
        op = self.random.choice(("add", "move", "delete", "drop", "create"))
        if op == "add":
            dynamodb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        elif op in ("move", "drop"):
            name, value = ("group", f"g{self.random.randrange(3)}") if op == "move" else ("kind", "drop")
            dynamodb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #a = :v",
                ExpressionAttributeNames={"#a": name},
                ExpressionAttributeValues={":v": {"S": value}},
            )
        elif op == "delete":
            dynamodb.delete_item(TableName=self.table, Key=key)
        else:
            dynamodb.put_item(TableName=self.table, Item=source_item(i, group="g1"))


def expected_copy(source: str) -> dict[str, dict[str, Any]]:
    """What the destination must hold: ``regroup`` of every source item, by ``id``."""
    made = {}
    for item in scan_all(client("dynamodb"), source).values():
        copied = regroup(dict(item))
        if copied is not None:
            made[copied["id"]] = copied
    return made


def destination_items(table: str) -> dict[str, dict[str, Any]]:
    dynamodb = client("dynamodb")
    return {
        item["id"]: item
        for page in dynamodb.get_paginator("scan").paginate(TableName=table)
        for item in map(deserialize, page["Items"])
    }


def stream_records(table: str) -> int:
    """How many records the table's stream holds now (DynamoDB Local: one shard)."""
    streams = client("dynamodbstreams")
    arn = client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    position, count = iterator["ShardIterator"], 0
    while True:
        records = streams.get_records(ShardIterator=position)
        count += len(records["Records"])
        if not records["Records"]:
            return count
        position = records["NextShardIterator"]


def migrated(dynamodb: Any, run_dir: Path, items: int, transform: str = "set_flag", segments: int = 1) -> str:
    """A table with a stream, of ``items`` items, migrated in place by ``transform`` into ``run_dir``."""
    table = create_table(dynamodb, stream=IMAGES)
    put_items(dynamodb, table, [source_item(i) for i in range(items)])
    plan = ddbnb.plan_migration(table, spec(transform), total_segments=segments, max_concurrency=segments)
    ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    return table


def run_copy(source: str, destination: str, run_dir: Path) -> dict[str, Any]:
    plan = ddbnb.plan_migration(
        source,
        spec("regroup"),
        destination_table_name=destination,
        total_segments=4,
        max_concurrency=4,
        follow=True,
    )
    summary = ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
    assert summary is not None
    return summary


def test_a_followed_copy_into_a_rekeyed_table_is_exactly_the_transform_of_the_source(dynamodb, tmp_path):
    source = create_table(dynamodb, stream=IMAGES)
    destination = create_table(dynamodb, ("id",))
    put_items(dynamodb, source, [source_item(i) for i in range(700)])
    run_dir = tmp_path / "run"
    with Application(source, 700) as application:
        run_copy(source, destination, run_dir)
        during = application.writes
        application.wait_for(during + 20)  # and after the run, before the follow
    assert during > 50 and application.writes > during
    stale = ddbnb.verify(run_dir, progress=False)
    assert not stale["matches"] and stale["missing"] + stale["extra"] + stale["different"] > 20  # a snapshot's holes

    followed = ddbnb.follow(run_dir, progress=False)
    assert followed["status"] == "CAUGHT_UP" and followed["failed"] == 0 and followed["lag_s"] <= 2.0
    assert followed["records"] > during  # the run's own writes are in the source's stream only in place
    assert destination_items(destination) == expected_copy(source)  # 0 stale, 0 missing, 0 extra
    assert ddbnb.verify(run_dir, progress=False)["matches"]

    # verify finds what differs, with the keys
    wanted = expected_copy(source)
    changed, gone = sorted(wanted)[:2]
    dynamodb.update_item(
        TableName=destination,
        Key={"id": {"S": changed}},
        UpdateExpression="SET n = :v",
        ExpressionAttributeValues={":v": {"N": "-1"}},
    )
    dynamodb.delete_item(TableName=destination, Key={"id": {"S": gone}})
    dynamodb.put_item(TableName=destination, Item={"id": {"S": "nobody#makes-this"}})
    report = ddbnb.verify(run_dir, progress=False)
    assert (report["different"], report["missing"], report["extra"]) == (1, 1, 1)
    assert report["listed"]["different"][0]["key"] == {"id": changed}
    assert report["listed"]["different"][0]["attributes"] == ["n"]
    assert report["listed"]["missing"][0]["key"] == {"id": gone}
    assert report["listed"]["extra"][0]["key"] == {"id": "nobody#makes-this"}
    assert json.loads((run_dir / "verify.json").read_text())["different"] == 1
    dynamodb.delete_item(TableName=destination, Key={"id": {"S": "nobody#makes-this"}})
    dynamodb.put_item(TableName=destination, Item={"id": {"S": changed}, "other": {"S": "x"}})

    # the follower's writes are journaled: the rollback undoes them, newest first, then the run's
    undone = ddbnb.rollback(run_dir, execute=True, progress=False, max_concurrency=2)
    assert undone["failed"] == 0 and undone["conflicts"] >= 1  # the item changed on purpose is left alone
    assert list(destination_items(destination)) == [changed]


def test_following_in_place_converts_what_an_old_application_writes_after_the_scan(dynamodb, tmp_path):
    table = create_table(dynamodb, stream="KEYS_ONLY")  # in place, keys are enough: every item is read again
    put_items(dynamodb, table, [source_item(i) for i in range(600)])
    run_dir = tmp_path / "run"
    plan = ddbnb.plan_migration(table, spec("set_flag"), total_segments=2, max_concurrency=2, follow=True)
    with Application(table, 600, old_shape=True):
        ddbnb.migrate(plan, execute=True, run_dir=run_dir, require_dry_run=False, progress=False)
        time.sleep(0.5)
    with pytest.raises(SystemExit) as differs:  # the command says so in its exit status, for scripts
        main(["verify", str(run_dir)])
    assert differs.value.code == 1
    left = json.loads((run_dir / "verify.json").read_text())
    assert left["not_migrated"] > 0 and left["listed"]["not_migrated"][0]["would"] == "put"

    followed = ddbnb.follow(run_dir, progress=False)
    assert followed["status"] == "CAUGHT_UP" and followed["failed"] == 0 and followed["written"] > 0
    # its own writes came back through the stream before it caught up: one read each, no write
    assert followed["unchanged"] >= followed["written"]
    assert {item.get("flag") for item in scan_all(dynamodb, table).values()} == {"v2"}
    assert main(["verify", str(run_dir)]) == 0
    assert main(["follow", str(run_dir)]) == 0  # from where the last one stopped: nothing new to write
    again = RunFolder(run_dir).follow_summary()
    assert (again["written"], again["failed"], again["status"]) == (0, 0, "CAUGHT_UP")
    # what it reads are at most the records of the first follow's own last writes, which may reach the stream
    # after that one had caught up (a clean-clone run saw 77 once): nothing of them is written again
    assert again["records"] <= followed["written"]
    story = run_status(run_dir)
    assert story.count("follow 20") == 2 and "not migrated 0" in story and "MATCHES" in story and "DIFFERS" in story


def test_a_killed_follower_goes_on_from_its_saved_position_and_ends_exact(dynamodb, tmp_path):
    run_dir = tmp_path / "run"
    table = migrated(dynamodb, run_dir, 100, "set_flag_held", segments=2)
    put_items(dynamodb, table, [source_item(i, kind="old-version") for i in range(1200)])  # and 100 of the run
    hold = tmp_path / "hold"
    hold.write_text("")
    script = f"import ddbnb\nddbnb.follow({str(run_dir)!r}, progress=False)\n"
    env = {**os.environ, "DDBNB_TEST_HOLD": str(hold), "DDBNB_TEST_RUN_DIR": str(run_dir)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**env, "DDBNB_TEST_HOLD_AFTER": "950"}, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not RunFolder(run_dir).follow_state().get("shards"):  # a first batch applied, the next one held
            assert child.poll() is None and time.monotonic() < deadline, child.stderr and child.stderr.read()
            time.sleep(0.05)
        saved = RunFolder(run_dir).follow_state()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        hold.unlink()
    assert any(shard.get("after") for shard in saved["shards"].values())
    assert {item.get("flag") for item in scan_all(dynamodb, table).values()} == {"v2", None}  # stopped mid-way
    followed = ddbnb.follow(run_dir, progress=False)
    assert followed["status"] == "CAUGHT_UP"
    assert followed["records"] <= stream_records(table) - 1000  # from where it stopped: the first batch not again
    assert {item.get("flag") for item in scan_all(dynamodb, table).values()} == {"v2"}
    assert ddbnb.verify(run_dir, progress=False)["matches"]


def test_a_trimmed_position_stops_the_follower_with_what_was_missed_and_how_to_recover(dynamodb, tmp_path, session):
    run_dir = tmp_path / "run"
    migrated(dynamodb, run_dir, 50)

    def trimmed(**_: Any) -> Any:  # what DynamoDB answers past its 24 hours; DynamoDB Local never trims
        body = {"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}}
        return AWSResponse("http://fault", 400, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": 400}}

    session.events.register("before-call.dynamodb-streams.GetRecords", trimmed)
    with pytest.raises(StreamTrimmedError, match=r"since .*verify"):
        ddbnb.follow(run_dir, progress=False, boto3_session=session)
    # a position older than the stream's 24 hours is refused the same way, before any record is read
    position = RunFolder(run_dir).stream_position()
    RunFolder(run_dir).record_stream_position({**position, "taken_at": position["taken_at"] - 25 * 3600})
    with pytest.raises(StreamTrimmedError, match="DynamoDB keeps records 24 hours"):
        ddbnb.follow(run_dir, progress=False)


def test_follow_refuses_what_it_cannot_follow_and_says_what_to_do(make_table, dynamodb, tmp_path):
    no_stream = make_table([source_item(i) for i in range(5)])
    with pytest.raises(StreamRequiredError, match="StreamEnabled"):
        ddbnb.plan_migration(no_stream, spec("set_flag"), follow=True)
    keys_only = create_table(dynamodb, stream="KEYS_ONLY")
    destination = create_table(dynamodb, ("id",))
    with pytest.raises(StreamRequiredError, match="NEW_AND_OLD_IMAGES"):
        ddbnb.plan_migration(keys_only, spec("regroup"), destination_table_name=destination, follow=True)
    report = ddbnb.dry_run(no_stream, spec("set_flag"), sample_size=5)
    assert [f["rule"] for f in report.findings if f["rule"].startswith("stream")] == ["stream_off"]

    # a run of a table without a stream records no position: follow says so
    plan = ddbnb.plan_migration(no_stream, spec("set_flag"), total_segments=1, max_concurrency=1)
    ddbnb.migrate(plan, execute=True, run_dir=tmp_path / "plain", require_dry_run=False, progress=False)
    with pytest.raises(StreamRequiredError, match="no stream position"):
        ddbnb.follow(tmp_path / "plain", progress=False)
    # an unfinished run is finished first
    migrated(dynamodb, tmp_path / "run", 0)
    RunFolder(tmp_path / "run").set_status("INTERRUPTED")
    with pytest.raises(RunNotFinishedError, match="resume"):
        ddbnb.follow(tmp_path / "run", progress=False)


class SplitStream:
    """DescribeStream, GetShardIterator and GetRecords answers shaped as AWS documents them, for a stream
    whose shard split (DynamoDB Local has one shard that never splits): ``old`` closed before the run,
    ``parent`` closed during it into ``left`` and ``right``. Each shard holds records of the given keys."""

    def __init__(self, arn: str, records: dict[str, list[dict[str, Any]]]) -> None:
        self.arn, self.records = arn, records
        self.read: list[str] = []

        def shard(name: str, start: int, end: int = 0, parent: str = "") -> dict[str, Any]:
            numbers = {"StartingSequenceNumber": str(start), **({"EndingSequenceNumber": str(end)} if end else {})}
            return {"ShardId": name, **({"ParentShardId": parent} if parent else {}), "SequenceNumberRange": numbers}

        self.shards = [  # listed children first: lineage, not listing order, decides
            shard("shardId-old", 100, 199),
            shard("shardId-left", 300, parent="shardId-parent"),
            shard("shardId-parent", 200, 299),
            shard("shardId-right", 400, parent="shardId-parent"),
        ]

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str = "") -> dict[str, Any]:
        start = [s["ShardId"] for s in self.shards].index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        page = self.shards[start : start + 2]  # two a page: the follower must follow LastEvaluatedShardId
        more = {"LastEvaluatedShardId": page[-1]["ShardId"]} if start + 2 < len(self.shards) else {}
        return {"StreamDescription": {"StreamArn": StreamArn, "StreamStatus": "ENABLED", "Shards": page, **more}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": f"{ShardId}|0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard, at = ShardIterator.split("|")
        self.read.append(shard)
        records = self.records.get(shard, [])[int(at) : int(at) + 2]
        end = int(at) + len(records)
        closed = shard in ("shardId-old", "shardId-parent")
        done = closed and end >= len(self.records.get(shard, []))
        return {"Records": records, **({} if done else {"NextShardIterator": f"{shard}|{end}"})}


def test_a_split_shard_is_read_to_its_end_before_its_children_and_an_old_closed_shard_not_at_all(dynamodb, tmp_path):
    run_dir = tmp_path / "run"
    table = migrated(dynamodb, run_dir, 12)
    folder = RunFolder(run_dir)
    position = folder.stream_position()
    shards = {"shardId-old": {"parent": None, "open": False}, "shardId-parent": {"parent": None, "open": True}}
    folder.record_stream_position({**position, "shards": shards})
    put_items(dynamodb, table, [source_item(i, kind="old-version") for i in range(12)])  # the records' items

    def record(i: int, sequence: int) -> dict[str, Any]:
        keys = {"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:05d}"}}
        when = Decimal(int(time.time()))
        body = {"Keys": keys, "SequenceNumber": str(sequence), "ApproximateCreationDateTime": when}
        return {"eventName": "MODIFY", "dynamodb": {**body, "StreamViewType": IMAGES}}

    fake = SplitStream(
        position["stream_arn"],
        {
            "shardId-old": [record(0, 150)],
            "shardId-parent": [record(i, 200 + i) for i in range(1, 6)],
            "shardId-left": [record(i, 300 + i) for i in range(6, 9)],
            "shardId-right": [record(i, 400 + i) for i in range(9, 12)],
        },
    )
    follow = _LocalFollow(folder, folder.plan(), folder.stream_position(), None)
    follow.reader.streams = fake
    try:
        for _ in range(20):
            follow.poll_once()
    finally:
        follow.close()
    assert "shardId-old" not in fake.read  # closed before the run: all its records predate the run's reads
    last_parent = max(i for i, shard in enumerate(fake.read) if shard == "shardId-parent")
    first_child = min(i for i, shard in enumerate(fake.read) if shard != "shardId-parent")
    assert last_parent < first_child  # the parent to its end, then its children
    flags = {int(item["n"]): item.get("flag") for item in scan_all(dynamodb, table).values()}
    assert [flags[i] for i in range(12)] == [None] + ["v2"] * 11  # every record of the split applied
    assert follow.state["shards"]["shardId-parent"]["done"] and follow.reader.behind() == []
