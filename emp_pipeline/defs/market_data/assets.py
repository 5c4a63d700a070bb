"""Market data assets: the validated instrument universe and daily OHLCV bars."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from emp_pipeline.defs.check_results import counted_check_result
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.partitions import daily_bar_partitions
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.bar_quality import (
    BLOCKING_CHECKS,
    BarCheckOutcome,
    check_calendar_gaps,
    check_freshness,
)
from emp_pipeline.domain.bars import empty_bars, normalise_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.registry.instruments import upsert_instruments

GROUP = "market_data"
OWNERS = ["team:research"]
FRESHNESS_MAX_MISSING_SESSIONS = 3


@asset(
    group_name=GROUP,
    kinds={"python", "sql"},
    owners=OWNERS,
    description="The instrument universe from its YAML file (or inferred from a CSV folder), validated and "
    "upserted into the registry's instruments table.",
)
def instrument_universe(market_data: MarketDataResource, database: DatabaseResource) -> MaterializeResult:
    universe = market_data.universe()
    with database.session() as session:
        upsert_instruments(session, universe.instruments)
    table = pd.DataFrame(
        [
            {
                "symbol": meta.symbol,
                "name": meta.name,
                "asset_class": str(meta.asset_class.value),
                "currency": meta.quote_currency,
                "tick_size": meta.tick_size,
                "calendar": meta.calendar,
            }
            for meta in universe.instruments
        ]
    )
    return MaterializeResult(
        metadata={
            "universe": universe.name,
            "instruments": len(universe.instruments),
            "date_range": f"{universe.start_date} .. {universe.end_date or 'open'}",
            "table": MetadataValue.md(table.to_markdown(index=False)),
        }
    )


def _check_result(
    outcome: BarCheckOutcome, severity: AssetCheckSeverity, check_name: str | None = None
) -> AssetCheckResult:
    return counted_check_result(
        passed=outcome.passed,
        description=outcome.description,
        failures=outcome.failures,
        examples=outcome.examples,
        severity=severity,
        check_name=check_name,
    )


_BLOCKING_DESCRIPTIONS = {
    "ohlc_consistent": "low <= open, close <= high on every bar",
    "positive_prices": "every price present and positive",
    "unique_symbol_date": "at most one bar per (symbol, date) in storage",
}


@asset(
    partitions_def=daily_bar_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="frame_io_manager",
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    deps=[instrument_universe],
    check_specs=[
        *(
            AssetCheckSpec(name, asset="market_bars", blocking=True, description=text)
            for name, text in _BLOCKING_DESCRIPTIONS.items()
        ),
        AssetCheckSpec(
            "no_calendar_gaps",
            asset="market_bars",
            description="every trading day of each instrument's calendar has a bar (warns)",
        ),
    ],
    description="Daily OHLCV bars per symbol (canonical frame), one partition per UTC day; a range of "
    "partitions loads in one run and replaces what was stored for those days.",
)
def market_bars(context: AssetExecutionContext, market_data: MarketDataResource) -> Iterator:
    window = context.partition_time_window
    first_day: date = window.start.date()
    last_day: date = (window.end - timedelta(days=1)).date()
    universe = market_data.universe()
    trading = [
        meta for meta in universe.instruments if len(trading_days(meta.calendar, first_day, last_day)) > 0
    ]
    if trading:
        bars = market_data.build_source().fetch([meta.symbol for meta in trading], first_day, last_day)
        bars = normalise_bars(bars)
    else:
        bars = empty_bars()
    outcomes = [check(bars) for check in BLOCKING_CHECKS]
    gaps = check_calendar_gaps(bars, universe.instruments, first_day, last_day)
    per_symbol = bars.groupby("symbol")["date"].agg(["count", "min", "max"]).reset_index()
    per_symbol["min"] = per_symbol["min"].dt.date.astype(str)
    per_symbol["max"] = per_symbol["max"].dt.date.astype(str)
    yield Output(
        bars,
        metadata={
            "rows": len(bars),
            "symbols": bars["symbol"].nunique(),
            "first_day": str(first_day),
            "last_day": str(last_day),
            "per_symbol": MetadataValue.md(per_symbol.to_markdown(index=False))
            if len(per_symbol)
            else "none",
        },
    )
    for outcome in outcomes:
        yield _check_result(outcome, AssetCheckSeverity.ERROR, outcome.name)
    yield _check_result(gaps, AssetCheckSeverity.WARN, gaps.name)


@asset_check(
    asset=market_bars,
    description="Newest stored bar of each symbol is at most a few sessions old, as of today or the "
    "universe's end date, whichever is earlier.",
)
def market_bars_fresh(
    context: AssetCheckExecutionContext, market_data: MarketDataResource, lake: DataLakeResource
) -> AssetCheckResult:
    universe = market_data.universe()
    today = datetime.now(UTC).date()
    as_of = min(today, universe.end_date) if universe.end_date else today
    recent = lake.store("market_bars").read_window(start=pd.Timestamp(as_of - timedelta(days=400)))
    latest = (
        {symbol: stamp.date() for symbol, stamp in recent.groupby("symbol")["date"].max().items()}
        if "symbol" in recent.columns
        else {}
    )
    outcome = check_freshness(latest, universe.instruments, as_of, FRESHNESS_MAX_MISSING_SESSIONS)
    return _check_result(outcome, AssetCheckSeverity.ERROR)
