"""Deploy the migration stack: upload the Lambda package, then create or update through a change set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3

from ddbnb.control.package import build_lambda_package
from ddbnb.exceptions import DeployError, StackNotFoundError
from ddbnb.paths import TEMPLATE
from ddbnb.progress import progress_bar
from ddbnb.worker import params
from ddbnb.worker.clients import clear_errors, client

#: How often the stack is polled while it changes.
POLL_S = 2.0
_DONE = ("_COMPLETE", "_FAILED")
#: Outputs read from the stack's resources when CloudFormation reports none.
_FROM_RESOURCES = {
    "StateMachine": "StateMachineArn",
    "ResultsBucket": "ResultsBucketName",
    "WorkerFunction": "WorkerFunctionName",
}


def _artifact_bucket(s3: Any, sts: Any, region: str) -> str:
    """The code bucket: private, encrypted, TLS-only, created on first use."""
    account = sts.get_caller_identity()["Account"]
    name = f"ddbnb-artifacts-{account}-{region}"
    try:
        s3.head_bucket(Bucket=name)
        return name
    except s3.exceptions.ClientError:
        pass
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    return name


def _upload(s3: Any, bucket: str, key: str, data: bytes) -> None:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def _stack_exists(cloudformation: Any, stack_name: str) -> bool:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError:
        return False
    return bool(stacks) and stacks[0]["StackStatus"] != "REVIEW_IN_PROGRESS"


def _failure(cloudformation: Any, stack_name: str) -> DeployError:
    events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
    for event in reversed(events):  # the first failure, in time order
        if event["ResourceStatus"].endswith("_FAILED"):
            return DeployError(
                stack_name,
                event["LogicalResourceId"],
                event["ResourceStatus"],
                event.get("ResourceStatusReason", "no reason given"),
            )
    status = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return DeployError(stack_name, stack_name, status["StackStatus"], status.get("StackStatusReason", "unknown"))


def _wait(cloudformation: Any, stack_name: str, progress: bool) -> str:
    seen: set[str] = set()
    with progress_bar(unit="event", desc=f"stack {stack_name}", enabled=progress) as bar:
        while True:
            try:
                status = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
                events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
            except cloudformation.exceptions.ClientError as exc:
                if "does not exist" in str(exc):  # a deleted stack disappears
                    return "DELETE_COMPLETE"
                raise
            fresh = [e for e in events if e["EventId"] not in seen]
            seen.update(e["EventId"] for e in fresh)
            if fresh:
                bar.update(len(fresh))
                bar.set_postfix_str(f"{fresh[0]['LogicalResourceId']} {fresh[0]['ResourceStatus']}")
            if status.endswith(_DONE) and "IN_PROGRESS" not in status:
                return str(status)
            time.sleep(POLL_S)


@clear_errors
def stack_outputs(stack_name: str, boto3_session: boto3.Session | None = None) -> dict[str, str]:
    """The stack's outputs (read from its resources where CloudFormation lists none).

    Raises StackNotFoundError, naming 01_deploy, when the stack does not exist.
    """
    params.check_name("stack_name", stack_name)
    cloudformation = client("cloudformation", boto3_session)
    if not _stack_exists(cloudformation, stack_name):
        raise StackNotFoundError(
            stack_name, f"{cloudformation.meta.endpoint_url} (region {cloudformation.meta.region_name})"
        )
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        for resource in page["StackResourceSummaries"]:
            key = _FROM_RESOURCES.get(resource.get("LogicalResourceId", ""))
            if key and key not in outputs and resource.get("PhysicalResourceId"):
                outputs[key] = resource["PhysicalResourceId"]
    for parameter in stack.get("Parameters", []):
        if parameter["ParameterKey"] in ("SourceTableName", "DestinationTableName"):
            outputs.setdefault(parameter["ParameterKey"], parameter["ParameterValue"])
    return outputs


@clear_errors
def deploy_stack(
    stack_name: str,
    table_name: str,
    transform: str,
    *,
    destination_table_name: str = "",
    lambda_memory_mb: int = 1024,
    lambda_timeout_s: int = 900,
    template: str | Path = TEMPLATE,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, str]:
    """Package the worker with ``transform``, then create or update ``stack_name``; return its outputs.

    Updates go through a change set; a change set with no changes is a success.
    On failure, DeployError names the first resource that failed and why.
    """
    params.check_name("stack_name", stack_name)
    params.check_table_name("table_name", table_name)
    params.check_bool("progress", progress)
    if destination_table_name:
        params.check_table_name("destination_table_name", destination_table_name)
    params.check_int("lambda_memory_mb", lambda_memory_mb, 128, 10_240)
    params.check_int("lambda_timeout_s", lambda_timeout_s, 60, 900)
    package = build_lambda_package(transform)
    s3, cloudformation = client("s3", boto3_session), client("cloudformation", boto3_session)
    bucket = _artifact_bucket(s3, client("sts", boto3_session), s3.meta.region_name)
    _upload(s3, bucket, package.key, package.data)
    parameters = {
        "SourceTableName": table_name,
        "DestinationTableName": destination_table_name or "",
        "CodeBucket": bucket,
        "CodeKey": package.key,
        "LambdaMemoryMB": str(lambda_memory_mb),
        "LambdaTimeoutSeconds": str(lambda_timeout_s),
    }
    exists = _stack_exists(cloudformation, stack_name)
    change_set = f"ddbnb-{int(time.time())}"
    cloudformation.create_change_set(
        StackName=stack_name,
        ChangeSetName=change_set,
        ChangeSetType="UPDATE" if exists else "CREATE",
        TemplateBody=Path(template).read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    if not _change_set_has_changes(cloudformation, stack_name, change_set):
        print(f"stack {stack_name}: no changes")
    else:
        cloudformation.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
        if _wait(cloudformation, stack_name, progress) not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            raise _failure(cloudformation, stack_name)
    return {**stack_outputs(stack_name, boto3_session), "Transform": package.transform}


def _change_set_has_changes(cloudformation: Any, stack_name: str, change_set: str) -> bool:
    """Wait for the change set; an empty one is deleted and reported as False."""
    while True:
        described: dict[str, Any] = cloudformation.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        time.sleep(POLL_S / 2)
    reason = described.get("StatusReason", "")
    if described["Status"] == "FAILED" and not ("didn't contain changes" in reason or "No updates" in reason):
        raise DeployError(stack_name, f"change set {change_set}", "FAILED", reason)
    empty = described["Status"] == "FAILED" or (
        not described.get("Changes") and described.get("ChangeSetType") == "UPDATE"
    )
    if empty:
        cloudformation.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
    return not empty


@clear_errors
def delete_stack(stack_name: str, *, progress: bool = True, boto3_session: boto3.Session | None = None) -> None:
    """Delete ``stack_name`` and wait; the results bucket is kept (DeletionPolicy Retain)."""
    params.check_bool("progress", progress)
    params.check_name("stack_name", stack_name)
    cloudformation = client("cloudformation", boto3_session)
    if not _stack_exists(cloudformation, stack_name):
        return
    cloudformation.delete_stack(StackName=stack_name)
    status = _wait(cloudformation, stack_name, progress)
    if status != "DELETE_COMPLETE":
        raise _failure(cloudformation, stack_name)
