"""The public API: everything the notebooks and users call."""

from ddbnb.charts import plot_durations, plot_throughput, plot_timeline
from ddbnb.demo import seed_demo_table
from ddbnb.dryrun import DryRun, dry_run
from ddbnb.migrate import migrate
from ddbnb.plan import Plan, plan_migration
from ddbnb.results import load_failures, load_results
from ddbnb.segment import process_segment
from ddbnb.servers import sandbox
from ddbnb.tables import describe_table

__all__ = [
    "DryRun",
    "Plan",
    "describe_table",
    "dry_run",
    "load_failures",
    "load_results",
    "migrate",
    "plan_migration",
    "plot_durations",
    "plot_throughput",
    "plot_timeline",
    "process_segment",
    "sandbox",
    "seed_demo_table",
]
