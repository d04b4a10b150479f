"""The public API: everything the notebooks and users call."""

from ddbnb.control.deploy import delete_stack, deploy_stack, stack_outputs
from ddbnb.dryrun import DryRun, dry_run
from ddbnb.emulation.demo import seed_demo_table
from ddbnb.emulation.servers import sandbox
from ddbnb.insight.charts import plot_durations, plot_throughput, plot_timeline
from ddbnb.insight.results import load_failures, load_results
from ddbnb.migrate import migrate, redrive, resume, retry_failed
from ddbnb.plan import Plan, plan_migration
from ddbnb.worker.segment import process_segment
from ddbnb.worker.tables import describe_table, list_tables

__all__ = [
    "DryRun",
    "Plan",
    "delete_stack",
    "deploy_stack",
    "describe_table",
    "dry_run",
    "list_tables",
    "load_failures",
    "load_results",
    "migrate",
    "plan_migration",
    "plot_durations",
    "plot_throughput",
    "plot_timeline",
    "process_segment",
    "redrive",
    "resume",
    "retry_failed",
    "sandbox",
    "seed_demo_table",
    "stack_outputs",
]
