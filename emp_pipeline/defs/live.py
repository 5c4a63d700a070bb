"""The live execution job, what triggers it, and what watches it. Thin: the tick itself is live.engine.

* `live_execution_job`: one op that runs `run_live_tick` against the broker resource.
* `live_execution_sensor`: fires on new `market_regimes` partitions or a new `champion_strategies`
  materialization; the run key is (latest regime bar, champion materialization), so each new bar (and each
  new champion set) launches one run, and a re-evaluation launches none.
* `live_execution_schedule`: a fallback after the close on weekdays, in case the sensor is off or a
  materialization was missed; a tick on a bar already traded changes nothing (client order ids).
* `live_execution_failure_sensor`: a failed live run raises an alert (log + optional webhook).
* One live run at a time: every run carries the tag `emp/live-execution` (the queued run coordinator's
  tag_concurrency_limits hold it to 1, see dagster.yaml), and the op runs in the `emp_live_execution`
  concurrency pool (limit 1 via `dagster instance concurrency set emp_live_execution 1`, or the instance's
  concurrency.pools settings). Neither makes orders exactly-once (client order ids do); they keep two runs
  from racing at all.
"""
# No `from __future__ import annotations` here: Dagster resolves the op's Config annotation at decoration.

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    Config,
    ConfigurableResource,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EnvVar,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    schedule,
    sensor,
)
from sqlalchemy import Engine

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.broker.interface import Broker
from emp_pipeline.broker.paper import BarFrameOpens, PaperBroker, PaperCosts
from emp_pipeline.defs.resources import CTraderTokenResource
from emp_pipeline.domain.bars import adjusted_ohlc
from emp_pipeline.domain.execution import Costs
from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.live.alerts import send_alert
from emp_pipeline.live.engine import (
    BARS_DATASET,
    LiveConfig,
    LiveExecutionError,
    LiveInputError,
    LiveTickReport,
    run_live_tick,
)
from emp_pipeline.registry import repository as registry
from emp_pipeline.registry.models import BrokerKind
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

LIVE_JOB_NAME = "live_execution_job"
LIVE_RUN_TAG = "emp/live-execution"
LIVE_POOL = "emp_live_execution"
REGIMES_KEY = AssetKey("market_regimes")
CHAMPIONS_KEY = AssetKey("champion_strategies")
SENSOR_INTERVAL_S = 60


# ------------------------------------------------------------------------------------------- broker resource


class LiveBrokerResource(ConfigurableResource):
    """Which broker the live job trades through: `paper` (default, fills at the next bar's open from the bar
    store) or `ctrader` (Open API; the OAuth token comes from the `ctrader_token` resource's Redis store)."""

    kind: str = "paper"
    account_name: str = "paper"
    currency: str = "USD"
    initial_cash: float = 100_000.0
    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    ctrader_url: str = "wss://demo.ctraderapi.com:5036"
    ctrader_account_id: int = 0
    ctrader_client_id: str = ""
    ctrader_client_secret: str = ""
    ctrader_symbol_map: dict[str, str] = {}  # our symbol -> the broker's name, where they differ
    ctrader_token: CTraderTokenResource | None = None

    @contextmanager
    def open(
        self, engine: Engine, data_dir: str, as_of: dt.datetime | None = None
    ) -> Iterator[tuple[Broker, int]]:
        """(broker, registry account id) for one run; the broker is closed afterwards.

        With ``as_of`` the paper exchange knows only the bars up to that day, so a replayed tick cannot fill
        or stop out on a later bar."""
        if self.kind == BrokerKind.PAPER.value:
            end = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1) if as_of else None
            bars = DatedFrameStore(data_dir, BARS_DATASET).read_window(end=end)
            if bars.empty or "open" not in bars.columns:
                raise LiveInputError(
                    f"no stored market_bars under {data_dir}: materialise market_bars, features and regimes "
                    "before the live job runs"
                )
            # Adjusted prices, as the backtest fills and checks stops (market_arrays uses the same scale).
            broker = PaperBroker(
                engine,
                BarFrameOpens(adjusted_ohlc(bars)),
                costs=PaperCosts(self.fee_bps, self.slippage_bps),
                account_name=self.account_name,
                currency=self.currency,
                initial_cash=self.initial_cash,
            )
            yield broker, broker.account_id
            return
        if as_of is not None:
            raise Failure(
                "as_of_date replays stored history and works with the paper broker only, not cTrader"
            )
        if self.kind != BrokerKind.CTRADER.value:
            raise Failure(f"live broker kind {self.kind!r} is neither paper nor ctrader: set EMP_BROKER")
        if self.ctrader_token is None:
            raise Failure(
                "the ctrader live broker needs the ctrader_token resource (CTRADER_CLIENT_ID/SECRET)"
            )
        config = CTraderConfig(
            url=self.ctrader_url,
            client_id=self.ctrader_client_id,
            client_secret=self.ctrader_client_secret,
            account_id=self.ctrader_account_id,
        )
        with registry.session_scope(engine) as session:
            account = registry.get_or_create_account(
                session,
                broker=BrokerKind.CTRADER.value,
                name=str(self.ctrader_account_id),
                currency=self.currency,
                initial_cash=self.initial_cash,
            )
        with CTraderBroker(
            config, self.ctrader_token.manager(), symbol_map=self.ctrader_symbol_map
        ) as broker:
            yield broker, account.id


def live_broker_resource(
    settings: Settings, ctrader_token: CTraderTokenResource | None = None
) -> LiveBrokerResource:
    """The broker resource the environment asks for (EMP_BROKER); cTrader secrets stay EnvVar references."""
    if settings.broker != BrokerKind.CTRADER.value:
        return LiveBrokerResource(kind=BrokerKind.PAPER.value)
    return LiveBrokerResource(
        kind=BrokerKind.CTRADER.value,
        account_name=str(settings.ctrader_account_id),
        ctrader_url=settings.ctrader_api_url,
        ctrader_account_id=settings.ctrader_account_id,
        ctrader_client_id=EnvVar("CTRADER_CLIENT_ID"),
        ctrader_client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        ctrader_token=ctrader_token,
    )


# ------------------------------------------------------------------------------------------- job


class LiveExecutionConfig(Config):
    """Per-run knobs; risk limits left unset come from the settings (EMP_MAX_POSITION_FRACTION, ...)."""

    start_date: str | None = None  # anchor of the strategies' track record; None = their activation time
    as_of_date: str | None = None  # decide on the newest stored bar at or before this day; None = newest
    capital_per_strategy: float | None = None
    stale_order_seconds: float = 120.0
    max_position_fraction: float | None = None
    max_gross_exposure: float | None = None
    daily_loss_limit: float | None = None


def live_config(
    config: LiveExecutionConfig, settings: Settings, fee_bps: float, slippage_bps: float
) -> LiveConfig:
    limits = RiskLimits(
        max_position_fraction=config.max_position_fraction or settings.max_position_fraction,
        max_gross_exposure=config.max_gross_exposure or settings.max_gross_exposure,
        daily_loss_limit=config.daily_loss_limit or settings.daily_loss_limit,
    )
    start = pd.Timestamp(config.start_date, tz="UTC").to_pydatetime() if config.start_date else None
    as_of = pd.Timestamp(config.as_of_date, tz="UTC").to_pydatetime() if config.as_of_date else None
    return LiveConfig(
        as_of=as_of,
        costs=Costs(fee_bps=fee_bps, slippage_bps=slippage_bps),
        limits=limits,
        start=start,
        capital_per_strategy=config.capital_per_strategy,
        stale_order_seconds=config.stale_order_seconds,
    )


def _report_metadata(report: LiveTickReport) -> dict[str, Any]:
    rows = "\n".join(
        f"| {d['strategy_id']} | {d['symbol']} | {d['decision']} | {d['current']:g} | {d['target']:g} | "
        f"{d['verdict']} | {d['reason']} |"
        for d in report.decisions
    )
    header = "| strategy | symbol | decision | current | target | verdict | reason |\n" + "|---" * 7 + "|\n"
    table = header + rows
    return {
        "bar_time": str(report.bar_time),
        "active_strategies": report.strategies,
        "orders_decided": len(report.decisions),
        "orders_sent_or_found": len(report.submitted),
        "orders_rejected_by_risk": len(report.rejected),
        "orders_left_to_other_run": len(report.left_to_other_run),
        "orders_reconciled": len(report.reconciled),
        "kill_switch": report.kill_switch,
        "equity": float(report.equity) if report.equity is not None else None,
        "day_start_equity": float(report.day_start_equity) if report.day_start_equity is not None else None,
        "decisions": MetadataValue.md(table if report.decisions else "no order needed at this bar"),
    }


@op(
    name="execute_live_tick",
    description="Champions' signals on the latest bar -> targets -> risk checks -> exactly-once orders.",
    required_resource_keys={"database", "lake", "live_broker"},
    pool=LIVE_POOL,
    tags={"kind": "broker"},
)
def execute_live_tick(context: OpExecutionContext, config: LiveExecutionConfig) -> Output[None]:
    settings = Settings.from_env()
    database = context.resources.database
    data_dir = context.resources.lake.base_dir
    engine = database.engine()
    live_broker = context.resources.live_broker
    tick_config = live_config(config, settings, live_broker.fee_bps, live_broker.slippage_bps)
    try:
        with live_broker.open(engine, data_dir, tick_config.as_of) as (broker, account_id):
            report = run_live_tick(
                engine=engine,
                data_dir=data_dir,
                broker=broker,
                account_id=account_id,
                now=dt.datetime.now(dt.UTC),
                config=tick_config,
            )
    except LiveExecutionError as exc:
        # Retrying the same inputs cannot help; the failure sensor alerts a person instead.
        raise Failure(description=str(exc), allow_retries=False) from exc
    for decision in report.rejected:
        context.log.warning(
            f"risk {decision['verdict']}: {decision['strategy_id']} {decision['symbol']} "
            f"{decision['requested_quantity']:g} ({decision['reason']})"
        )
    return Output(None, metadata=_report_metadata(report))


@job(
    name=LIVE_JOB_NAME,
    description="Trade the active champions on the latest bar (paper broker or cTrader), exactly once.",
    tags={LIVE_RUN_TAG: "true"},
)
def live_execution_job() -> None:
    execute_live_tick()


# ------------------------------------------------------------------------------------------- triggers


def live_run_key(instance: Any) -> str | None:
    """(latest regime bar, latest champion materialization) as a run key, or None before any regimes."""
    partitions = instance.get_materialized_partitions(REGIMES_KEY)
    if partitions:
        bar = max(partitions)
    else:
        records = instance.fetch_materializations(REGIMES_KEY, limit=1).records
        if not records:
            return None
        bar = f"m{records[0].storage_id}"  # an unpartitioned regimes asset: each materialization is news
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
def live_execution_failure_sensor(context: RunFailureSensorContext) -> None:
    settings = Settings.from_env()
    failure = context.failure_event.message or "run failed"
    send_alert(
        "emp live execution run failed",
        {"run_id": context.dagster_run.run_id, "job": context.dagster_run.job_name, "error": failure[:2000]},
        settings.alert_webhook_url,
    )
