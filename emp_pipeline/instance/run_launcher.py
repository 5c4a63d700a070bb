"""The local instance's run launcher: Dagster's default launcher plus a worker health check.

Dagster's `DefaultRunLauncher` starts each run in a subprocess of the code server and cannot tell whether
that process is still alive, so the daemon's run monitoring skips started runs. The code server marks a run
failed when its own child dies, but only while the code server lives: when `make ui` is killed with SIGKILL,
the machine sleeps through a restart or the OOM killer takes the whole group, the run stays STARTED forever,
and with it the `emp/live-execution` slot of the queued run coordinator.

This launcher launches exactly as the default one and answers `check_run_worker_health` from the run's own
event log: the RUN_START event carries the pid of the process executing the run (the run worker, or the
`dagster job execute` / `emp demo` process for in-process runs). A pid that is gone, a zombie, or a process
that started after the run did (the pid was reused) means the worker is dead and the daemon marks the run
failed. The answer is only meaningful when the daemon runs on the machine that runs the runs, which is what
the local instance is; production uses the Docker run launcher, whose health check asks Docker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

# /proc/<pid>/stat's start time has clock-tick resolution and /proc/stat's boot time whole seconds.
START_TIME_TOLERANCE_S = 2.0
PROC = Path("/proc")


@dataclass(frozen=True)
class RunWorker:
    """The process that reported the run started, and when."""

    pid: int
    run_started_at: float


def run_worker(instance: DagsterInstance, run_id: str) -> RunWorker | None:
    """The pid and time of the run's RUN_START event; None before it exists or if it names no pid."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event else None
    return RunWorker(pid, entry.timestamp) if pid else None


def _process_start_epoch(pid: int) -> float | None:
    """When the process started (Linux /proc), or None where /proc cannot say."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        boot_line = next(
            line for line in (PROC / "stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    # Fields after the parenthesised command name (which may contain spaces): state is the first,
    # starttime the 20th.
    fields = stat.rsplit(")", 1)[1].split()
    return int(boot_line.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _is_zombie(pid: int) -> bool:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def worker_status(worker: RunWorker) -> tuple[WorkerStatus, str]:
    """RUNNING while the process that started the run exists; FAILED once it is gone or replaced."""
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return WorkerStatus.FAILED, f"the process executing the run (pid {worker.pid}) is gone"
    except PermissionError:
        pass  # it exists, under another user
    if _is_zombie(worker.pid):
        return WorkerStatus.FAILED, f"the process executing the run (pid {worker.pid}) exited (zombie)"
    started = _process_start_epoch(worker.pid)
    if started is not None and started > worker.run_started_at + START_TIME_TOLERANCE_S:
        return (
            WorkerStatus.FAILED,
            f"the process executing the run (pid {worker.pid}) is gone; that pid now belongs to a process "
            "started after the run",
        )
    return WorkerStatus.RUNNING, f"the process executing the run (pid {worker.pid}) is alive"


class LocalProcessRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers the daemon's run monitoring can check (same machine only)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = run_worker(self._instance, run.run_id)
        if worker is None:
            # Run monitoring fails every status but RUNNING and SUCCESS: a run we cannot see is left alone.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event with a pid yet")
        status, message = worker_status(worker)
        return CheckRunHealthResult(status, message, run_worker_id=str(worker.pid))
