"""The local instance's run launcher tells run monitoring whether the process executing a run is alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, job, op
from dagster._core.launcher import WorkerStatus

from emp_pipeline.instance.run_launcher import LocalProcessRunLauncher, RunWorker, worker_status

LAUNCHER = {"module": "emp_pipeline.instance.run_launcher", "class": "LocalProcessRunLauncher"}


@op
def noop() -> None:
    pass


@job
def tiny_job() -> None:
    noop()


@pytest.fixture
def instance(tmp_path) -> Iterator[DagsterInstance]:
    with DagsterInstance.local_temp(str(tmp_path), overrides={"run_launcher": LAUNCHER}) as local:
        yield local


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_process_that_started_the_run_is_running():
    status, message = worker_status(RunWorker(pid=os.getpid(), run_started_at=time.time()))
    assert status is WorkerStatus.RUNNING
    assert f"pid {os.getpid()}" in message


def test_a_process_that_is_gone_failed():
    process = _sleeper()
    process.kill()
    process.wait()
    status, message = worker_status(RunWorker(pid=process.pid, run_started_at=time.time()))
    assert status is WorkerStatus.FAILED
    assert f"(pid {process.pid}) is gone" in message


def test_a_killed_process_its_parent_has_not_reaped_yet_failed():
    process = _sleeper()
    try:
        os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.5)  # dead, but a zombie until waited for
        status, message = worker_status(RunWorker(pid=process.pid, run_started_at=time.time()))
        assert status is WorkerStatus.FAILED
        assert "zombie" in message
    finally:
        process.wait()


def test_a_pid_reused_by_a_process_started_after_the_run_failed():
    process = _sleeper()
    try:
        status, message = worker_status(RunWorker(pid=process.pid, run_started_at=time.time() - 60))
        assert status is WorkerStatus.FAILED
        assert "started after the run" in message
    finally:
        process.kill()
        process.wait()


def test_the_health_check_reads_the_pid_of_the_runs_start_event(instance):
    assert isinstance(instance.run_launcher, LocalProcessRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health
    result = tiny_job.execute_in_process(instance=instance)
    health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(result.run_id))
    assert health.status is WorkerStatus.RUNNING  # this test process executed it and is alive
    assert health.run_worker_id == str(os.getpid())


def test_a_run_executed_by_a_process_that_is_gone_is_failed(instance, tmp_path):
    script = (
        "import sys\n"
        "from dagster import DagsterInstance\n"
        "from emp_pipeline_tests.unit.test_local_run_launcher import LAUNCHER, tiny_job\n"
        "with DagsterInstance.local_temp(sys.argv[1], overrides={'run_launcher': LAUNCHER}) as instance:\n"
        "    print(tiny_job.execute_in_process(instance=instance).run_id)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    run = instance.get_run_by_id(finished.stdout.split()[-1])
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status is WorkerStatus.FAILED
    assert "is gone" in health.msg


def test_a_run_that_has_not_started_is_left_alone(instance):
    run = instance.create_run_for_job(tiny_job)
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status is WorkerStatus.RUNNING
    assert health.msg == "no RUN_START event with a pid yet"
