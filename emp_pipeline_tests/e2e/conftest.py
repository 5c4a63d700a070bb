"""A production rehearsal: the Dagster services of docker-compose.yml, as local processes on PostgreSQL.

The code server, webserver and daemon are started with the commands written in docker-compose.yml (only
hosts, ports and file paths are swapped for local ones), against a fresh PostgreSQL database and
production's deploy/dagster.yaml. One deployment serves every e2e test that asks for it (session scope), and
every process is stopped by process group at the end, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import requests
import yaml

from emp_pipeline.defs.market_data.assets import HISTORY_CHECK
from emp_pipeline.domain.bar_quality import BAR_CHECKS

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Production's instance and workspace (the image copies them); the root ones are the local instance's.
PRODUCTION_INSTANCE_FILE = REPO_ROOT / "deploy" / "dagster.yaml"
PRODUCTION_WORKSPACE_FILE = REPO_ROOT / "deploy" / "workspace.yaml"
LOCAL_INSTANCE_FILE = REPO_ROOT / "dagster.yaml"
# The compose services the rehearsal runs as processes, in start order; the one-shot migration runs first.
REHEARSED_SERVICES = ("emp_user_code", "dagster_webserver", "dagster_daemon")
REHEARSED_ONE_SHOT = "emp_migrate"
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 150.0
PROBE_LOCATION = "rehearsal_probe"
LIVE_EXECUTION_TAG = "emp/live-execution"
# Month partitions of the bundled daily bars.
REHEARSAL_PARTITIONS = ("2008-08", "2008-09")
BACKFILL_RANGE = ("2008-10", "2008-11")
# The checks market_bars evaluates in its own step (the UI lists them under the asset's "Checks" tab).
BARS_CHECKS = (HISTORY_CHECK, *(check.name for check in BAR_CHECKS))

# The project has no schedule or sensor that fires within a test's minutes yet (its schedules run after the
# market close, its token sensor every 5 minutes), so the rehearsal adds this location next to the
# project's to watch the daemon's scheduler and sensor loops work on the production instance config.
PROBE_DEFINITIONS = """
from dagster import Definitions, RunRequest, ScheduleDefinition, SkipReason, job, op, sensor


@op
def probe_op() -> None:
    pass


@job
def probe_job() -> None:
    probe_op()


@sensor(job=probe_job, minimum_interval_seconds=5)
def rehearsal_sensor(context):
    return SkipReason("the rehearsal only watches the daemon tick")


defs = Definitions(
    jobs=[probe_job],
    schedules=[ScheduleDefinition(name="rehearsal_schedule", job=probe_job, cron_schedule="* * * * *")],
    sensors=[rehearsal_sensor],
)
"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status startTime endTime }
    ... on Error { message }
  }
}
"""
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

# The UI's "Launch backfill" for a selection of assets and partitions; docs/research.md shows it with curl.
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status runs { runId status } }
    ... on Error { message }
  }
}
"""
FINISHED_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

RUN_ERRORS = """
query Errors($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}
"""


class RehearsalError(RuntimeError):
    """A rehearsed service did not come up or answered with an error; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """The command with the value after `option` replaced (the option must be there: compose is the truth)."""
    if option not in command:
        raise RehearsalError(f"{command} has no {option} option to point at the rehearsal")
    position = command.index(option) + 1
    return [*command[:position], value, *command[position + 1 :]]


def compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: list(services[name]["command"]) for name in (REHEARSED_ONE_SHOT, *REHEARSED_SERVICES)}


def compose_health_check(service: str) -> list[str]:
    """The service's health-check command from docker-compose.yml, without the leading "CMD"."""
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["healthcheck"]["test"]
    if test[0] != "CMD":
        raise RehearsalError(f"{service}'s health check {test} is not an exec-form CMD the rehearsal can run")
    return list(test[1:])


def command_succeeds(command: list[str], env: dict[str, str]) -> bool:
    completed = subprocess.run(
        [str(VENV_BIN / command[0]), *command[1:]], env=env, capture_output=True, timeout=60, check=False
    )
    return completed.returncode == 0


def rehearsal_instance_config() -> dict[str, Any]:
    """Production's deploy/dagster.yaml with only the run launcher swapped: no Docker engine runs here, so
    runs are local processes, started by the local instance's launcher (whose workers run monitoring can
    check, as the Docker launcher's containers)."""
    config = yaml.safe_load(PRODUCTION_INSTANCE_FILE.read_text())
    config["run_launcher"] = yaml.safe_load(LOCAL_INSTANCE_FILE.read_text())["run_launcher"]
    return config


@dataclass
class Deployment:
    """The running rehearsal: where to reach it and what it runs on."""

    webserver_url: str
    location_name: str
    database: str
    registry_url: str
    dagster_home: Path
    data_dir: Path
    logs: dict[str, Path]
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.webserver_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RehearsalError(f"GraphQL errors: {json.dumps(body['errors'])[:2000]}")
        return body["data"]

    def launch_run(
        self,
        job_name: str,
        *,
        location: str | None = None,
        assets: tuple[str, ...] = (),
        checks: tuple[tuple[str, str], ...] = (),
        tags: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """`launchRun` through GraphQL, as the UI's Materialize button does; returns runId and status."""
        selector: dict[str, Any] = {
            "repositoryLocationName": location or self.location_name,
            "repositoryName": "__repository__",
            "jobName": job_name,
        }
        if assets:
            selector["assetSelection"] = [{"path": [name]} for name in assets]
        if checks:
            selector["assetCheckSelection"] = [{"assetKey": {"path": [a]}, "name": c} for a, c in checks]
        params = {
            "selector": selector,
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        result = self.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RehearsalError(f"launchRun answered {result['__typename']}: {json.dumps(result)[:3000]}")
        return result["run"]

    def launch_backfill(self, assets: tuple[str, ...], first: str, last: str, title: str) -> str:
        """Backfill the partitions first..last (inclusive) of each asset, as docs/research.md does."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": [name]}, "partitions": {"range": {"start": first, "end": last}}}
                for name in assets
            ],
            "title": title,
        }
        result = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RehearsalError(f"launchPartitionBackfill answered {json.dumps(result)[:3000]}")
        return result["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout_s: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            backfill = self.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
            return backfill if backfill.get("status") in FINISHED_BACKFILL_STATUSES else None

        return self.wait_for(f"backfill {backfill_id} to finish", finished, timeout_s, interval_s=2.0)

    def run_errors(self, run_id: str) -> list[str]:
        """The run's ERROR-level messages and error texts, to make a failed run's assertion say why."""
        events = self.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"].get("events", [])
        return [
            f"{event.get('message', '')} {(event.get('error') or {}).get('message', '')}".strip()
            for event in events
            if event.get("level") == "ERROR" or event.get("error")
        ]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]

    def wait_for_runs(self, run_ids: list[str], timeout_s: float = RUN_TIMEOUT_S) -> list[dict[str, Any]]:
        def finished() -> list[dict[str, Any]] | None:
            runs = [self.run(run_id) for run_id in run_ids]
            return runs if all(run["status"] in TERMINAL_RUN_STATUSES for run in runs) else None

        return self.wait_for(f"runs {run_ids} to finish", finished, timeout_s, interval_s=2.0)

    def log_tail(self, service: str, characters: int = 3000) -> str:
        return self.logs[service].read_text(errors="replace")[-characters:]

    def assert_running(self) -> None:
        for service, process in self.processes.items():
            if process.poll() is not None:
                raise RehearsalError(f"{service} exited with {process.returncode}:\n{self.log_tail(service)}")

    def wait_for(self, description: str, probe: Any, timeout_s: float, interval_s: float = 1.0) -> Any:
        """Poll `probe()` until it returns something truthy; fail with the services' logs on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_running()
            result = probe()
            if result:
                return result
            time.sleep(interval_s)
        logs = "\n".join(f"--- {name} ---\n{self.log_tail(name, 1500)}" for name in self.processes)
        raise RehearsalError(f"timed out after {timeout_s:.0f} s waiting for {description}\n{logs}")


def _start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    executable = VENV_BIN / command[0]
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            [str(executable), *command[1:]],
            env=env,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it stops the run workers it spawned
        )
    finally:
        handle.close()


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process's group, SIGKILL it if it lingers, and sweep what is left of the group."""
    if process.poll() is not None:
        return
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # a run worker that outlived its parent is in the group
        os.killpg(group, signal.SIGKILL)


def _admin(statement: str) -> None:
    connection = psycopg2.connect(PG_ADMIN_DSN)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _location_loaded(deployment: Deployment) -> bool:
    data = deployment.graphql(
        """{ workspaceOrError { __typename ... on Workspace { locationEntries {
              name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    )
    for entry in data["workspaceOrError"].get("locationEntries", []):
        if entry["name"] != deployment.location_name or entry["loadStatus"] != "LOADED":
            continue
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise RehearsalError(f"the code location failed to load: {loaded['message'][:3000]}")
        return loaded is not None and loaded["__typename"] == "RepositoryLocation"
    return False


def _webserver_answers(deployment: Deployment) -> bool:
    try:
        return bool(deployment.graphql("{ version }")["version"])
    except (requests.ConnectionError, requests.Timeout):
        return False


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("rehearsal")
    database = f"emp_rehearsal_{uuid.uuid4().hex[:12]}"
    registry_database = f"{database}_registry"
    registry_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{registry_database}"
    key_prefix = f"emp-rehearsal:{uuid.uuid4().hex[:8]}:"
    dagster_home, emp_home, logs_dir = root / "dagster_home", root / "emp_home", root / "logs"
    for directory in (dagster_home, emp_home, logs_dir):
        directory.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(rehearsal_instance_config()))

    commands = compose_commands()
    user_code = commands["emp_user_code"]
    location_name = user_code[user_code.index("--location-name") + 1]
    grpc_port, webserver_port = free_port(), free_port()
    workspace = yaml.safe_load(PRODUCTION_WORKSPACE_FILE.read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    (root / "rehearsal_probe.py").write_text(PROBE_DEFINITIONS)
    workspace["load_from"].append(
        {
            "python_file": {
                "relative_path": "rehearsal_probe.py",
                "location_name": PROBE_LOCATION,
                "working_directory": str(root),
            }
        }
    )
    workspace_file = root / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))

    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CTRADER_", "EMP_", "DAGSTER_")) and key not in ("DATABASE_URL", "REDIS_URL")
    }
    env = {
        **inherited,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
        "DAGSTER_COMPUTE_LOG_DIR": str(root / "compute_logs"),
        "EMP_HOME": str(emp_home),
        "EMP_DATA_DIR": str(emp_home / "data"),
        "EMP_DATA_SOURCE": "sample",
        "EMP_DATABASE_URL": registry_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "EMP_TOKEN_KEY_PREFIX": key_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    service_commands = {
        "emp_user_code": with_option(with_option(user_code, "-h", "127.0.0.1"), "-p", str(grpc_port)),
        "dagster_webserver": with_option(
            with_option(
                with_option(commands["dagster_webserver"], "-h", "127.0.0.1"), "-p", str(webserver_port)
            ),
            "-w",
            str(workspace_file),
        ),
        "dagster_daemon": with_option(commands["dagster_daemon"], "-w", str(workspace_file)),
    }
    deployment = Deployment(
        webserver_url=f"http://127.0.0.1:{webserver_port}",
        location_name=location_name,
        database=database,
        registry_url=registry_url,
        dagster_home=dagster_home,
        data_dir=emp_home / "data",
        logs={service: logs_dir / f"{service}.log" for service in REHEARSED_SERVICES},
        env=env,
    )
    _admin(f'CREATE DATABASE "{database}"')
    _admin(f'CREATE DATABASE "{registry_database}"')
    try:
        migrate = commands[REHEARSED_ONE_SHOT]
        migrated = subprocess.run(
            [str(VENV_BIN / migrate[0]), *migrate[1:]],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrated.returncode != 0:
            raise RehearsalError(f"{' '.join(migrate)} failed:\n{migrated.stdout}\n{migrated.stderr}")
        # As docker-compose orders them: the webserver and daemon start once the code server is healthy.
        deployment.processes["emp_user_code"] = _start(
            service_commands["emp_user_code"], env, deployment.logs["emp_user_code"], cwd=root
        )
        health_check = with_option(compose_health_check("emp_user_code"), "-p", str(grpc_port))
        deployment.wait_for(
            "the code server's health check", lambda: command_succeeds(health_check, env), STARTUP_TIMEOUT_S
        )
        for service in REHEARSED_SERVICES[1:]:
            deployment.processes[service] = _start(
                service_commands[service], env, deployment.logs[service], cwd=root
            )
        deployment.wait_for(
            "the webserver to answer { version }", lambda: _webserver_answers(deployment), STARTUP_TIMEOUT_S
        )
        deployment.wait_for(
            "the code location to load", lambda: _location_loaded(deployment), STARTUP_TIMEOUT_S
        )
        yield deployment
    finally:
        for service in reversed(REHEARSED_SERVICES):
            if service in deployment.processes:
                stop_process_group(deployment.processes[service])
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _admin(f'DROP DATABASE IF EXISTS "{registry_database}" WITH (FORCE)')
        client = redis.Redis(host="127.0.0.1", port=6379)
        stale = list(client.scan_iter(f"{key_prefix}*"))
        if stale:
            client.delete(*stale)
        client.close()


@dataclass(frozen=True)
class Materialization:
    launched: list[dict[str, str]]  # runId and the status launchRun answered (QUEUED: the coordinator's)
    runs: list[dict[str, Any]]  # the same runs once finished
    universe_run: dict[str, Any]  # universe_job, writing the PostgreSQL registry the migration created
    backfill: dict[str, Any]  # a partition-range backfill of market_bars (BACKFILL_RANGE), once finished


@pytest.fixture(scope="session")
def materialized_bars(deployment: Deployment) -> Materialization:
    """Two `market_bars` partitions with their in-step checks, launched through GraphQL, both tagged as
    live execution so the coordinator's one-at-a-time limit applies; `universe_job` and a backfill next to
    them (all at once: the rehearsal's minutes are mostly runs waiting for CPU)."""
    launched = [
        deployment.launch_run(
            "__ASSET_JOB",
            assets=("market_bars",),
            checks=tuple(("market_bars", name) for name in BARS_CHECKS),
            tags={"dagster/partition": partition, LIVE_EXECUTION_TAG: "rehearsal"},
        )
        for partition in REHEARSAL_PARTITIONS
    ]
    universe = deployment.launch_run("universe_job")
    backfill_id = deployment.launch_backfill(("market_bars",), *BACKFILL_RANGE, title="rehearsal backfill")
    *runs, universe_run = deployment.wait_for_runs([run["runId"] for run in launched] + [universe["runId"]])
    backfill = deployment.wait_for_backfill(backfill_id)
    return Materialization(launched=launched, runs=runs, universe_run=universe_run, backfill=backfill)
