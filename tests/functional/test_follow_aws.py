"""The aws engine's follower: the stack's Lambda, fed by an event source mapping on the stream, and
``follow`` on the operator's machine enabling it and matching its reports with the stream.

Real parts: the run itself goes through the template's state machine on moto (the ``moto`` fixture
of test_state_machine.py, whose patched Lambda invoke runs the real handler in this process against
DynamoDB Local); the mapping, the failure queue and the results bucket are moto's; the data and the
stream are DynamoDB Local's.

moto workarounds, all in this file:
- moto's Lambda polls no stream without Docker, and only streams of its own DynamoDB. The test
  creates the mapping on a stream of a same-named moto table, then points the mapping at DynamoDB
  Local's stream in moto's backend (this server runs in this process).
- :class:`Poller` plays Lambda's part: while the mapping is enabled, it reads DynamoDB Local's
  stream, hands batches in the documented event shape to the function (moto's invoke), retries from
  the first ``batchItemFailures`` record, and after the mapping's retries sends the documented
  on-failure record to the queue.
- The function runs in this process, so it reads ``DDBNB_FOLLOW_SETTINGS`` from this environment,
  and the packaged transform from the built package, unpacked into the working directory.
"""

from __future__ import annotations

import importlib
import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import ddbnb
from ddbnb.control.package import build_lambda_package
from ddbnb.engines import aws as engine_aws
from ddbnb.engines.resultwriter import ChildOutcome, write_results
from ddbnb.exceptions import DdbnbError, StackNotFollowingError
from ddbnb.worker import followbatch
from ddbnb.worker.clients import client
from tests.conftest import create_table, put_items, spec
from tests.functional.test_follow import IMAGES, Application, destination_items, expected_copy, source_item
from tests.functional.test_state_machine import REGION, create_stack_resources, moto  # noqa: F401

MAX_RETRIES = 2


def follower_resources(mock: dict[str, Any], outputs: dict[str, str], table: str) -> dict[str, str]:
    """What the stack's follower holds, made directly in moto: the function, the queue, the mapping."""
    from moto.awslambda.utils import get_backend

    lam, sqs, iam = (mock["client"](s) for s in ("lambda", "sqs", "iam"))
    role = iam.create_role(RoleName="follower", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(
        FunctionName="follower",
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        Environment={"Variables": {followbatch.SETTINGS_VARIABLE: "s3://results/follow/settings.json"}},
    )
    queue = sqs.create_queue(QueueName="follower-failures")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    moto_table = mock["client"]("dynamodb").create_table(  # moto looks for the stream in its own DynamoDB
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": IMAGES},
    )["TableDescription"]
    mapping = lam.create_event_source_mapping(
        EventSourceArn=moto_table["LatestStreamArn"],
        FunctionName="follower",
        Enabled=False,
        StartingPosition="TRIM_HORIZON",
        BatchSize=100,
        BisectBatchOnFunctionError=True,
        MaximumRetryAttempts=MAX_RETRIES,
        ParallelizationFactor=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    local_arn = client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    get_backend("123456789012", REGION)._event_source_mappings[mapping["UUID"]].event_source_arn = local_arn
    return {
        **outputs,
        "SourceStreamArn": local_arn,
        "FollowerMappingId": mapping["UUID"],
        "FollowerFailureQueueUrl": queue,
    }


def lambda_record(record: dict[str, Any], arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda hands it to a function (AWS's documented DynamoDB event)."""
    body = dict(record["dynamodb"])
    body["ApproximateCreationDateTime"] = body["ApproximateCreationDateTime"].timestamp()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": body,
        "eventSourceARN": arn,
    }


class Poller(threading.Thread):
    """Lambda's poller for the mapping: reads the stream while the mapping is enabled, invokes the function
    with batches, retries from the first failed record, and gives up to the queue after its retries."""

    def __init__(self, mock: dict[str, Any], outputs: dict[str, str], spoil: set[str] | None = None) -> None:
        super().__init__(daemon=True)
        self.lam, self.sqs = mock["client"]("lambda"), mock["client"]("sqs")
        self.outputs, self.spoil = outputs, spoil or set()
        self.streams = client("dynamodbstreams")
        self.stopped = threading.Event()
        self.invocations = 0
        self.given_up: list[dict[str, Any]] = []

    def __enter__(self) -> Poller:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.join()

    def run(self) -> None:
        arn = self.outputs["SourceStreamArn"]
        (shard,) = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        iterator = None
        while not self.stopped.is_set():
            if self.lam.get_event_source_mapping(UUID=self.outputs["FollowerMappingId"])["State"] != "Enabled":
                time.sleep(0.1)
                continue
            if iterator is None:
                iterator = self.streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            answer = self.streams.get_records(ShardIterator=iterator, Limit=100)
            iterator = answer["NextShardIterator"]
            if not answer["Records"]:
                time.sleep(0.1)
                continue
            self.deliver([lambda_record(r, arn) for r in answer["Records"]], shard["ShardId"])

    def deliver(self, batch: list[dict[str, Any]], shard_id: str) -> None:
        for record in batch:
            if record["dynamodb"]["SequenceNumber"] in self.spoil:
                record["dynamodb"]["Keys"] = {}  # a bad record: the follower cannot tell its item
        for _ in range(MAX_RETRIES + 1):
            self.invocations += 1
            payload = json.dumps({"Records": batch}).encode()
            answer = json.loads(self.lam.invoke(FunctionName="follower", Payload=payload)["Payload"].read())
            failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures", [])]
            if not failed:
                return
            batch = [r for r in batch if int(r["dynamodb"]["SequenceNumber"]) >= int(failed[0])]
        numbers = [r["dynamodb"]["SequenceNumber"] for r in batch]
        info = {
            "shardId": shard_id,
            "startSequenceNumber": numbers[0],
            "endSequenceNumber": numbers[-1],
            "batchSize": len(batch),
            "streamArn": self.outputs["SourceStreamArn"],
        }
        failure = {"requestContext": {"condition": "RetryAttemptsExhausted"}, "DDBStreamBatchInfo": info}
        self.given_up.append(failure)
        self.sqs.send_message(QueueUrl=self.outputs["FollowerFailureQueueUrl"], MessageBody=json.dumps(failure))


@pytest.fixture
def aws_copy(moto, dynamodb, tmp_path, monkeypatch):  # noqa: F811
    """A copy into a re-keyed table run on the aws engine, with its stack's follower, ready to follow."""
    source = create_table(dynamodb, stream=IMAGES)
    destination = create_table(dynamodb, ("id",))
    put_items(dynamodb, source, [source_item(i) for i in range(300)])
    package = build_lambda_package(spec("regroup"))
    outputs = create_stack_resources(moto, source)
    outputs.update(DestinationTableName=destination, CodeKey=package.key, ReservedConcurrency="500")
    outputs = follower_resources(moto, outputs, source)
    for module in ("ddbnb.plan", "ddbnb.awsrun", "ddbnb.follow"):
        monkeypatch.setattr(importlib.import_module(module), "stack_outputs", lambda *_: outputs)

    def fetch_results(outputs: dict[str, str], arn: str, run_dir: Path, session: Any = None) -> list[Path]:
        fetched = engine_aws.fetch_results(outputs, arn, run_dir, session)  # moto's: an empty manifest
        last = {e["segment"]: (e, r) for e, r in moto["results"] if e.get("operation") != "rollback"}
        done = [ChildOutcome(e, "SUCCEEDED", r["started_at"], r["finished_at"], output=r) for e, r in last.values()]
        write_results(run_dir, done, run_name=run_dir.name, engine="aws")  # what AWS's ResultWriter writes
        return fetched

    monkeypatch.setattr(importlib.import_module("ddbnb.awsrun"), "fetch_results", fetch_results)
    unpacked = tmp_path / "package"  # the function's working directory, as in Lambda
    zipfile.ZipFile(io.BytesIO(package.data)).extractall(unpacked)
    monkeypatch.chdir(unpacked)
    monkeypatch.setenv(followbatch.SETTINGS_VARIABLE, "s3://results/follow/settings.json")
    return {"source": source, "destination": destination, "outputs": outputs, "run_dir": tmp_path / "run"}


def run_on_aws(aws_copy: dict[str, Any]) -> None:
    plan = ddbnb.plan_migration(
        aws_copy["source"],
        spec("regroup"),
        destination_table_name=aws_copy["destination"],
        engine="aws",
        stack_name="stack",
        total_segments=2,
        max_concurrency=2,
        follow=True,
    )
    summary = ddbnb.migrate(plan, execute=True, run_dir=aws_copy["run_dir"], require_dry_run=False, progress=False)
    assert summary is not None and summary["status"] == "SUCCEEDED", summary


def test_the_stacks_follower_keeps_a_copy_exact_and_stops_at_cutover(moto, aws_copy, capsys):  # noqa: F811
    source, destination, run_dir = aws_copy["source"], aws_copy["destination"], aws_copy["run_dir"]
    lam = moto["client"]("lambda")
    mapping = aws_copy["outputs"]["FollowerMappingId"]
    with Application(source, 300) as application:
        run_on_aws(aws_copy)
        during = application.writes
        time.sleep(0.5)
    assert during > 20
    assert lam.get_event_source_mapping(UUID=mapping)["State"] == "Disabled"  # created disabled; the run left it
    assert not ddbnb.verify(run_dir, progress=False)["matches"]  # a snapshot's holes

    with Poller(moto, aws_copy["outputs"]) as poller:
        followed = ddbnb.follow(run_dir, progress=False)
        assert followed["status"] == "CAUGHT_UP" and followed["engine"] == "aws", followed
        assert followed["pending"] == 0 and followed["skipped_records"] == 0 and followed["failed"] == 0
        assert followed["scanned"] > 0 and followed["written"] + followed["deleted"] > 0
        assert destination_items(destination) == expected_copy(source)  # 0 stale, 0 missing, 0 extra
        assert ddbnb.verify(run_dir, progress=False)["matches"]
        assert lam.get_event_source_mapping(UUID=mapping)["State"] == "Enabled"  # it keeps following
        settings = json.loads(
            moto["client"]("s3").get_object(Bucket="results", Key="follow/settings.json")["Body"].read()
        )
        assert settings["event"]["transform"] == "transforms/transforms.py:regroup"  # its name in the package
        assert settings["event"]["journal"]["to"].startswith("s3://results/runs/")

        # the application goes on after the follow returned: the follower, not `follow`, applies it
        with Application(source, 300, seed=11) as later:
            later.wait_for(20)
        assert later.writes >= 20
        deadline = time.monotonic() + 30
        while destination_items(destination) != expected_copy(source) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert destination_items(destination) == expected_copy(source)
        invocations = poller.invocations

        with pytest.raises(DdbnbError, match="still enabled"):  # it would transform again what a rollback restores
            ddbnb.rollback(run_dir, execute=True, progress=False)
        stopped = ddbnb.stop_following(run_dir)
        assert stopped["state"] == "Disabled" and lam.get_event_source_mapping(UUID=mapping)["State"] == "Disabled"
        client("dynamodb").put_item(TableName=source, Item=source_item(5, group="g2"))  # after cutover
        time.sleep(0.5)
        assert poller.invocations == invocations  # a disabled mapping hands the follower nothing

    # the follower's writes are journaled in S3 with the run's, and the rollback undoes them, newest first
    undone = ddbnb.rollback(run_dir, execute=True, progress=False, max_concurrency=2)
    assert undone["failed"] == 0
    assert "stop it: ddbnb.stop_following" in capsys.readouterr().out


def test_a_bad_record_is_retried_then_reported_with_its_key_and_nothing_else_is_lost(moto, aws_copy):  # noqa: F811
    source, destination, run_dir = aws_copy["source"], aws_copy["destination"], aws_copy["run_dir"]
    run_on_aws(aws_copy)
    dynamodb = client("dynamodb")
    for i in range(6):
        dynamodb.update_item(
            TableName=source,
            Key={"pk": {"S": f"p{i % 7}"}, "sk": {"S": f"s{i:05d}"}},
            UpdateExpression="SET #g = :g",
            ExpressionAttributeNames={"#g": "group"},
            ExpressionAttributeValues={":g": {"S": "g2"}},
        )
    arn = aws_copy["outputs"]["SourceStreamArn"]
    streams = client("dynamodbstreams")
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    bad = records[-3]  # the update of item 3: every record before and after it is applied
    with Poller(moto, aws_copy["outputs"], spoil={bad["dynamodb"]["SequenceNumber"]}) as poller:
        followed = ddbnb.follow(run_dir, progress=False, for_s=20)
    assert len(poller.given_up) == 1 and poller.given_up[0]["DDBStreamBatchInfo"]["batchSize"] == 3
    # the range given up on holds the bad record and the two after it, but those two were applied already
    assert followed["skipped_batches"] == 1 and followed["skipped_records"] == 1
    skipped = [json.loads(line) for line in (run_dir / "follow" / "skipped.jsonl").read_text().splitlines()]
    assert skipped[0]["key"] == bad["dynamodb"]["Keys"]
    moved = destination_items(destination)
    wanted = expected_copy(source)
    assert moved == wanted  # the two good records after the bad one were applied on the retries
    assert followed["status"] == "CAUGHT_UP" and followed["pending"] == 0


def test_a_stack_without_a_follower_is_named_with_the_fix(moto, aws_copy, monkeypatch):  # noqa: F811
    run_on_aws(aws_copy)
    bare = {k: v for k, v in aws_copy["outputs"].items() if not k.startswith("Follower")}
    monkeypatch.setattr(importlib.import_module("ddbnb.follow"), "stack_outputs", lambda *_: bare)
    with pytest.raises(StackNotFollowingError, match="follow=True"):
        ddbnb.follow(aws_copy["run_dir"], progress=False)
    followed = ddbnb.follow(aws_copy["run_dir"], engine="local", progress=False)  # this machine can, meanwhile
    assert followed["status"] == "CAUGHT_UP"
    assert destination_items(aws_copy["destination"]) == expected_copy(aws_copy["source"])


def test_the_handler_takes_stream_events_as_aws_documents_them(moto, aws_copy):  # noqa: F811
    """A batch straight to the handler: applied, reported, and a bad record handed back by sequence number."""
    from ddbnb.worker import lambda_entry
    from tests.functional.test_state_machine import Context

    run_on_aws(aws_copy)
    dynamodb = client("dynamodb")
    dynamodb.put_item(TableName=aws_copy["source"], Item=source_item(1, group="g2"))
    ddbnb.follow(aws_copy["run_dir"], progress=False, for_s=0.1)  # writes the settings; nothing polls
    now = time.time()
    good = {
        "eventID": "1",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "eventSourceARN": aws_copy["outputs"]["SourceStreamArn"],
        "dynamodb": {
            "ApproximateCreationDateTime": now,
            "Keys": {"pk": {"S": "p1"}, "sk": {"S": "s00001"}},
            "NewImage": source_item(1, group="g2"),
            "OldImage": source_item(1),
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": IMAGES,
        },
    }
    bad = {
        **good,
        "eventID": "2",
        "dynamodb": {**good["dynamodb"], "Keys": {"pk": {"S": "p1"}}, "SequenceNumber": "112"},
    }
    answer = lambda_entry.handle({"Records": [good, bad]}, Context(60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "112"}]}
    assert "g2#s00001" in destination_items(aws_copy["destination"])  # regroup's new key for item 1
    s3 = moto["client"]("s3")
    listed = s3.list_objects_v2(Bucket="results", Prefix="runs/")["Contents"]
    reports = [o["Key"] for o in listed if "/follow/batches/" in o["Key"]]
    report = json.loads(s3.get_object(Bucket="results", Key=reports[-1])["Body"].read())
    assert [n for n, _ in report["handled"]] == ["111"] and report["written"] >= 1
    assert any("/journal/segment-999999/" in o["Key"] for o in listed)  # the follower's writes, journaled


def test_the_handler_refuses_records_of_another_table(moto, aws_copy):  # noqa: F811
    from ddbnb.exceptions import FollowSettingsError
    from ddbnb.worker.followbatch import follow_batch

    settings = {"event": {"table": aws_copy["source"], "transform": spec("regroup")}, "reports_to": "s3://results/x"}
    record = {"eventSource": "aws:dynamodb", "eventSourceARN": "arn:aws:dynamodb:r:1:table/other/stream/x"}
    with pytest.raises(FollowSettingsError, match="other"):
        follow_batch([record], {**settings, "event": {**settings["event"], "destination": aws_copy["destination"]}})


def test_without_settings_the_follower_says_to_run_follow(moto, aws_copy, monkeypatch):  # noqa: F811
    from ddbnb.exceptions import FollowSettingsError
    from ddbnb.worker.followbatch import handle_records

    with pytest.raises(FollowSettingsError, match="ddbnb follow RUN_DIR"):
        handle_records({"Records": []})
    monkeypatch.delenv(followbatch.SETTINGS_VARIABLE)
    with pytest.raises(FollowSettingsError, match="not named"):
        handle_records({"Records": []})
