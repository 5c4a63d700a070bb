"""The root dagster.yaml is the embedded local instance: every `dagster` command works in the repository
root with no environment variable, and a run whose process dies is marked failed by the daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.instance import InstanceRef

from emp_pipeline_tests.e2e.conftest import LOCAL_INSTANCE_FILE, REPO_ROOT, VENV_BIN, stop_process_group

pytestmark = pytest.mark.slow
T = TypeVar("T")

# What a fresh clone holds: the working tree without environments, caches and local state.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "venv", ".emp", ".tmp_dagster_home_*", "artifacts", "*.egg-info", "__pycache__",
    ".pytest_cache", ".ruff_cache", ".hypothesis", ".env",
)  # fmt: skip
EMPTY_ENVIRONMENT = {"PATH": f"{VENV_BIN}:/usr/bin:/bin"}
NO_INSTANCE_FILE_WARNING = "No dagster instance configuration file"

SLEEPING_JOB = """
import time

from dagster import job, op


@op
def sleep_until_killed() -> None:
    time.sleep(300)


@job
def sleeping_job() -> None:
    sleep_until_killed()
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    completed = subprocess.run(
        [str(VENV_BIN / command[0]), *command[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return output


def _local_instance(root: Path) -> DagsterInstance:
    """The instance the root dagster.yaml describes, as a command run in `root` sees it."""
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(root)))


def _wait_for(description: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {description}")


def test_dagster_commands_work_in_a_fresh_copy_of_the_root_with_an_empty_environment(tmp_path, monkeypatch):
    root = tmp_path / "clone"
    shutil.copytree(REPO_ROOT, root, ignore=NOT_IN_A_CLONE)

    validated = _run(["dagster", "definitions", "validate"], root, EMPTY_ENVIRONMENT)
    assert "Validation successful for code location emp_pipeline." in validated
    _run(["emp", "db", "upgrade"], root, EMPTY_ENVIRONMENT)
    executed = _run(
        ["dagster", "job", "execute", "-m", "emp_pipeline.definitions", "-j", "universe_job"],
        root,
        EMPTY_ENVIRONMENT,
    )
    for output in (validated, executed):
        for unwanted in (NO_INSTANCE_FILE_WARNING, "DAGSTER_PG", "BetaWarning", "PreviewWarning"):
            assert unwanted not in output, unwanted

    # The run went to the persistent SQLite instance under .emp, where `make ui` shows it.
    monkeypatch.chdir(root)
    with _local_instance(root) as instance:
        (run,) = instance.get_runs()
        assert (run.job_name, run.status) == ("universe_job", DagsterRunStatus.SUCCESS)
    assert (root / ".emp" / "dagster_home" / "history" / "runs.db").exists()
    assert not list(root.glob(".tmp_dagster_home_*"))  # the scratch directory went with the command


def test_a_run_whose_process_is_killed_is_marked_failed_by_the_daemon(tmp_path, monkeypatch):
    """`make ui` points DAGSTER_HOME at the root; a poll interval of 1 s keeps the test short."""
    root = tmp_path
    config = yaml.safe_load(LOCAL_INSTANCE_FILE.read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (root / "dagster.yaml").write_text(yaml.safe_dump(config))
    (root / "sleeping_job.py").write_text(SLEEPING_JOB)
    env = {**EMPTY_ENVIRONMENT, "DAGSTER_HOME": str(root)}
    monkeypatch.chdir(root)

    def start(command: list[str], log: str) -> subprocess.Popen:
        with (root / log).open("wb") as handle:
            return subprocess.Popen(
                [str(VENV_BIN / command[0]), *command[1:]],
                cwd=root,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    # Opening the instance first creates its SQLite storage: two processes creating it at once race.
    with _local_instance(root) as instance:
        daemon = start(["dagster-daemon", "run", "-f", "sleeping_job.py"], "daemon.log")
        runner = start(
            ["dagster", "job", "execute", "-f", "sleeping_job.py", "-j", "sleeping_job"], "run.log"
        )
        try:
            run = _wait_for("the run's step to start", lambda: _sleeping_run(instance), timeout_s=120)
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
            _wait_for(
                "the daemon to mark the run failed",
                lambda: instance.get_run_by_id(run.run_id).status is DagsterRunStatus.FAILURE,
                timeout_s=90,
            )
        finally:
            stop_process_group(daemon)
            if runner.poll() is None:
                stop_process_group(runner)
        (failure,) = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records
        message = failure.event_log_entry.dagster_event.message
        assert f"the process executing the run (pid {runner.pid}) is gone" in message


def _sleeping_run(instance: DagsterInstance) -> DagsterRun | None:
    """The one run, once it is STARTED and its op is executing."""
    runs = instance.get_runs()
    if not runs or runs[0].status is not DagsterRunStatus.STARTED:
        return None
    started = instance.get_records_for_run(runs[0].run_id, of_type=DagsterEventType.STEP_START)
    return runs[0] if started.records else None
