"""What starts the live job (a run per newly closed bar or champion set, a fallback schedule), and alerts."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    schedule,
    sensor,
)

from emp_pipeline.broker.interface import BrokerKind
from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.live.broker import LiveBrokerResource
from emp_pipeline.defs.live.job import BAR_TAG, LIVE_OP_NAME, LIVE_RUN_TAG, bar_tag, live_execution_job
from emp_pipeline.defs.perception.assets import NEWEST_BAR_METADATA
from emp_pipeline.defs.storage import DataLakeResource
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.storage.datasets import MARKET_REGIMES
from emp_pipeline.storage.parquet_frames import through

REGIMES_KEY = AssetKey(MARKET_REGIMES.name)
CHAMPIONS_KEY = AssetKey("champion_strategies")
SENSOR_INTERVAL_S = 60
# Runs one evaluation requests at most: a sensor catching up on a long stretch of bars (a backfill, a
# sensor left off) queues them in bounded steps.
MAX_RUNS_PER_EVALUATION = 100


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


def newest_champions(instance: Any) -> int:
    """The storage id of the newest champion_strategies materialization (0 before any)."""
    records = instance.fetch_materializations(CHAMPIONS_KEY, limit=1).records
    return records[0].storage_id if records else 0


@dataclass(frozen=True)
class LiveCursor:
    """What the sensor has requested so far: the last bar it launched a run for, the newest-bar hint it
    last read the lake for (so an evaluation without news reads nothing), and the champion event."""

    bar: pd.Timestamp | None = None
    hint: str | None = None
    champions: int = 0

    def encode(self) -> str:
        bar = None if self.bar is None else self.bar.isoformat()
        return json.dumps({"bar": bar, "hint": self.hint, "champions": self.champions})

    @classmethod
    def decode(cls, text: str | None) -> "LiveCursor":
        """The stored cursor; one from before bar-by-bar runs (a run key) counts as none."""
        try:
            stored = json.loads(text) if text else None
        except json.JSONDecodeError:
            stored = None
        if not isinstance(stored, dict):
            return cls()
        bar = pd.Timestamp(stored["bar"]) if stored.get("bar") else None
        return cls(bar, stored.get("hint"), int(stored.get("champions", 0)))


def bar_run_key(timeframe: Timeframe, bar: pd.Timestamp, champions: int | None = None) -> str:
    """live-<timeframe>-<bar open time>: one run per bar; a new champion set on a bar already traded adds
    its event id, so the new set trades that bar once too."""
    key = f"live-{timeframe}-{bar:%Y-%m-%dT%H:%M}"
    return key if champions is None else f"{key}-c{champions}"


def bar_run_request(
    timeframe: Timeframe, bar: pd.Timestamp, replays_bars: bool, champions: int | None = None
) -> RunRequest:
    """The run for one bar. With the paper broker it decides on that bar (as_of_date), so runs queued
    behind each other trade each bar in turn; a venue broker trades now, on the newest bar it finds."""
    config = {"as_of_date": f"{bar:%Y-%m-%dT%H:%M:%S}"} if replays_bars else {}
    return RunRequest(
        run_key=bar_run_key(timeframe, bar, champions),
        run_config={"ops": {LIVE_OP_NAME: {"config": config}}} if config else {},
        tags={LIVE_RUN_TAG: "true", "emp/trigger": "sensor", BAR_TAG: bar_tag(bar, timeframe.is_intraday)},
    )


def live_run_requests(
    timeframe: Timeframe,
    cursor: LiveCursor,
    new_bars: Sequence[pd.Timestamp],
    champions: int,
    replays_bars: bool,
) -> tuple[list[RunRequest], LiveCursor]:
    """The runs for the bars stored since the cursor (oldest first, at most MAX_RUNS_PER_EVALUATION; the
    rest come at the next evaluation), and the cursor after them.

    ``new_bars`` are the stored bars after ``cursor.bar``. A sensor without a cursor starts at the newest
    bar (it does not trade history it never saw). A venue broker cannot trade a past bar's close, so only
    the newest bar gets a run there. A new champion set with no new bar trades the newest bar again.
    """
    bars = sorted(new_bars)
    if cursor.bar is None or not replays_bars:
        bars = bars[-1:]
    bars = bars[:MAX_RUNS_PER_EVALUATION]
    requests = [bar_run_request(timeframe, bar, replays_bars) for bar in bars]
    newest = bars[-1] if bars else cursor.bar
    if not requests and champions != cursor.champions and newest is not None:
        requests = [bar_run_request(timeframe, newest, replays_bars, champions)]
    return requests, replace(cursor, bar=newest, champions=champions)


def stored_bars_after(lake_dir: str, after: pd.Timestamp | None) -> list[pd.Timestamp]:
    """The bars the stored regimes hold after ``after`` (all of them without it), oldest first."""
    frame = MARKET_REGIMES.read(lake_dir, None if after is None else through(after))
    if frame.empty:
        return []
    return list(pd.DatetimeIndex(frame["date"].unique()).sort_values())


def build_live_execution_sensor(timeframe: Timeframe) -> SensorDefinition:
    """The live sensor of a universe traded on ``timeframe`` bars (see defs/live/job.py's docstring)."""

    @sensor(
        name="live_execution_sensor",
        job=live_execution_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"One live run per newly closed {timeframe} bar (run key = timeframe + bar time), and "
        "one more when the champion set changes.",
    )
    def live_execution_sensor(
        context: SensorEvaluationContext, lake: DataLakeResource, live_broker: LiveBrokerResource
    ) -> list[RunRequest] | SkipReason:
        hint = newest_regime_bar(context.instance)
        if hint is None:
            return SkipReason("market_regimes has never been materialized: nothing to trade on yet")
        cursor = LiveCursor.decode(context.cursor)
        champions = newest_champions(context.instance)
        if hint == cursor.hint and champions == cursor.champions:
            return SkipReason(f"no new {timeframe} bar or champion set since {cursor.bar}")
        new_bars = stored_bars_after(lake.base_dir, cursor.bar)
        replays_bars = live_broker.kind == BrokerKind.PAPER.value
        requests, after = live_run_requests(timeframe, cursor, new_bars, champions, replays_bars)
        # Bars left for the next evaluation keep the hint unsettled, so that evaluation reads the lake again.
        left = replays_bars and cursor.bar is not None and len(new_bars) > len(requests)
        context.update_cursor(replace(after, hint=None if left else hint).encode())
        if not requests:
            return SkipReason(f"market_regimes changed but holds no {timeframe} bar after {cursor.bar}")
        return requests

    return live_execution_sensor


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
