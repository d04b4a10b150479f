"""The gate before the first write: a dry run of the same code in the run folder, and the pre-flight check.

A migration and a retry of its failed items both pass it: neither writes code
nobody previewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from ddbnb.exceptions import DryRunRequiredError, TransformRejectedError
from ddbnb.insight.sample import sample_items
from ddbnb.plan import Plan
from ddbnb.runfolder import DRY_RUN, RunFolder
from ddbnb.worker.clients import client
from ddbnb.worker.evaluate import FAILED, evaluate
from ddbnb.worker.items import format_key
from ddbnb.worker.transforms import load_transform, transform_digest

#: Items the pre-flight check runs the transform on before anything is written.
PREFLIGHT_ITEMS = 25


@dataclass
class Preflight:
    """What the pre-flight check saw: items checked, failed, and the first failure."""

    checked: int
    failed: int
    first_key: Any = None
    first_reason: str = ""

    def __str__(self) -> str:
        if not self.failed:
            return f"pre-flight: the transform ran cleanly on {self.checked} sampled item(s)"
        return (
            f"pre-flight: {self.failed} of {self.checked} sampled item(s) failed; first, item "
            f"{self.first_key}: {self.first_reason}"
        )

    def to_dict(self) -> dict[str, int]:
        """What summary.json records of it."""
        return {"checked": self.checked, "failed": self.failed}


def preflight(plan: Plan, max_failed_share: float = 0.0, boto3_session: boto3.Session | None = None) -> Preflight:
    """Run the transform on a few sampled items; raise when too many of them fail.

    A transform that fails (raises, changes the key in place, returns a type
    DynamoDB rejects) on more than ``max_failed_share`` of the sampled items
    stops the run before the first write with TransformRejectedError.
    """
    dynamodb = client("dynamodb", boto3_session)
    items = sample_items(
        dynamodb, plan.table.name, PREFLIGHT_ITEMS, item_count=plan.table.item_count, key_names=plan.table.key_names
    )
    transform = load_transform(plan.transform)
    verdicts = [
        evaluate(transform, raw, plan.table.key_names, in_place=not plan.destination, target_keys=plan.target_keys)
        for raw in items
    ]
    failed = [v for v in verdicts if v.action == FAILED]
    result = Preflight(len(verdicts), len(failed))
    if failed:
        first = failed[0]
        result.first_key = format_key({name: first.before[name] for name in plan.table.key_names})
        result.first_reason = first.message
    if result.failed > max_failed_share * result.checked:
        raise TransformRejectedError(
            plan.transform, result.failed, result.checked, max_failed_share, result.first_key, result.first_reason
        )
    return result


def _target(table: Any, destination: Any) -> str:
    return f"table {table!r} " + (f"into {destination!r}" if destination else "in place")


def check_dry_run(plan: Plan, run_dir: str) -> dict[str, Any]:
    """Return the dry run in ``run_dir`` when it previewed this plan's code on its tables; else raise.

    The code is compared by content hash, so an edit after the dry run is caught.
    """
    if not run_dir:
        raise DryRunRequiredError(
            "run_dir=''", "an empty run_dir makes a new run folder, which holds no dry run (set run_dir)"
        )
    report = RunFolder(run_dir).dry_run()
    if not report:
        raise DryRunRequiredError(run_dir, f"{DRY_RUN} is missing")
    if report.get("table") != plan.table.name or (report.get("destination") or None) != plan.destination:
        raise DryRunRequiredError(
            run_dir,
            f"it previewed {_target(report.get('table'), report.get('destination'))}, "
            f"not {_target(plan.table.name, plan.destination)}",
        )
    if report.get("transform") not in (None, plan.transform) and report.get("transform_sha256") != transform_digest(
        plan.transform
    ):
        raise DryRunRequiredError(run_dir, f"it previewed {report.get('transform')}, not {plan.transform}")
    if report.get("transform_sha256") != transform_digest(plan.transform):
        raise DryRunRequiredError(run_dir, f"the code of {plan.transform} changed since the dry run")
    return report
