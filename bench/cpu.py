"""CPU time of the bench's own processes, counted the same way in every case.

The local engine's workers are forks of a fork server, not children of the
process that runs: their CPU counts when the server reaps them, through the
server, which is a live child of that process.
"""

from __future__ import annotations

import resource

import psutil

#: In the command line of the process that forks the local engine's workers.
FORK_SERVER = "multiprocessing.forkserver"


def _reaped_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _live_cpu(process: psutil.Process) -> float:
    """A live process's CPU seconds with those of the children it reaped (0 once it is gone)."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:  # reaped since the listing: counted by its parent
        return 0.0
    return times.user + times.system + times.children_user + times.children_system


def process_tree_cpu() -> float:
    """CPU seconds of this process and every descendant, ended or alive."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    live = psutil.Process().children(recursive=True)
    return own.ru_utime + own.ru_stime + _reaped_children() + sum(_live_cpu(p) for p in live)


def workers_cpu() -> float:
    """CPU seconds of the local engine's worker processes, and of this process's ended children (spawned
    workers, where there is no fork server); not of servers this process runs."""
    servers = [p for p in psutil.Process().children() if FORK_SERVER in " ".join(_command(p))]
    return _reaped_children() + sum(_live_cpu(p) for s in servers for p in [s, *s.children(recursive=True)])


def _command(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
