"""The public API: everything the notebooks and users call."""

from ddbnb.awsrun import redrive
from ddbnb.control.deploy import delete_stack, deploy_stack, stack_outputs
from ddbnb.dryrun import DryRun, dry_run
from ddbnb.emulation.demo import seed_demo_table
from ddbnb.emulation.servers import sandbox
from ddbnb.follow import follow, stop_following
from ddbnb.insight.charts import (
    plot_durations,
    plot_follow_lag,
    plot_run_throughput,
    plot_segment_sizes,
    plot_throughput,
    plot_timeline,
    slowest_segments,
)
from ddbnb.insight.results import load_conflicts, load_failures, load_results, results_table
from ddbnb.migrate import migrate, resume
from ddbnb.plan import Plan, plan_migration
from ddbnb.retry import retry_failed
from ddbnb.rollback import rollback
from ddbnb.verify import verify
from ddbnb.worker.segment import process_segment
from ddbnb.worker.tables import describe_table, list_tables

__all__ = [
    "DryRun",
    "Plan",
    "delete_stack",
    "deploy_stack",
    "describe_table",
    "dry_run",
    "follow",
    "list_tables",
    "load_conflicts",
    "load_failures",
    "load_results",
    "migrate",
    "plan_migration",
    "plot_durations",
    "plot_follow_lag",
    "plot_run_throughput",
    "plot_segment_sizes",
    "plot_throughput",
    "plot_timeline",
    "process_segment",
    "redrive",
    "results_table",
    "resume",
    "retry_failed",
    "rollback",
    "sandbox",
    "seed_demo_table",
    "slowest_segments",
    "stack_outputs",
    "stop_following",
    "verify",
]
