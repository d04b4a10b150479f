"""Deploy the migration stack: upload the Lambda package, then create or update through a change set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3

from ddbnb.control.package import build_lambda_package, check_package_imports
from ddbnb.exceptions import DeployError, StackFailedError, StackNotFoundError, StreamRequiredError
from ddbnb.paths import TEMPLATE
from ddbnb.progress import progress_bar
from ddbnb.worker import params
from ddbnb.worker.clients import clear_errors, client
from ddbnb.worker.streams import Stream, stream_problems
from ddbnb.worker.tables import table_facts

#: How often the stack is polled while it changes.
POLL_S = 2.0
_DONE = ("_COMPLETE", "_FAILED")
#: Segments that run at once on AWS by default (Lambda allows 1,000 by default), and the workers a
#: stack reserves by default.
AWS_CONCURRENCY = 500
#: Outputs read from the stack's resources when CloudFormation reports none.
_FROM_RESOURCES = {
    "StateMachine": "StateMachineArn",
    "ResultsBucket": "ResultsBucketName",
    "WorkerFunction": "WorkerFunctionName",
    "FollowerMapping": "FollowerMappingId",
    "FollowerFailureQueue": "FollowerFailureQueueUrl",
}
#: The comment lines around the template's follower resources and outputs.
FOLLOWER_BLOCK = ("# >>> follower", "# <<< follower")
#: Parameters a stack's outputs carry too (an empty SourceStreamArn: the stack has no follower).
_FROM_PARAMETERS = ("SourceTableName", "DestinationTableName", "CodeKey", "ReservedConcurrency", "SourceStreamArn")


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


#: States a stack cannot be updated from: it must be deleted first.
UNRECOVERABLE = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED")


def _stack_status(cloudformation: Any, stack_name: str) -> str | None:
    """The stack's status; None when it does not exist (or only holds a change set never executed)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError:
        return None
    if not stacks or stacks[0]["StackStatus"] == "REVIEW_IN_PROGRESS":
        return None
    return str(stacks[0]["StackStatus"])


def _stack_exists(cloudformation: Any, stack_name: str) -> bool:
    return _stack_status(cloudformation, stack_name) is not None


def _event_ids(cloudformation: Any, stack_name: str) -> set[str]:
    """The ids of the stack's events so far (none for a stack that does not exist)."""
    try:
        return {e["EventId"] for e in cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]}
    except cloudformation.exceptions.ClientError:
        return set()


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


def _wait(cloudformation: Any, stack_name: str, progress: bool, before: set[str] | None = None) -> str:
    """Wait for the operation started after the events ``before`` to end; return the stack's final status.

    The stack's own status counts only once an event of this operation ended
    it, so the status of the operation before (UPDATE_COMPLETE, say) is never
    taken for this one's.
    """
    seen: set[str] = set(before or ())
    ended = not before  # a new stack has no earlier operation to mistake
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
            ended = ended or any(
                e["LogicalResourceId"] == stack_name and "IN_PROGRESS" not in e["ResourceStatus"] for e in fresh
            )
            if ended and status.endswith(_DONE) and "IN_PROGRESS" not in status:
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
        if parameter["ParameterKey"] in _FROM_PARAMETERS:
            outputs.setdefault(parameter["ParameterKey"], parameter["ParameterValue"])
    return outputs


def _target(destination: str) -> str:
    return f"into {destination!r}" if destination else "in place"


def stack_differences(outputs: dict[str, str], transform: str, table_name: str, destination: str | None) -> list[str]:
    """What differs between a deployed stack (its ``outputs``) and a plan: the code, the tables, the mode.

    The code is compared by content: the package the plan's transform builds
    now has the key the stack was deployed with, or it does not.
    """
    differences = []
    key = build_lambda_package(transform).key
    if outputs.get("CodeKey") != key:
        differences.append(
            f"its code is {outputs.get('CodeKey') or 'unknown'}, but {transform} builds {key} "
            "(the transform or ddbnb changed since the deploy)"
        )
    return differences + table_differences(outputs, table_name, destination)


def table_differences(outputs: dict[str, str], table_name: str, destination: str | None) -> list[str]:
    """What differs between the tables a deployed stack (its ``outputs``) reads and writes and a plan's."""
    differences = []
    if outputs.get("SourceTableName") != table_name:
        differences.append(f"it reads {outputs.get('SourceTableName')!r}, the plan {table_name!r}")
    deployed = outputs.get("DestinationTableName") or ""
    if deployed != (destination or ""):
        differences.append(f"it writes {_target(deployed)}, the plan {_target(destination or '')}")
    return differences


@clear_errors
def deploy_stack(
    stack_name: str,
    table_name: str,
    transform: str,
    *,
    destination_table_name: str = "",
    lambda_memory_mb: int = 1024,
    lambda_timeout_s: int = 900,
    reserved_concurrency: int = AWS_CONCURRENCY,
    follow: bool = False,
    replace_failed: bool = False,
    stack_parameters: dict[str, str] | None = None,
    template: str | Path = TEMPLATE,
    progress: bool = True,
    boto3_session: boto3.Session | None = None,
) -> dict[str, str]:
    """Package the worker with ``transform``, then create or update ``stack_name``; return its outputs.

    The transform ships with its folder; before anything is uploaded, it is
    imported from the built package alone in a clean interpreter, so a module
    it needs but the package lacks raises PackageImportError with its name.
    Updates go through a change set; a change set with no changes is a success.
    On failure, DeployError names the first resource that failed and why.
    ``reserved_concurrency`` reserves that many concurrent workers for the
    migration and caps it there (0: none), so a run cannot take the account's
    whole Lambda concurrency; a plan on this stack runs at most that many at once.
    ``follow=True`` gives the stack a follower for ``ddbnb follow``: a Lambda on
    the same code with an event source mapping on the table's stream, created
    disabled (StreamRequiredError when the table has no stream, or a copy's
    stream lacks old images).
    A stack left in a state it cannot be updated from (ROLLBACK_COMPLETE after a
    first deploy failed, say) raises StackFailedError, or is deleted and created
    again with ``replace_failed=True``. ``stack_parameters`` passes the
    template's optional parameters (``SubnetIds``, ``SecurityGroupIds``,
    ``LogKmsKeyArn``, ``AccessLogBucketName``, ``LogRetentionDays``,
    ``ResultsRetentionDays``, ``QueueKmsKeyArn``, ``FollowerBatchSize``,
    ``FollowerMaxRetries``, ``FollowerParallelization``) as strings.
    """
    params.check_name("stack_name", stack_name)
    params.check_table_name("table_name", table_name)
    params.check_bool("progress", progress)
    params.check_bool("replace_failed", replace_failed)
    params.check_bool("follow", follow)
    if destination_table_name:
        params.check_table_name("destination_table_name", destination_table_name)
    params.check_int("lambda_memory_mb", lambda_memory_mb, 128, 10_240)
    params.check_int("lambda_timeout_s", lambda_timeout_s, 60, 900)
    params.check_int("reserved_concurrency", reserved_concurrency, 0, 10_000)
    stream_arn = _stream_to_follow(table_name, bool(destination_table_name), boto3_session) if follow else ""
    package = build_lambda_package(transform)
    check_package_imports(package, transform)  # a missing module fails here, with its name
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
        "ReservedConcurrency": str(reserved_concurrency),
        "SourceStreamArn": stream_arn,
        **(stack_parameters or {}),
    }
    status = _stack_status(cloudformation, stack_name)
    if status in UNRECOVERABLE:
        if not replace_failed:
            raise StackFailedError(stack_name, status)
        print(f"stack {stack_name} is {status}: deleting it to create it again (replace_failed=True)")
        _delete(cloudformation, stack_name, progress)
        status = None
    elif status and "IN_PROGRESS" in status:
        raise DeployError(stack_name, stack_name, status, "another operation is in progress; wait for it to end")
    exists = status is not None
    change_set = f"ddbnb-{int(time.time())}"
    cloudformation.create_change_set(
        StackName=stack_name,
        ChangeSetName=change_set,
        ChangeSetType="UPDATE" if exists else "CREATE",
        TemplateBody=_template_body(Path(template).read_text(), follows=bool(parameters["SourceStreamArn"])),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    if not _change_set_has_changes(cloudformation, stack_name, change_set):
        print(f"stack {stack_name}: no changes")
    else:
        before = _event_ids(cloudformation, stack_name) if exists else set()
        cloudformation.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
        if _wait(cloudformation, stack_name, progress, before) not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            raise _failure(cloudformation, stack_name)
    return {**stack_outputs(stack_name, boto3_session), "Transform": package.transform}


def _template_body(text: str, follows: bool) -> str:
    """The template as sent: without its follower blocks when the stack does not follow.

    Those resources carry ``Condition: Follows``, so AWS would skip them anyway;
    leaving them out also keeps moto's stack updates working, which render every
    changed resource, false condition or not.
    """
    if follows:
        return text
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker.startswith(FOLLOWER_BLOCK[0]) or marker.startswith(FOLLOWER_BLOCK[1]):
            inside = marker.startswith(FOLLOWER_BLOCK[0])
            continue
        if not inside:
            kept.append(line)
    return "".join(kept)


def _stream_to_follow(table_name: str, copy: bool, boto3_session: boto3.Session | None) -> str:
    """The ARN of the stream a follower of ``table_name`` reads; StreamRequiredError when it cannot."""
    facts = table_facts(client("dynamodb", boto3_session), table_name)
    problem = stream_problems(table_name, Stream(table_name, facts.stream_arn, facts.stream_view_type), copy)
    if problem:
        raise StreamRequiredError(table_name, *problem)
    return facts.stream_arn


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
    if _stack_exists(cloudformation, stack_name):
        _delete(cloudformation, stack_name, progress)


def _delete(cloudformation: Any, stack_name: str, progress: bool) -> None:
    before = _event_ids(cloudformation, stack_name)
    cloudformation.delete_stack(StackName=stack_name)
    if _wait(cloudformation, stack_name, progress, before) != "DELETE_COMPLETE":
        raise _failure(cloudformation, stack_name)
