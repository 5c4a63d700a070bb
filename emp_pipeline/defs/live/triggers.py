"""What starts the live job (a sensor per new bar or champion set, a fallback schedule) and watches it."""

from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    schedule,
    sensor,
)

from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.live.job import LIVE_RUN_TAG, live_execution_job
from emp_pipeline.defs.perception.assets import NEWEST_BAR_METADATA
from emp_pipeline.storage.datasets import MARKET_REGIMES

REGIMES_KEY = AssetKey(MARKET_REGIMES.name)
CHAMPIONS_KEY = AssetKey("champion_strategies")
SENSOR_INTERVAL_S = 60


def newest_regime_bar(instance: Any) -> str | None:
    """The newest bar the materialized regimes hold, or None before any regimes.

    Partitions are chunks (a month of daily bars, a day of intraday bars) that gain bars while their key
    stays the same, so the bar comes from the newest chunk's latest materialization, which carries it as
    metadata; a chunk materialized without bars falls back to its key. An unpartitioned regimes asset
    gives its latest materialization's id: each is news.
    """
    partitions = instance.get_materialized_partitions(REGIMES_KEY)
    if not partitions:
        records = instance.fetch_materializations(REGIMES_KEY, limit=1).records
        return f"m{records[0].storage_id}" if records else None
    # Chunk keys (YYYY-MM, YYYY-MM-DD[-HH:MM]) sort in time order as text.
    newest = max(partitions)
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=REGIMES_KEY, asset_partitions=[newest]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    bar = materialization.metadata.get(NEWEST_BAR_METADATA) if materialization else None
    return str(bar.value) if bar is not None else newest


def live_run_key(instance: Any) -> str | None:
    """(newest regime bar, latest champion materialization) as a run key, or None before any regimes."""
    bar = newest_regime_bar(instance)
    if bar is None:
        return None
    champions = instance.fetch_materializations(CHAMPIONS_KEY, limit=1).records
    champion_part = f"c{champions[0].storage_id}" if champions else "c0"
    return f"live-{bar}-{champion_part}"


@sensor(
    name="live_execution_sensor",
    job=live_execution_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.STOPPED,
    description="One live run per new regime bar or new champion set (run key = bar + champion event).",
)
def live_execution_sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    run_key = live_run_key(context.instance)
    if run_key is None:
        return SkipReason("market_regimes has never been materialized: nothing to trade on yet")
    if run_key == context.cursor:
        return SkipReason(f"no new regime bar or champion set since {run_key}")
    context.update_cursor(run_key)
    return RunRequest(run_key=run_key, tags={LIVE_RUN_TAG: "true", "emp/trigger": "sensor"})


@schedule(
    name="live_execution_schedule",
    job=live_execution_job,
    cron_schedule="45 22 * * 1-5",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Fallback tick after the US close: harmless if the sensor already traded the bar.",
)
def live_execution_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(tags={LIVE_RUN_TAG: "true", "emp/trigger": "schedule"})


@run_failure_sensor(
    name="live_execution_failure_sensor",
    monitored_jobs=[live_execution_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Alert (log + EMP_ALERT_WEBHOOK_URL) when a live run fails: orders may need a look.",
)
def live_execution_failure_sensor(context: RunFailureSensorContext, alerts: AlertWebhookResource) -> None:
    failure = context.failure_event.message or "run failed"
    alerts.send(
        "emp live execution run failed",
        {"run_id": context.dagster_run.run_id, "job": context.dagster_run.job_name, "error": failure[:2000]},
    )
