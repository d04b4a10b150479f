"""Deploying the stack to the sandbox's moto server, through change sets."""

from __future__ import annotations

import pytest

from ddbnb import delete_stack, deploy_stack
from ddbnb.exceptions import DeployError, InvalidParameterError, StackFailedError
from ddbnb.worker.clients import client
from tests.conftest import TRANSFORMS, simple_item


@pytest.fixture
def stack_name(request):
    name = f"ddbnb-{request.node.name.replace('_', '-')[:40]}"
    yield name
    delete_stack(name, progress=False)


def test_deploy_creates_the_stack_and_a_second_deploy_is_a_no_op(make_table, stack_name, capsys):
    table = make_table([simple_item(1)])
    outputs = deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False)
    assert outputs["StateMachineArn"].endswith(f":stateMachine:{stack_name}-migration")
    assert outputs["WorkerFunctionName"] == f"{stack_name}-worker"
    assert outputs["Transform"] == "transforms/transforms.py:bump"
    function = client("lambda").get_function(FunctionName=outputs["WorkerFunctionName"])["Configuration"]
    assert (function["Timeout"], function["MemorySize"], function["Handler"]) == (900, 1024, "handler.handler")
    machine = client("stepfunctions").describe_state_machine(stateMachineArn=outputs["StateMachineArn"])
    assert machine["roleArn"].startswith("arn:aws:iam::")  # moto drops Definition objects: see test_state_machine
    assert client("s3").head_bucket(Bucket=outputs["ResultsBucketName"])

    again = deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False)
    assert again == outputs
    assert "no changes" in capsys.readouterr().out


def test_the_stack_caps_the_plans_concurrency_and_knows_its_code_and_tables(make_table, stack_name, tmp_path):
    import ddbnb
    from ddbnb.control.deploy import stack_differences

    table = make_table([simple_item(i) for i in range(10)])
    outputs = deploy_stack(
        stack_name,
        table,
        f"{TRANSFORMS}:bump",
        reserved_concurrency=3,
        stack_parameters={"ResultsRetentionDays": "3"},
        progress=False,
    )
    assert outputs["ReservedConcurrency"] == "3"
    stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}["ResultsRetentionDays"] == "3"
    plan = ddbnb.plan_migration(
        table, f"{TRANSFORMS}:bump", engine="aws", stack_name=stack_name, total_segments=8, max_concurrency=6
    )
    assert plan.max_concurrency == 3 and any("the stack reserves" in reason for reason in plan.reasons)
    assert stack_differences(outputs, f"{TRANSFORMS}:bump", table, None) == []
    edited = tmp_path / "transforms.py"
    edited.write_text(TRANSFORMS.read_text() + "\n# edited after the deploy\n")
    (code,) = stack_differences(outputs, f"{edited}:bump", table, None)
    assert outputs["CodeKey"] in code
    assert len(stack_differences(outputs, f"{TRANSFORMS}:bump", "other-table", "copy")) == 2


def test_a_new_transform_updates_the_function_code(make_table, stack_name, tmp_path):
    table = make_table([simple_item(1)])
    deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False)
    changed = tmp_path / "transforms.py"
    changed.write_text(TRANSFORMS.read_text() + "\n# a new version\n")
    outputs = deploy_stack(stack_name, table, f"{changed}:bump", progress=False)
    stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    code_key = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}["CodeKey"]
    assert outputs["WorkerFunctionName"] and code_key.startswith("ddbnb/lambda-")


def test_a_failed_deploy_names_the_resource_and_reason(make_table, stack_name, session):
    # moto creates every resource it is given, so the failure CloudFormation would report
    # is injected into its answers: the stack rolls back because the function failed.
    failed_event = {
        "EventId": "e-failed",
        "StackName": stack_name,
        "LogicalResourceId": "WorkerFunction",
        "ResourceType": "AWS::Lambda::Function",
        "ResourceStatus": "CREATE_FAILED",
        "ResourceStatusReason": "Resource handler returned message: Code storage limit exceeded",
        "Timestamp": "2026-11-27T12:00:00Z",
    }

    def rolled_back(parsed, **_):
        for stack in parsed.get("Stacks", []):
            stack["StackStatus"] = "ROLLBACK_COMPLETE"

    def with_failure(parsed, **_):
        parsed["StackEvents"] = [
            {
                **failed_event,
                "ResourceStatus": "ROLLBACK_COMPLETE",
                "EventId": "e-last",
                "LogicalResourceId": stack_name,
            },
            failed_event,
            *parsed.get("StackEvents", []),
        ]

    executed = []
    session.events.register("after-call.cloudformation.ExecuteChangeSet", lambda **_: executed.append(True))
    session.events.register(
        "after-call.cloudformation.DescribeStacks", lambda parsed, **kw: rolled_back(parsed) if executed else None
    )
    session.events.register("after-call.cloudformation.DescribeStackEvents", with_failure)
    table = make_table([simple_item(1)])
    with pytest.raises(DeployError) as info:
        deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False, boto3_session=session)
    assert (info.value.resource, info.value.status) == ("WorkerFunction", "CREATE_FAILED")
    assert "Code storage limit exceeded" in str(info.value) and stack_name in str(info.value)


def test_a_stack_left_in_rollback_complete_is_named_or_replaced(make_table, stack_name, session):
    table = make_table([simple_item(1)])
    deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False)
    # moto never fails a create, so the state a failed first deploy leaves is injected into its answers.
    failed = {"on": True}

    def rolled_back(parsed, **_):
        for stack in parsed.get("Stacks", []):
            if failed["on"]:
                stack["StackStatus"] = "ROLLBACK_COMPLETE"

    session.events.register("after-call.cloudformation.DescribeStacks", rolled_back)
    session.events.register("before-call.cloudformation.DeleteStack", lambda **_: failed.update(on=False))
    with pytest.raises(StackFailedError) as info:
        deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", progress=False, boto3_session=session)
    assert info.value.status == "ROLLBACK_COMPLETE" and "replace_failed=True" in str(info.value)
    assert "delete_stack" in str(info.value)
    outputs = deploy_stack(
        stack_name, table, f"{TRANSFORMS}:bump", progress=False, replace_failed=True, boto3_session=session
    )
    assert not failed["on"]  # it was deleted, then created again
    stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE" and outputs["StateMachineArn"]


def test_bad_parameters_are_refused_before_anything_is_deployed(sandbox):
    with pytest.raises(InvalidParameterError, match="lambda_memory_mb"):
        deploy_stack("s", "table", f"{TRANSFORMS}:bump", lambda_memory_mb=64, progress=False)


def test_a_stack_deployed_with_a_stream_gets_a_disabled_follower_mapping(make_table, sandbox, stack_name):
    import boto3

    from ddbnb.exceptions import StreamRequiredError

    table = make_table([simple_item(i) for i in range(3)])  # DynamoDB Local: no stream
    with pytest.raises(StreamRequiredError, match="update_table"):
        deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", follow=True, progress=False)
    # moto's Lambda takes a mapping only on a stream of moto's own DynamoDB: the stream is made there
    moto_dynamodb = boto3.client("dynamodb", endpoint_url=sandbox.moto.url)
    arn = moto_dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]
    parameters = {"SourceStreamArn": arn, "FollowerBatchSize": "250", "FollowerParallelization": "2"}
    outputs = deploy_stack(stack_name, table, f"{TRANSFORMS}:bump", stack_parameters=parameters, progress=False)
    assert outputs["SourceStreamArn"] == arn and outputs["FollowerMappingId"]
    mapping = client("lambda").get_event_source_mapping(UUID=outputs["FollowerMappingId"])
    assert mapping["State"] == "Disabled" and mapping["EventSourceArn"] == arn
    assert mapping["StartingPosition"] == "TRIM_HORIZON" and mapping["BatchSize"] == 250
    assert mapping["BisectBatchOnFunctionError"] is True and mapping["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    assert mapping["ParallelizationFactor"] == 2 and mapping["MaximumRetryAttempts"] == 10
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].startswith("arn:aws:sqs:")
    function = client("lambda").get_function(FunctionName=f"{stack_name}-follower")["Configuration"]
    assert function["Environment"]["Variables"]["DDBNB_FOLLOW_SETTINGS"] == (
        f"s3://{outputs['ResultsBucketName']}/follow/settings.json"
    )
    assert mapping["FunctionArn"] == function["FunctionArn"]
