"""The live execution job: one op around `run_live_tick`. Thin: the tick itself is live.engine.

* `live_execution_job`: one op that runs `run_live_tick` against the broker resource.
* `live_execution_sensor` (triggers.py, like the two below): one run per newly closed bar of the universe's
  timeframe, run key `live-<timeframe>-<bar open time>` (`live-H1-2017-03-14T13:00`), so two H1 bars stored by
  one update launch two runs and a re-evaluation launches none. It looks at the lake only when the newest
  regimes partition's metadata names a new bar (a chunk gains bars under the same key). With the paper
  broker each run decides on its own bar (`as_of_date`) and the paper exchange fills it at the next bar's
  open; with cTrader (a venue that trades now) only the newest bar gets a run, and the bars are the venue's
  when EMP_DATA_SOURCE=ctrader feeds `market_bars`. A new champion set with no new bar trades the newest
  bar once more (its key adds the champion event).
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
from dataclasses import asdict
from typing import Any

import pandas as pd
from dagster import Config, Failure, MetadataValue, OpExecutionContext, Output, job, op

from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.domain.risk import RiskConfigError, tightened_limits
from emp_pipeline.live.engine import LiveConfig, LiveExecutionError, LiveTickReport, run_live_tick
from emp_pipeline.reporting.formatting import MONEY_DECIMALS, rounded, short_id

LIVE_JOB_NAME = "live_execution_job"
LIVE_OP_NAME = "execute_live_tick"
LIVE_RUN_TAG = "emp/live-execution"
LIVE_POOL = "emp_live_execution"
# What a live run traded, as run tags the runs table shows: the bar decided on and the active strategies.
BAR_TAG = "emp/bar"
STRATEGIES_TAG = "emp/strategies"
TAGGED_STRATEGIES = 4  # more would not fit a tag chip; the count says how many there were


# The environment's risk limits are ceilings: a run's config may only tighten them (see tightened_limits).
RISK_TAG_PREFIX = "emp/risk/"
CEILING_VARIABLES = {
    "max_position_fraction": "EMP_MAX_POSITION_FRACTION",
    "max_gross_exposure": "EMP_MAX_GROSS_EXPOSURE",
    "daily_loss_limit": "EMP_DAILY_LOSS_LIMIT",
}


class LiveExecutionConfig(Config):
    """Per-run knobs. Risk limits left unset are the environment's (EMP_MAX_POSITION_FRACTION, ...); a set one
    may only be tighter: anyone who reaches the UI can type run config, so it cannot raise a hard limit."""

    start_date: str | None = None  # anchor of the strategies' track record; None = their activation time
    as_of_date: str | None = None  # decide on the newest stored bar at or before this day; None = newest
    capital_per_strategy: float | None = None
    stale_order_seconds: float = 120.0
    max_position_fraction: float | None = None
    max_gross_exposure: float | None = None
    daily_loss_limit: float | None = None


def live_config(config: LiveExecutionConfig, risk_limits: RiskLimitsResource) -> LiveConfig:
    """The tick's configuration; a risk limit above its ceiling is refused (RiskCeilingError) by name.

    Each strategy's costs are not in it: the tick reads them from the registry with the strategy."""
    requested = {name: getattr(config, name) for name in CEILING_VARIABLES}
    limits = tightened_limits(risk_limits.ceilings(), requested, CEILING_VARIABLES)
    start = pd.Timestamp(config.start_date, tz="UTC").to_pydatetime() if config.start_date else None
    as_of = pd.Timestamp(config.as_of_date, tz="UTC").to_pydatetime() if config.as_of_date else None
    return LiveConfig(
        as_of=as_of,
        limits=limits,
        start=start,
        capital_per_strategy=config.capital_per_strategy,
        stale_order_seconds=config.stale_order_seconds,
    )


def bar_tag(bar: pd.Timestamp, intraday: bool) -> str:
    """The emp/bar tag: the day of a daily bar, day and time of an intraday one (the 00:00 hour too)."""
    return f"{bar:%Y-%m-%d %H:%M}" if intraday else f"{bar:%Y-%m-%d}"


def tick_tags(report: LiveTickReport) -> dict[str, str]:
    """emp/bar (the day, or day and time for an intraday bar) and emp/strategies ("3: a1b2c3d4,...")."""
    tags = {STRATEGIES_TAG: str(len(report.strategy_ids))}
    if report.strategy_ids:
        shown = ",".join(short_id(strategy_id) for strategy_id in report.strategy_ids[:TAGGED_STRATEGIES])
        more = ",..." if len(report.strategy_ids) > TAGGED_STRATEGIES else ""
        tags[STRATEGIES_TAG] = f"{len(report.strategy_ids)}: {shown}{more}"
    if report.bar_time is not None:
        tags[BAR_TAG] = bar_tag(pd.Timestamp(report.bar_time), report.intraday)
    return tags


def _report_metadata(report: LiveTickReport) -> dict[str, Any]:
    rows = "\n".join(
        f"| {short_id(str(d['strategy_id']))} | {d['symbol']} | {d['decision']} | {d['current']:g} | "
        f"{d['target']:g} | {d['verdict']} | {d['reason']} |"
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
        "equity": rounded(report.equity, MONEY_DECIMALS),
        "day_start_equity": rounded(report.day_start_equity, MONEY_DECIMALS),
        "decisions": MetadataValue.md(table if report.decisions else "no order needed at this bar"),
    }


@op(
    name=LIVE_OP_NAME,
    description="Champions' signals on the latest bar -> targets -> risk checks -> exactly-once orders.",
    required_resource_keys={"database", "lake", "live_broker", "risk_limits"},
    pool=LIVE_POOL,
    tags={"kind": "broker"},
)
def execute_live_tick(context: OpExecutionContext, config: LiveExecutionConfig) -> Output[None]:
    database = context.resources.database
    data_dir = context.resources.lake.base_dir
    engine = database.engine()
    live_broker = context.resources.live_broker
    risk_limits = context.resources.risk_limits
    try:
        tick_config = live_config(config, risk_limits)
    except RiskConfigError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    # Recorded before trading, so a run that fails half-way still says what it traded under.
    limits, ceilings = asdict(tick_config.limits), asdict(risk_limits.ceilings())
    context.instance.add_run_tags(
        context.run.run_id, {f"{RISK_TAG_PREFIX}{k}": f"{v:g}" for k, v in limits.items()}
    )
    context.log.info(f"trading under risk limits {limits} (ceilings {ceilings})")
    limits_metadata = {
        "risk_limits": MetadataValue.json(limits),
        "risk_ceilings": MetadataValue.json(ceilings),
    }
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
        raise Failure(description=str(exc), allow_retries=False, metadata=limits_metadata) from exc
    context.instance.add_run_tags(context.run.run_id, tick_tags(report))
    for decision in report.rejected:
        context.log.warning(
            f"risk {decision['verdict']}: {decision['strategy_id']} {decision['symbol']} "
            f"{decision['requested_quantity']:g} ({decision['reason']})"
        )
    return Output(None, metadata={**_report_metadata(report), **limits_metadata})


@job(
    name=LIVE_JOB_NAME,
    description="Trade the active champions on the latest bar (paper broker or cTrader), exactly once.",
    tags={LIVE_RUN_TAG: "true"},
)
def live_execution_job() -> None:
    execute_live_tick()
