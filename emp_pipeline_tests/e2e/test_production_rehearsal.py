"""The production rehearsal: docker-compose's Dagster services as processes, driven through GraphQL.

What runs (see conftest.py): the registry migration (`emp db upgrade`), then `dagster code-server start`,
`dagster-webserver` and `dagster-daemon run`, all with the commands of docker-compose.yml, on fresh PostgreSQL
databases (Dagster's and the registry's), with production's deploy/dagster.yaml
(PostgreSQL storage, queued run coordinator with its `emp/live-execution` limit, compute logs, run
monitoring). The one change: the rehearsal's instance yaml swaps the Docker run launcher for the local
instance's launcher (Dagster's default one plus a worker health check), because no Docker engine runs here;
runs are started by the code server as local processes instead of containers.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from sqlalchemy import create_engine, select

from emp_pipeline.registry.models import Instrument
from emp_pipeline.storage.parquet_frames import DatedFrameStore
from emp_pipeline_tests.e2e.conftest import (
    BACKFILL_RANGE,
    BARS_CHECKS,
    PROBE_LOCATION,
    REHEARSAL_PARTITIONS,
    Deployment,
    Materialization,
    command_succeeds,
    compose_health_check,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

ASSET_CHECKS = """
{
  assetNodes(assetKeys: [{path: ["market_bars"]}]) {
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
  }
}
"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on Error { message }
  }
}
"""

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}
"""

TICKS = """
query Ticks($schedule: ScheduleSelector!, $sensor: SensorSelector!) {
  scheduleOrError(scheduleSelector: $schedule) {
    ... on Schedule { scheduleState { ticks(limit: 5) { status timestamp runIds } } }
  }
  sensorOrError(sensorSelector: $sensor) {
    ... on Sensor { sensorState { ticks(limit: 5) { status timestamp skipReason } } }
  }
}
"""


@pytest.fixture(scope="module")
def started_instigators(deployment: Deployment) -> float:
    """Start the probe schedule and sensor through GraphQL before anything else, so their first ticks
    come while the runs are executing; returns when they were started."""
    repository = {"repositoryLocationName": PROBE_LOCATION, "repositoryName": "__repository__"}
    started_at = time.time()
    schedule = deployment.graphql(
        START_SCHEDULE, {"selector": {**repository, "scheduleName": "rehearsal_schedule"}}
    )
    assert schedule["startSchedule"]["scheduleState"]["status"] == "RUNNING", schedule
    sensor = deployment.graphql(START_SENSOR, {"selector": {**repository, "sensorName": "rehearsal_sensor"}})
    assert sensor["startSensor"]["sensorState"]["status"] == "RUNNING", sensor
    return started_at


def test_runs_launched_through_graphql_queue_and_succeed_one_live_execution_at_a_time(
    deployment: Deployment, started_instigators: float, materialized_bars: Materialization
):
    # launchRun answers QUEUED: deploy/dagster.yaml's queued run coordinator decides, the daemon dequeues.
    assert [run["status"] for run in materialized_bars.launched] == ["QUEUED", "QUEUED"]
    for run in materialized_bars.runs:
        assert run["status"] == "SUCCESS", deployment.run_errors(run["runId"])
    # Both carry emp/live-execution, limited to one at a time: their executions never overlap.
    earlier, later = sorted(materialized_bars.runs, key=lambda run: run["startTime"])
    assert later["startTime"] >= earlier["endTime"], materialized_bars.runs

    bars = DatedFrameStore(deployment.data_dir, "market_bars").read_window(end="2008-10-01")
    months = set(bars["date"].dt.strftime("%Y-%m"))
    assert months == set(REHEARSAL_PARTITIONS)
    spx = bars.loc[bars["symbol"] == "^GSPC"].set_index("date")["close"]
    assert 1150 < spx[pd.Timestamp("2008-09-15", tz="UTC")] < 1200  # the real Lehman Monday close

    # universe_job ran beside them (no live-execution tag) and wrote the migrated PostgreSQL registry.
    universe = materialized_bars.universe_run
    assert universe["status"] == "SUCCESS", deployment.run_errors(universe["runId"])
    engine = create_engine(deployment.registry_url)
    try:
        with engine.connect() as connection:
            symbols = set(connection.execute(select(Instrument.symbol)).scalars())
    finally:
        engine.dispose()
    assert symbols == {"^GSPC", "^IXIC", "GOOG"}

    (node,) = deployment.graphql(ASSET_CHECKS)["assetNodes"]
    checks = {
        check["name"]: (check["executionForLatestMaterialization"] or {}).get("status")
        for check in node["assetChecksOrError"]["checks"]
    }
    for name in BARS_CHECKS:
        assert checks[name] == "SUCCEEDED", checks


def test_a_partition_backfill_through_graphql_loads_its_range_in_one_run(
    deployment: Deployment, materialized_bars: Materialization
):
    """The research workflow (docs/research.md): the daemon turns a backfill request into runs; market_bars
    has a single-run backfill policy, so a two-month range is one run."""
    backfill = materialized_bars.backfill
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
    (run,) = backfill["runs"]
    assert run["status"] == "SUCCESS", deployment.run_errors(run["runId"])
    first, last = BACKFILL_RANGE
    bars = DatedFrameStore(deployment.data_dir, "market_bars").read_window(
        f"{first}-01", pd.Timestamp(f"{last}-01") + pd.DateOffset(months=1)
    )
    assert set(bars["date"].dt.strftime("%Y-%m")) == {first, last}
    assert len(bars) == 3 * 42  # 42 sessions in October and November 2008, each symbol
    assert set(bars["symbol"]) == {"^GSPC", "^IXIC", "GOOG"}


def test_the_daemon_ticks_a_sensor_and_runs_a_schedule(deployment: Deployment, started_instigators: float):
    repository = {"repositoryLocationName": PROBE_LOCATION, "repositoryName": "__repository__"}
    variables = {
        "schedule": {**repository, "scheduleName": "rehearsal_schedule"},
        "sensor": {**repository, "sensorName": "rehearsal_sensor"},
    }

    def ticked() -> dict | None:
        data = deployment.graphql(TICKS, variables)
        schedule_ticks = data["scheduleOrError"]["scheduleState"]["ticks"]
        sensor_ticks = data["sensorOrError"]["sensorState"]["ticks"]
        launched = [tick for tick in schedule_ticks if tick["status"] == "SUCCESS" and tick["runIds"]]
        return {"schedule": launched, "sensor": sensor_ticks} if launched and sensor_ticks else None

    # An every-minute schedule ticks at the next minute boundary after it was started.
    ticks = deployment.wait_for("a schedule tick and a sensor tick", ticked, timeout_s=100, interval_s=2)
    assert ticks["sensor"][0]["status"] == "SKIPPED"
    assert ticks["sensor"][0]["skipReason"] == "the rehearsal only watches the daemon tick"
    assert ticks["sensor"][0]["timestamp"] >= started_instigators
    (run,) = deployment.wait_for_runs(ticks["schedule"][0]["runIds"][:1])
    assert run["status"] == "SUCCESS", deployment.run_errors(run["runId"])
    # docker-compose's health check of the daemon: every daemon heartbeat recent in the instance's database.
    assert command_succeeds(compose_health_check("dagster_daemon"), deployment.env)
