"""The template's real state machine definition, executed by moto's Step Functions interpreter.

moto workarounds, all in this file (see shared/DESIGN.md):
- moto runs state machines only with the `execute_state_machine` config, set over /moto-api/config.
- A state machine created through CloudFormation is invisible to the executing backend, and moto
  ignores `Definition` objects: the test creates the machine from the template's Definition itself,
  with the DefinitionSubstitutions applied.
- moto's Lambda runs no code without Docker: its simple backend's `invoke` is patched, in this process,
  to run the real handler (`lambda/handler.py` through ddbnb.worker.lambda_entry) against DynamoDB Local. That
  is why this test starts its own in-process ThreadedMotoServer instead of the sandbox's.
- Pre-warm and restore are worker actions (the Lambda), so they run against DynamoDB Local like the
  segments; the tests use provisioned tables there.
- moto has no RedriveExecution and never fails a Distributed Map for a failed child: the redrive test
  answers RedriveExecution through a botocore hook, and reports the first attempt as FAILED.
- The interpreter calls other services on 127.0.0.1:$MOTO_PORT, so MOTO_PORT is set to this server's port.
- ResultWriter writes only an empty manifest.json, so results files are tested elsewhere
  (tests/unit/test_results_loader.py, on files shaped as AWS documents them); the rollback test writes
  them from the handler's own results, as AWS would.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode

import ddbnb
from ddbnb.control.package import build_lambda_package
from ddbnb.engines import aws as engine_aws
from ddbnb.exceptions import DdbnbError, StaleStackError
from ddbnb.runfolder import RunFolder
from ddbnb.worker import lambda_entry
from ddbnb.worker.prewarm import targets_for
from tests.conftest import create_table, put_items, scan_all, simple_item, spec

TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "migration.yaml"
REGION = "us-east-1"


class Context:
    """The Lambda context the handler reads its deadline from."""

    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


@pytest.fixture
def moto(sandbox, monkeypatch) -> Iterator[dict[str, Any]]:
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.server import ThreadedMotoServer

    calls: list[dict[str, Any]] = []
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []  # each segment invocation's event and result
    actions: list[dict[str, Any]] = []
    behaviour: dict[str, Any] = {"millis": 60_000, "fail_segment": None, "hold": None}

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        event = json.loads(body)
        if "Records" in event:  # the follower, fed by a stream's event source mapping
            return json.dumps(lambda_entry.handle(event, Context(behaviour["millis"]))).encode()
        if "action" in event:  # pre-warm, restore, and the key ranges' collection
            actions.append(event)
            if event["action"] == "collect_ranges":  # what AWS's ResultWriter wrote when the Map Run ended
                publish_results(moto_client("s3"), event["map_run"], results, ranges=False)
            return json.dumps(lambda_entry.handle(event, Context(behaviour["millis"]))).encode()
        if behaviour["hold"] is not None:  # a segment that runs until the test lets it go
            behaviour["hold"].wait(30)
        module, _, function = event["transform"].partition(":")
        if module == "transforms/transforms.py":  # where the package puts tests/fixtures/transforms.py
            event["transform"] = spec(function)
        calls.append(event)
        if event["segment"] == behaviour["fail_segment"]:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": "RuntimeError", "errorMessage": "worker crashed"}).encode()
        result = lambda_entry.handle(event, Context(behaviour["millis"]))
        results.append((event, result))
        return json.dumps(result).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    port = server.get_host_and_port()[1]
    monkeypatch.setenv("MOTO_PORT", str(port))
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # everything but DynamoDB (still DynamoDB Local) goes here
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()  # global state
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    request = urllib.request.Request(f"{url}/moto-api/config", data=json.dumps(config).encode(), method="POST")
    urllib.request.urlopen(request).close()
    session = boto3.Session(region_name=REGION)

    def moto_client(service: str) -> Any:
        return session.client(service, endpoint_url=url)

    yield {
        "url": url,
        "client": moto_client,
        "calls": calls,
        "results": results,
        "actions": actions,
        "behaviour": behaviour,
    }
    server.stop()


def publish(s3: Any, map_run: str, files: dict[str, list[dict[str, Any]]]) -> None:
    """ResultWriter's files under the Map Run's prefix (``results/<map run id>/``), with a manifest that lists
    them, as AWS writes them (moto's ResultWriter writes an empty manifest)."""
    from ddbnb.worker.hotkeys import results_prefix

    prefix = results_prefix(map_run)
    listed: dict[str, list[dict[str, Any]]] = {"SUCCEEDED": [], "FAILED": [], "PENDING": []}
    for name, entries in files.items():
        s3.put_object(Bucket="results", Key=prefix + name, Body=json.dumps(entries).encode())
        listed[name.split("_")[0]].append({"Key": prefix + name, "Size": 1})
    manifest = {"DestinationBucket": "results", "MapRunArn": map_run, "ResultFiles": listed}
    s3.put_object(Bucket="results", Key=prefix + "manifest.json", Body=json.dumps(manifest).encode())


def publish_results(
    s3: Any, map_run: str, results: list[tuple[dict[str, Any], dict[str, Any]]], *, ranges: bool
) -> None:
    """What AWS's ResultWriter writes for a Map Run from the handler's own results: each scan segment's (or,
    with ``ranges``, each key range's) last result."""
    import tempfile

    from ddbnb.engines.resultwriter import ChildOutcome, write_results

    last = {e["segment"]: (e, r) for e, r in results if bool(e.get("key_range")) == ranges and r["cursor"] is None}
    done = [ChildOutcome(e, "SUCCEEDED", r["started_at"], r["finished_at"], output=r) for e, r in last.values()]
    with tempfile.TemporaryDirectory() as folder:
        write_results(folder, done, run_name="map-run", engine="aws")
        publish(s3, map_run, {"SUCCEEDED_0.json": json.loads((Path(folder) / "SUCCEEDED_0.json").read_text())})


def create_stack_resources(moto: dict[str, Any], table: str) -> dict[str, str]:
    """What the stack holds, made directly in moto: the bucket, the worker, the state machine."""
    s3, lam, sfn, iam = (moto["client"](s) for s in ("s3", "lambda", "stepfunctions", "iam"))
    s3.create_bucket(Bucket="results")
    role = iam.create_role(RoleName="ddbnb", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    function = lam.create_function(
        FunctionName="worker",
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        Timeout=900,
    )["FunctionArn"]
    parsed, errors = decode(str(TEMPLATE))
    assert not errors
    machine = parsed["Resources"]["StateMachine"]["Properties"]
    definition = json.dumps(machine["Definition"])
    for name, value in {"WorkerFunctionArn": function, "ResultsBucket": "results"}.items():
        definition = definition.replace("${" + name + "}", value)
    arn = sfn.create_state_machine(name="migration", definition=definition, roleArn=role, type="STANDARD")
    return {
        "StateMachineArn": arn["stateMachineArn"],
        "ResultsBucketName": "results",
        "SourceTableName": table,
        "DestinationTableName": "",
        "CodeKey": build_lambda_package(spec("set_flag")).key,  # what 01_deploy records
    }


def provisioned_table(dynamodb: Any, items: list[dict[str, Any]]) -> str:
    """A table with 50 read and 5 write units, holding ``items``."""
    name = create_table(dynamodb, throughput=5)
    put_items(dynamodb, name, items)
    return name


def run(
    moto: dict[str, Any], outputs: dict[str, str], events: list[dict[str, Any]], name: str, run_dir: Path
) -> dict[str, Any]:
    """Start a pre-warmed run the way the aws engine does, follow it, and fetch its results."""
    targets = targets_for(events[0]["table"], None, read_units=80, write_units=60)
    arn = engine_aws.start_run(events, outputs, name, max_concurrency=2, prewarm_targets=targets, table_poll_s=1)
    described = engine_aws.wait_run(arn, len(events), poll_s=0.5, progress=False)
    sfn = moto["client"]("stepfunctions")
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    described["states"] = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    described["fetched"] = sorted(p.name for p in engine_aws.fetch_results(outputs, arn, run_dir))
    return described


def capacity(dynamodb: Any, table: str) -> tuple[int, int]:
    """The table's provisioned (read, write) units."""
    throughput = dynamodb.describe_table(TableName=table)["Table"]["ProvisionedThroughput"]
    return throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]


def events_for(table: str, total: int, transform: str = "tests.fixtures.transforms:bump") -> list[dict[str, Any]]:
    return [
        {
            "table": table,
            "destination": None,
            "segment": s,
            "total_segments": total,
            "transform": transform,
            "write_mode": "batch",
            "rate_limit": 0,
        }
        for s in range(total)
    ]


def test_every_item_is_transformed_and_capacity_restored(moto, dynamodb, tmp_path):
    table = provisioned_table(dynamodb, [simple_item(i, pad=4000) for i in range(1200)])  # 2.4 MB a segment: 3 pages
    outputs = create_stack_resources(moto, table)
    moto["behaviour"]["millis"] = 0  # a tiny deadline: one page per invocation
    described = run(moto, outputs, events_for(table, 2), "run-1", tmp_path)
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}
    per_segment = [sum(1 for c in moto["calls"] if c["segment"] == s) for s in range(2)]
    assert min(per_segment) >= 3  # the child loops while the result carries a cursor
    assert all(c["totals"]["segment"] == c["segment"] for c in moto["calls"] if c.get("cursor"))
    assert described["states"][:4] == ["PrewarmWanted", "RaiseCapacity", "WaitForCapacity", "CapacityReady"]
    assert described["states"][-3:] == ["RestoreWanted", "RestoreCapacity", "Done"]
    raised = next(a for a in moto["actions"] if a["action"] == "raise_capacity")
    assert raised["targets"] == [{"table": table, "read_units": 80, "write_units": 60}]
    assert capacity(dynamodb, table) == (50, 5)  # restored
    output = json.loads(described["output"])
    assert output["restored"]["restored"] == [table] and output["restored"]["left"] == []
    assert output["capacity"]["restore"] == [
        {"table": table, "indexes": {}, "units": {"saved": [50, 5], "raised": [80, 60]}}
    ]
    assert described["fetched"] == ["manifest.json"]  # moto's ResultWriter writes nothing else


def test_a_failing_worker_still_restores_capacity(moto, dynamodb, tmp_path):
    table = provisioned_table(dynamodb, [simple_item(i) for i in range(300)])
    outputs = create_stack_resources(moto, table)
    moto["behaviour"]["fail_segment"] = 1
    described = run(moto, outputs, events_for(table, 3), "run-2", tmp_path)
    assert "RaiseCapacity" in described["states"]
    # moto does not fail a DISTRIBUTED map for a failed child, so it takes the success path; on AWS
    # (no tolerated failures) the execution fails at the Map, and the stack's rule restores the capacity
    # (test_a_stopped_run_gets_its_capacity_back covers that path).
    if described["status"] == "SUCCEEDED":
        assert described["states"][-2] == "RestoreCapacity"
    else:
        engine_aws.restore_raised(described["executionArn"], outputs["ResultsBucketName"])
    assert capacity(dynamodb, table) == (50, 5)  # restored
    assert any(c["segment"] == 1 for c in moto["calls"])


def test_a_stopped_run_gets_its_capacity_back_from_ddbnb_and_from_the_stacks_rule(
    moto, dynamodb, tmp_path, monkeypatch
):
    import threading

    table = provisioned_table(dynamodb, [simple_item(i) for i in range(50)])
    outputs = create_stack_resources(moto, table)
    moto["behaviour"]["hold"] = release = threading.Event()
    targets = targets_for(table, None, read_units=0, write_units=40)
    arn = engine_aws.start_run(
        events_for(table, 1), outputs, "run-stop", max_concurrency=1, prewarm_targets=targets, table_poll_s=1
    )
    sfn = moto["client"]("stepfunctions")
    deadline = time.monotonic() + 30
    while capacity(dynamodb, table) != (50, 40) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert capacity(dynamodb, table) == (50, 40)  # raised; the segment is held
    # `ddbnb stop RUN_DIR` on the folder that started it: the execution stops, and its capacity comes back
    # from the record the worker wrote before it raised anything.
    import importlib

    awsrun = importlib.import_module("ddbnb.awsrun")
    monkeypatch.setattr(awsrun, "stack_outputs", lambda *_: outputs)
    folder = RunFolder(tmp_path)
    folder.mark("RUNNING", execution_arn=arn, execution_name="run-stop", stack_name="stack", total_segments=1)
    try:
        report = awsrun.stop_execution(folder)
    finally:
        release.set()
    assert sfn.describe_execution(executionArn=arn)["status"] == "ABORTED"
    assert report["restored"] == [table] and capacity(dynamodb, table) == (50, 5)
    assert folder.summary()["status"] == "ABORTED" and folder.summary()["execution_arn"] == arn
    # The stack's EventBridge rule hands the worker the status change as AWS documents it; restoring
    # again is harmless: nothing is at the raised value any more.
    event = {
        "version": "0",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {"executionArn": arn, "stateMachineArn": outputs["StateMachineArn"], "status": "ABORTED"},
    }
    event["results_bucket"] = "results"  # what the template's rule adds (its InputTransformer)
    again = lambda_entry.handle(event, Context(60_000))
    assert again["restored"] == [] and again["left"] == [] and capacity(dynamodb, table) == (50, 5)


def test_conditional_mode_and_the_failure_log_reach_the_worker_through_the_state_machine(moto, dynamodb, tmp_path):
    from ddbnb.insight.results import load_failures

    table = provisioned_table(dynamodb, [simple_item(i, "raise" if i % 10 == 0 else "change") for i in range(200)])
    outputs = create_stack_resources(moto, table)
    moto["behaviour"]["millis"] = 0  # one page per invocation: the settings must survive the loop
    events = [
        {**e, "write_mode": "conditional", "failures_to": "s3://results/runs/run-3/failures"}
        for e in events_for(table, 2, "tests.fixtures.transforms:by_kind")
    ]
    described = run(moto, outputs, events, "run-3", tmp_path)
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert all(c["write_mode"] == "conditional" and c["failures_to"] for c in moto["calls"])
    items = scan_all(dynamodb, table).values()
    assert sum(1 for item in items if item.get("migrated")) == 180
    logs = engine_aws.fetch_failures(outputs, "run-3", tmp_path / "failures")
    assert logs and all(path.name.startswith("segment-") for path in logs)
    failures = load_failures(tmp_path)
    assert sorted(json_key["sk"] for json_key in map(json.loads, failures["key"])) == [
        f"s{i:06d}" for i in range(0, 200, 10)
    ]
    assert failures["error"].str.contains("ValueError").all()


def test_running_03_again_attaches_to_the_execution_its_run_folder_started(moto, make_table, tmp_path, monkeypatch):
    import importlib

    from ddbnb.plan import Plan
    from ddbnb.worker.tables import describe_table

    migrate_module = importlib.import_module("ddbnb.awsrun")
    table = make_table([simple_item(i) for i in range(50)])
    outputs = create_stack_resources(moto, table)
    monkeypatch.setattr(migrate_module, "stack_outputs", lambda *_: outputs)
    plan = Plan(describe_table(table), spec("set_flag"), "aws", 1, 1, stack_name="stack")
    first = migrate_module.run_aws(plan, RunFolder(tmp_path), False, None)["execution_arn"]
    sfn = moto["client"]("stepfunctions")
    machine = outputs["StateMachineArn"]
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    # The kernel died while it waited: summary.json still says RUNNING, with the execution.
    recorded = json.loads((tmp_path / "summary.json").read_text())
    assert recorded["execution_arn"] == first and recorded["status"] == "RUNNING"
    again = migrate_module.run_aws(plan, RunFolder(tmp_path), False, None)["execution_arn"]
    assert again == first
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1  # no second execution


def test_a_stack_deployed_with_other_code_or_tables_is_refused_before_any_execution(
    moto, make_table, tmp_path, monkeypatch
):
    import importlib

    from ddbnb.plan import Plan
    from ddbnb.worker.tables import describe_table

    migrate_module = importlib.import_module("ddbnb.awsrun")
    table = make_table([simple_item(i) for i in range(20)])
    outputs = create_stack_resources(moto, table)  # deployed with set_flag, in place
    monkeypatch.setattr(migrate_module, "stack_outputs", lambda *_: outputs)
    sfn, machine = moto["client"]("stepfunctions"), outputs["StateMachineArn"]
    changed = tmp_path / "code" / "transforms.py"  # the transform file, edited after the deploy
    changed.parent.mkdir()
    changed.write_text(Path(spec("bump").rpartition(":")[0]).read_text() + "\n# edited\n")
    edited = Plan(describe_table(table), f"{changed}:bump", "aws", 1, 1, stack_name="stack")
    with pytest.raises(StaleStackError) as info:
        migrate_module.run_aws(edited, RunFolder(tmp_path), False, None)
    assert "01_deploy" in str(info.value) and "builds" in info.value.differences[0]
    copying = Plan(describe_table(table), spec("set_flag"), "aws", 1, 1, destination="other", stack_name="s")
    with pytest.raises(StaleStackError, match="it writes in place, the plan into 'other'"):
        migrate_module.run_aws(copying, RunFolder(tmp_path), False, None)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []  # nothing started
    ran = migrate_module.run_aws(edited, RunFolder(tmp_path), False, None, True, {"percentage": 5, "count": 0})
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1  # the operator's explicit choice
    sent = json.loads(sfn.describe_execution(executionArn=ran["execution_arn"])["input"])
    # The Map fails past either threshold, so the one not given tolerates every segment.
    assert (sent["tolerated_failure_percentage"], sent["tolerated_failure_count"]) == (5, 1)


def test_execution_names_are_unique_and_fit_step_functions():
    from ddbnb.awsrun import execution_name

    long = "orders:" + "x" * 200 + "-20261127T000000Z"
    names = {execution_name(long) for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 80 and all(c.isalnum() or c in "-_" for c in n) for n in names)


def result_entry(execution: str, segment: int, status: str, scanned: int = 0) -> dict[str, Any]:
    """One child's entry in a ResultWriter file, shaped as AWS documents it (Input and Output are strings)."""
    entry: dict[str, Any] = {
        "ExecutionArn": f"{execution}/Migrate:child-{segment}-{status}",
        "Input": json.dumps({"segment": segment}),
        "InputDetails": {"Included": True},
        "Name": f"child-{segment}",
        "RedriveCount": 0,
        "StartDate": "2026-11-27T10:00:00.000Z",
        "StopDate": f"2026-11-27T10:0{1 if status == 'FAILED' else 5}:00.000Z",
        "Status": status,
    }
    if status == "FAILED":
        entry.update(Error="Lambda.Unknown", Cause="The Lambda function timed out")
    else:
        entry.update(Output=json.dumps({"segment": segment, "scanned": scanned, "written": scanned}))
    return entry


def test_redrive_fetches_the_results_again_and_rewrites_the_summary(moto, dynamodb, tmp_path, monkeypatch):
    import importlib

    import boto3
    from botocore.awsrequest import AWSResponse

    from ddbnb.insight.results import load_results

    migrate_module = importlib.import_module("ddbnb.awsrun")
    table = provisioned_table(dynamodb, [simple_item(i) for i in range(30)])
    outputs = create_stack_resources(moto, table)
    monkeypatch.setattr(migrate_module, "stack_outputs", lambda *_: outputs)
    arn = engine_aws.start_run(events_for(table, 3), outputs, "run-redrive", max_concurrency=3)
    engine_aws.wait_run(arn, 3, poll_s=0.5, progress=False)
    sfn, s3 = moto["client"]("stepfunctions"), moto["client"]("s3")
    map_run = sfn.list_map_runs(executionArn=arn)["mapRuns"][0]["mapRunArn"]

    # The first attempt: segment 2 failed, so 03 left an INCOMPLETE summary and these files.
    first = {
        "SUCCEEDED_0.json": [result_entry(arn, 0, "SUCCEEDED", 10), result_entry(arn, 1, "SUCCEEDED", 10)],
        "FAILED_0.json": [result_entry(arn, 2, "FAILED")],
    }
    publish(s3, map_run, first)
    engine_aws.fetch_results(outputs, arn, tmp_path)
    name = arn.rsplit(":", 1)[-1]
    (tmp_path / "plan.json").write_text(json.dumps({"stack_name": "stack"}))
    (tmp_path / "summary.json").write_text(
        json.dumps({"execution_arn": arn, "execution_name": name, "total_segments": 3, "status": "INCOMPLETE"})
    )
    assert list(load_results(tmp_path)["status"]) == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    # The redriven Map Run adds the segment's new result next to the old files.
    publish(s3, map_run, {**first, "SUCCEEDED_1.json": [result_entry(arn, 2, "SUCCEEDED", 10)]})
    session = boto3.Session(region_name=REGION)
    redriven = []

    def redrive_execution(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        redriven.append(json.loads(params["body"])["executionArn"])  # moto has no RedriveExecution
        return AWSResponse("", 200, {}, None), {"redriveDate": "2026-11-27T11:00:00Z"}

    def failed_until_redriven(parsed: dict[str, Any], **_: Any) -> None:
        if not redriven:  # moto cannot fail a Distributed Map: the first attempt's status is FAILED here
            parsed["status"] = "FAILED"

    # Succeeded executions cannot be redriven, and ddbnb says so before it asks Step Functions.
    with pytest.raises(DdbnbError, match=r"SUCCEEDED.*tolerated failed segments"):
        migrate_module.redrive(tmp_path, progress=False, boto3_session=session)
    session.events.register("before-call.sfn.RedriveExecution", redrive_execution)
    session.events.register("after-call.sfn.DescribeExecution", failed_until_redriven)
    summary = migrate_module.redrive(tmp_path, progress=False, boto3_session=session)
    assert redriven == [arn]
    assert summary["status"] == "SUCCEEDED" and summary["failed_segments"] == 0 and summary["scanned"] == 30
    assert json.loads((tmp_path / "summary.json").read_text()) == summary  # what 04_results reads
    assert len(summary["redrives"]) == 1 and summary["failed_segments_at"] == []
    assert list(load_results(tmp_path)["status"]) == ["SUCCEEDED"] * 3  # the later success wins


def test_a_rollback_runs_on_the_state_machine_from_the_journal_the_migration_left_in_s3(
    moto, dynamodb, make_table, tmp_path, monkeypatch
):
    import functools
    import importlib

    from ddbnb.engines.resultwriter import ChildOutcome, write_results
    from ddbnb.plan import Plan
    from ddbnb.worker import journal
    from ddbnb.worker.tables import describe_table

    migrate_module = importlib.import_module("ddbnb.awsrun")
    rollback_module = importlib.import_module("ddbnb.rollback")
    table = make_table([simple_item(i, pad=4000) for i in range(1200)])  # on demand; 3 pages a segment
    original = scan_all(dynamodb, table)
    outputs = create_stack_resources(moto, table)
    for module in (migrate_module, rollback_module):
        monkeypatch.setattr(module, "stack_outputs", lambda *_: outputs)
    monkeypatch.setattr(rollback_module, "wait_run", functools.partial(engine_aws.wait_run, poll_s=0.5))

    def fetch_results(outputs: dict[str, str], arn: str, run_dir: Path, session: Any = None) -> list[Path]:
        fetched = engine_aws.fetch_results(outputs, arn, run_dir, session)  # moto's: an empty manifest
        last = {e["segment"]: (e, r) for e, r in moto["results"] if e.get("operation") == "rollback"}
        done = [ChildOutcome(e, "SUCCEEDED", r["started_at"], r["finished_at"], output=r) for e, r in last.values()]
        write_results(run_dir, done, run_name=run_dir.name, engine="aws")  # what AWS's ResultWriter writes
        return fetched

    monkeypatch.setattr(rollback_module, "fetch_results", fetch_results)
    moto["behaviour"]["millis"] = 0  # one page, so one journal object, per invocation
    plan = Plan(describe_table(table), spec("set_flag"), "aws", 2, 2, stack_name="stack")
    RunFolder(tmp_path).record_plan({**plan.settings(), "journal_to": ""})
    ran = migrate_module.run_aws(plan, RunFolder(tmp_path), False, None)
    assert ran["execution_status"] == "SUCCEEDED"
    assert {item.get("flag") for item in scan_all(dynamodb, table).values()} == {"v2"}
    location = json.loads((tmp_path / "plan.json").read_text())["journal_to"]
    assert location == f"s3://results/runs/{ran['execution_name']}/journal"
    assert journal.totals(location)["objects"] >= 6
    assert all(call["journal"] == {"to": location} for call in moto["calls"])

    summary = ddbnb.rollback(tmp_path, engine="aws", execute=True, progress=False)
    rolled = [call for call in moto["calls"] if call.get("operation") == "rollback"]
    assert min(sum(1 for c in rolled if c["segment"] == s) for s in range(2)) >= 3  # it loops, object by object
    assert all(isinstance(c["cursor"], str) for c in rolled if c.get("cursor"))
    assert all(c["journal"]["from"] == location and c["journal"]["execute"] is True for c in rolled)
    assert scan_all(dynamodb, table) == original
    assert (summary["written"], summary["conflicts"], summary["status"]) == (1200, 0, "SUCCEEDED")
    assert summary["execution_status"] == "SUCCEEDED"
    assert ddbnb.load_results(summary["run_dir"])["scanned"].sum() == 1200


def test_a_hot_key_is_cut_by_its_scan_segment_and_its_ranges_run_in_a_second_pass_of_the_map(
    moto, dynamodb, make_table, tmp_path, monkeypatch
):
    import functools
    import importlib

    from ddbnb.insight.results import load_results, summarize
    from ddbnb.plan import Plan
    from ddbnb.worker.tables import describe_table

    awsrun, rollback_module = importlib.import_module("ddbnb.awsrun"), importlib.import_module("ddbnb.rollback")
    hot = [{"pk": {"S": "tenant#big"}, "sk": {"S": f"o{i:05d}"}, "n": {"N": str(i)}} for i in range(450)]
    rest = [{"pk": {"S": f"tenant#{i:03d}"}, "sk": {"S": "o"}, "n": {"N": str(i)}} for i in range(150)]
    table = make_table(hot + rest)
    original = scan_all(dynamodb, table)
    outputs = create_stack_resources(moto, table)
    sfn, s3 = moto["client"]("stepfunctions"), moto["client"]("s3")

    def fetch_results(outputs: dict[str, str], arn: str, run_dir: Path, session: Any = None) -> list[Path]:
        operation = json.loads(sfn.describe_execution(executionArn=arn)["input"])["operation"]
        ran = [(e, r) for e, r in moto["results"] if e["operation"] == operation]
        for index, map_run in enumerate(engine_aws.map_run_arns(sfn, arn)):  # what AWS's ResultWriter writes
            publish_results(s3, map_run, ran, ranges=index == 1)
        return engine_aws.fetch_results(outputs, arn, run_dir, session)

    for module in (awsrun, rollback_module):
        monkeypatch.setattr(module, "stack_outputs", lambda *_: outputs)
        monkeypatch.setattr(module, "fetch_results", fetch_results)
    monkeypatch.setattr(rollback_module, "wait_run", functools.partial(engine_aws.wait_run, poll_s=0.5))
    monkeypatch.setattr(awsrun, "wait_run", functools.partial(engine_aws.wait_run, poll_s=0.5))
    plan = Plan(describe_table(table), spec("bump"), "aws", 4, 4, stack_name="stack", write_mode="batch", hot_items=100)
    RunFolder(tmp_path).record_plan({**plan.settings(), "journal_to": ""})
    ran = awsrun.run_aws(plan, RunFolder(tmp_path), False, None)
    assert ran["execution_status"] == "SUCCEEDED"
    arn = ran["execution_arn"]
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    states = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert states == [
        *["PrewarmWanted", "NothingRaised", "Migrate", "RangesWanted", "CollectRanges", "AnyRanges", "RangesList"],
        *["Migrate", "RangesWanted", "RestoreWanted", "Done"],
    ]
    # Every item handled exactly once: the scan took the hot key's first 100, its ranges the other 350.
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}
    key = f"runs/{ran['execution_name']}/ranges.json"
    ranges = json.loads(s3.get_object(Bucket="results", Key=key)["Body"].read())
    cutter = next(r for e, r in moto["results"] if r.get("splits"))
    assert [unit["segment"] for unit in ranges] == [split["segment"] for split in cutter["splits"]]
    assert len(ranges) == 2 and all(unit["segment"] >= 4 for unit in ranges)  # 200 and 150 items
    assert ranges[0]["key_range"]["key"] == {"pk": {"S": "tenant#big"}} and ranges[-1]["key_range"]["until"] is None
    range_calls = [c for c in moto["calls"] if c.get("key_range")]
    assert sorted({c["segment"] for c in range_calls}) == [unit["segment"] for unit in ranges]
    assert all(c["hot_items"] == 100 and c["total_segments"] == 4 for c in moto["calls"])
    assert engine_aws.map_counts(arn, sfn=sfn)["total"] == 6

    # Both Map Runs' results reach the run folder; the summary counts the ranges as segments.
    assert sorted(p.name for p in tmp_path.glob("*.json") if "SUCCEEDED" in p.name or "manifest" in p.name) == [
        "SUCCEEDED_0.json",
        "manifest.json",
        "map2-SUCCEEDED_0.json",
        "map2-manifest.json",
    ]
    summary = summarize(tmp_path, 1.0, 4)
    assert (summary["segments"], summary["key_range_units"], summary["failed_segments"]) == (6, 2, 0)
    assert (summary["scanned"], summary["written"], summary["status"]) == (600, 600, "SUCCEEDED")
    frame = load_results(tmp_path)
    assert list(frame["key_range"]) == [False] * 4 + [True] * 2
    assert list(frame.loc[frame["key_range"], "scanned"]) == [200, 150]

    # The rollback, on the state machine too, undoes the ranges' writes with the scan segments'.
    undone = ddbnb.rollback(tmp_path, engine="aws", execute=True, progress=False)
    rolled = {c["segment"] for c in moto["calls"] if c.get("operation") == "rollback"}
    assert rolled == {0, 1, 2, 3} | {unit["segment"] for unit in ranges}
    assert scan_all(dynamodb, table) == original
    assert (undone["written"], undone["conflicts"], undone["status"]) == (600, 0, "SUCCEEDED")


def test_without_a_cut_the_map_runs_once(moto, dynamodb, make_table, tmp_path):
    table = make_table([simple_item(i) for i in range(120)])  # 17 keys of about 7 items: none hot
    outputs = create_stack_resources(moto, table)
    events = [{**event, "hot_items": 100} for event in events_for(table, 2)]
    arn = engine_aws.start_run(events, outputs, "run-cool", max_concurrency=2)
    described = engine_aws.wait_run(arn, 2, poll_s=0.5, progress=False)
    assert described["status"] == "SUCCEEDED", described.get("cause")
    sfn = moto["client"]("stepfunctions")
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    states = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert states[-6:] == ["Migrate", "RangesWanted", "CollectRanges", "AnyRanges", "RestoreWanted", "Done"]
    assert len(engine_aws.map_run_arns(sfn, arn)) == 1
    ranges = json.loads(
        moto["client"]("s3").get_object(Bucket="results", Key="runs/run-cool/ranges.json")["Body"].read()
    )
    assert ranges == []
    assert {item["visits"] for item in scan_all(dynamodb, table).values()} == {1}
