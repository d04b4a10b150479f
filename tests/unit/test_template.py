"""The CloudFormation template: cfn-lint clean, least privilege, and the safety defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from ddbnb.worker import lambda_entry

TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "migration.yaml"
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, errors = decode(str(TEMPLATE))
    assert not errors
    return parsed


def resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def test_cfn_lint_reports_nothing():
    done = subprocess.run([CFN_LINT, str(TEMPLATE)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_cfn_lint_checks_the_state_machine_definition(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace('"Type": "Choice",', '"Type": "Chioce",', 1))
    done = subprocess.run([CFN_LINT, str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "E3601" in done.stdout


def test_no_iam_statement_allows_every_resource(template):
    for role in resources(template, "AWS::IAM::Role"):
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                for branch in statement["Fn::If"][1:] if "Fn::If" in statement else [statement]:
                    if branch != {"Ref": "AWS::NoValue"}:  # a statement only some stacks have
                        assert branch["Resource"] != "*", branch


def test_the_results_bucket_is_encrypted_private_tls_only_and_expires(template):
    (bucket,) = resources(template, "AWS::S3::Bucket")
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["LifecycleConfiguration"]["Rules"][0]["Status"] == "Enabled"
    (policy,) = resources(template, "AWS::S3::BucketPolicy")
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_state_machine_fans_out_standard_children_from_s3(template):
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    assert machine["StateMachineType"] == "STANDARD"
    definition = json.loads(json.dumps(machine["Definition"]))
    migrate = definition["States"]["Migrate"]
    assert migrate["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert migrate["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert "ResultWriter" in migrate and "MaxConcurrencyPath" in migrate
    assert {"ToleratedFailurePercentagePath", "ToleratedFailureCountPath"} <= set(migrate)
    child = migrate["ItemProcessor"]["States"]
    assert child["MorePages"]["Choices"][0]["Next"] == "NextInvocation"
    assert child["NextInvocation"]["Next"] == "Process"
    assert "Catch" not in child["Process"]  # a failed child stops at Process, with its cursor: a redrive resumes it


def test_a_failed_map_fails_the_execution_at_the_map_so_a_redrive_runs_the_map_run_again(template):
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    states = machine["Definition"]["States"]
    # A redrive restarts from the state that has no Exited event; a Catch would move it past the Map.
    assert "Catch" not in states["Migrate"]
    assert not [name for name, state in states.items() if state["Type"] == "Fail"]
    (role,) = (
        r for r in resources(template, "AWS::IAM::Role") if "states" in json.dumps(r["AssumeRolePolicyDocument"])
    )
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    redrive = next(s for s in statements if "states:RedriveExecution" in s["Action"])
    assert "execution:${AWS::StackName}-migration/*" in json.dumps(redrive["Resource"])  # the Map Run's children


def test_capacity_is_raised_and_restored_by_the_worker_on_every_exit(template):
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    states = machine["Definition"]["States"]
    for name in ("RaiseCapacity", "CapacityReady", "RestoreCapacity", "CollectRanges"):
        assert states[name]["Parameters"]["FunctionName"] == "${WorkerFunctionArn}"
        assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= set(
            states[name]["Retry"][0]["ErrorEquals"]
        )
    assert states["CapacityActive"]["Default"] == "WaitForCapacity"
    # The Map's one or two passes (the second runs the hot keys' ranges) all end at the restore.
    assert states["Migrate"]["Next"] == "RangesWanted"
    assert states["RangesWanted"]["Default"] == states["AnyRanges"]["Default"] == "RestoreWanted"
    assert states["RangesList"]["Next"] == "Migrate" and "Catch" not in states["CollectRanges"]
    # A refused restore never fails a run that succeeded: it is caught, and reported in the output.
    assert states["RestoreCapacity"]["Catch"][0]["Next"] == "Done"
    # Failed, stopped and timed-out executions: the stack's rule sends the status change to the worker.
    (rule,) = resources(template, "AWS::Events::Rule")
    assert set(rule["EventPattern"]["detail"]["status"]) == {"FAILED", "ABORTED", "TIMED_OUT"}
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["WorkerFunction", "Arn"]}
    # ... with the bucket whose capacity record (written before the first raise) says what to put back.
    transformer = rule["Targets"][0]["InputTransformer"]
    sent = transformer["InputTemplate"]["Fn::Sub"].replace("<arn>", '"arn:x"').replace("<status>", '"FAILED"')
    event = json.loads(sent.replace("${ResultsBucket}", "bucket"))
    assert event == {
        "detail-type": lambda_entry.STATUS_CHANGE,
        "detail": {"executionArn": "arn:x", "status": "FAILED"},
        "results_bucket": "bucket",
    }
    assert transformer["InputPathsMap"] == {"arn": "$.detail.executionArn", "status": "$.detail.status"}
    raised = states["RaiseCapacity"]["Parameters"]["Payload"]
    assert raised["record_to.$"] == "$.capacity_record"
    (permission,) = resources(template, "AWS::Lambda::Permission")
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["RestoreOnStop", "Arn"]}


def test_the_worker_gets_lambdas_full_timeout_by_default(template):
    assert template["Parameters"]["LambdaTimeoutSeconds"]["Default"] == 900
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    assert worker["Timeout"] == {"Ref": "LambdaTimeoutSeconds"}
    assert all(function["Runtime"].startswith("python3.1") for function in resources(template, "AWS::Lambda::Function"))


def test_the_worker_task_retries_every_transient_error_aws_documents(template):
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    process = machine["Definition"]["States"]["Migrate"]["ItemProcessor"]["States"]["Process"]
    retried = {error for rule in process["Retry"] for error in rule["ErrorEquals"]}
    # The four AWS recommends for every Lambda task; then how timeouts and out-of-memory surface.
    assert {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.Unknown",
        "Lambda.ClientExecutionTimeoutException",
        "Sandbox.Timedout",
        "States.Timeout",
    } <= retried
    assert "States.ALL" not in retried  # a bug in the transform is not retried forever
    assert all(rule["MaxAttempts"] >= 2 and rule.get("JitterStrategy") == "FULL" for rule in process["Retry"])


def test_the_worker_reserves_its_concurrency_unless_told_not_to(template):
    reserved = template["Resources"]["WorkerFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == 500


def test_vpc_log_key_and_access_logs_are_options_and_every_checkov_skip_says_why(template):
    parameters = template["Parameters"]
    assert all(parameters[name]["Default"] == "" for name in ("SubnetIds", "SecurityGroupIds", "LogKmsKeyArn"))
    assert all(
        function["VpcConfig"]["Fn::If"][0] == "InVpc" for function in resources(template, "AWS::Lambda::Function")
    )
    assert all(group["KmsKeyId"]["Fn::If"][0] == "HasLogKey" for group in resources(template, "AWS::Logs::LogGroup"))
    (bucket,) = resources(template, "AWS::S3::Bucket")
    assert bucket["LoggingConfiguration"]["Fn::If"][0] == "HasAccessLogs"
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    skips = [
        skip
        for r in template["Resources"].values()
        for skip in r.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert {s["id"] for s in skips} == {
        "CKV_AWS_18",
        "CKV_AWS_27",
        "CKV_AWS_115",
        "CKV_AWS_116",
        "CKV_AWS_117",
        "CKV_AWS_158",
        "CKV_AWS_173",
    }
    assert all(len(s["comment"]) > 40 for s in skips)


def test_every_run_setting_reaches_each_invocation_rollbacks_and_journals_included(template):
    from ddbnb.engines.aws import execution_input

    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    migrate = machine["Definition"]["States"]["Migrate"]
    selected = {name.removesuffix(".$") for name in migrate["ItemSelector"]}
    again = {name.removesuffix(".$") for name in migrate["ItemProcessor"]["States"]["NextInvocation"]["Parameters"]}
    assert again == selected | {"cursor", "totals"}  # the loop drops nothing the first invocation had
    assert {"operation", "journal", "key_range", "hot_items"} <= selected
    event = {"table": "t", "segment": 0, "total_segments": 1, "transform": "m:f", "write_mode": "batch"}
    sent = execution_input([{**event, "rate_limit": 0}], segments_key="k", max_concurrency=1)
    read = {path.removeprefix("$.") for path in migrate["ItemSelector"].values() if path.startswith("$.")}
    assert read <= set(sent)  # every path the Map reads is in the input ddbnb sends
    assert (sent["operation"], sent["journal"]) == ("migrate", {})
    # The second pass, for hot keys' ranges: what its states read is in the input too, ranges null until then.
    states = machine["Definition"]["States"]
    wanted = {term["Variable"].removeprefix("$.") for term in states["RangesWanted"]["Choices"][0]["And"]}
    collected = states["CollectRanges"]["Parameters"]["Payload"]["write_to.$"].removeprefix("$.")
    assert wanted | {collected} <= set(sent)
    assert (sent["hot_items"], sent["ranges"], sent["ranges_key"]) == (0, None, "ranges.json")
    cut = execution_input(
        [{**event, "rate_limit": 0, "hot_items": 50}], segments_key="runs/r/segments.json", max_concurrency=1
    )
    assert (cut["hot_items"], cut["ranges_key"]) == (50, "runs/r/ranges.json")


def test_the_worker_may_touch_only_its_logs_and_journal_under_runs_and_the_results_it_collects_ranges_from(template):
    (worker,) = [r for r in resources(template, "AWS::IAM::Role") if "migrate-tables" in json.dumps(r)]
    statements = {s["Sid"]: s for s in worker["Policies"][0]["PolicyDocument"]["Statement"]}
    puts = json.dumps(statements["WriteFailureConflictLogsAndJournal"]["Resource"])
    assert all(f"/runs/*/{log}/*" in puts for log in ("failures", "conflicts", "journal"))
    assert statements["ReadJournalForRollback"]["Action"] == "s3:GetObject"
    assert "/runs/*/journal/*" in json.dumps(statements["ReadJournalForRollback"]["Resource"])
    listing = statements["ListJournalForRollback"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "runs/*/journal/*"}}
    assert "dynamodb:BatchGetItem" in statements["WriteTarget"]["Action"]  # a rollback reads the items it restores
    # The hot keys' ranges: read from the Map Run's ResultWriter files, written as the next item list.
    assert "/runs/*/ranges.json" in puts
    assert statements["ReadSegmentResultsForHotKeyRanges"]["Action"] == "s3:GetObject"
    assert json.dumps(statements["ReadSegmentResultsForHotKeyRanges"]["Resource"]).endswith('/results/*"}')
    assert statements["ListSegmentResultsForHotKeyRanges"]["Condition"] == {"StringLike": {"s3:prefix": "results/*"}}


def test_the_follower_exists_only_with_a_stream_and_its_mapping_starts_disabled(template):
    follower = {
        name: resource
        for name, resource in template["Resources"].items()
        if name.startswith("Follower") and not name.startswith("FollowerFailureQueuePolicy")
    }
    assert set(follower) == {
        "FollowerFailureQueue",
        "FollowerLogGroup",
        "FollowerRole",
        "FollowerFunction",
        "FollowerMapping",
    }
    assert all(resource["Condition"] == "Follows" for resource in follower.values())
    mapping = follower["FollowerMapping"]["Properties"]
    assert mapping["Enabled"] is False and mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FollowerFailureQueue", "Arn"]}
    for setting, parameter in (
        ("BatchSize", "FollowerBatchSize"),
        ("MaximumRetryAttempts", "FollowerMaxRetries"),
        ("ParallelizationFactor", "FollowerParallelization"),
    ):
        assert mapping[setting] == {"Ref": parameter}
    assert template["Parameters"]["SourceStreamArn"]["Default"] == ""


def test_the_followers_role_reads_only_its_stream_and_sends_only_to_its_queue(template):
    (policy,) = template["Resources"]["FollowerRole"]["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"] if isinstance(s, dict) and "Sid" in s}
    assert statements["ReadStream"]["Resource"] == {"Ref": "SourceStreamArn"}
    assert set(statements["ReadStream"]["Action"]) == {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
    }
    assert "stream/*" in str(statements["ListTheTablesStreams"]["Resource"])
    assert statements["SendSkippedBatches"]["Resource"] == {"Fn::GetAtt": ["FollowerFailureQueue", "Arn"]}
    assert "follow/settings.json" in str(statements["ReadSettings"]["Resource"])
    assert "dynamodb:Scan" not in str(policy)  # it re-reads items by key; it never scans
    queue = template["Resources"]["FollowerFailureQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] == {"Fn::If": ["HasQueueKey", {"Ref": "AWS::NoValue"}, True]}
    (deny,) = template["Resources"]["FollowerFailureQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
