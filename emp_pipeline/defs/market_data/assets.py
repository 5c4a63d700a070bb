"""Market data assets: the validated instrument universe and daily OHLCV bars."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    PartitionsDefinition,
    asset,
    asset_check,
)

from emp_pipeline.defs.check_results import counted_check_result
from emp_pipeline.defs.io_managers import REPLACE_HISTORY_METADATA
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.publication import StagedCheck, report_then_gate
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.bar_quality import (
    BAR_CHECKS,
    HISTORY_BARS_NEEDED,
    BarCheckOutcome,
    check_freshness,
    evaluate_bar_checks,
)
from emp_pipeline.domain.bars import empty_bars, normalise_bars
from emp_pipeline.domain.calendars import as_utc, trading_days
from emp_pipeline.domain.instrument_changes import InstrumentTermsChangedError
from emp_pipeline.domain.timeframes import bar_chunk_days
from emp_pipeline.registry.instruments import TermAcceptance, pending_term_changes, store_instruments
from emp_pipeline.storage.datasets import MARKET_BARS
from emp_pipeline.storage.parquet_frames import RowShortfall, describe_shortfalls

GROUP = "market_data"
OWNERS = ["team:research"]
FRESHNESS_MAX_MISSING_SESSIONS = 3


class InstrumentUniverseConfig(Config):
    """Run config of `instrument_universe`: the explicit acceptance of changed instrument terms.

    A universe that changes a stored instrument's terms (lot size, calendar, asset class, ...) fails the run
    and lists every change; re-run with ``accept_term_changes: true`` and a ``reason`` to accept them. Each
    accepted change is recorded in the registry (instrument_term_changes) with old and new value, when, the
    universe file it came from, the reason and this run's id.
    """

    accept_term_changes: bool = False
    reason: str = ""


@asset(
    group_name=GROUP,
    kinds={"python", "sql"},
    owners=OWNERS,
    description="The instrument universe from its YAML file, validated and stored in the registry's "
    "instruments table. New symbols are added; changed terms of a stored symbol are refused unless the run "
    "accepts them explicitly (accept_term_changes with a reason), and every accepted change is recorded.",
)
def instrument_universe(
    context: AssetExecutionContext,
    config: InstrumentUniverseConfig,
    market_data: MarketDataResource,
    database: DatabaseResource,
) -> MaterializeResult:
    universe = market_data.universe_with_terms()
    origin = market_data.universe_origin()
    if config.accept_term_changes and not config.reason.strip():
        raise Failure(description="accept_term_changes needs a reason: say why the terms change")
    acceptance = (
        TermAcceptance(reason=config.reason.strip(), accepted_by=f"dagster run {context.run.run_id}")
        if config.accept_term_changes
        else None
    )
    with database.session() as session:
        pending = pending_term_changes(session, universe.instruments)
        if pending and acceptance is None:
            refusal = InstrumentTermsChangedError(
                origin,
                pending,
                "check them, then re-run instrument_universe with the run config accept_term_changes: true "
                "and a reason (docs/operations.md, instrument term changes)",
            )
            raise Failure(
                description=str(refusal),
                metadata={"term_changes": MetadataValue.json([change.describe() for change in pending])},
            )
        sync = store_instruments(session, universe.instruments, origin=origin, acceptance=acceptance)
    for change in sync.changes:
        context.log.warning(f"instrument term changed ({config.reason.strip()}): {change.describe()}")
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
            "origin": origin,
            "instruments": len(universe.instruments),
            "added": MetadataValue.json(list(sync.added)),
            "term_changes": MetadataValue.json([change.describe() for change in sync.changes]),
            "date_range": f"{universe.start_date} .. {universe.end_date or 'open'}",
            "table": MetadataValue.md(table.to_markdown(index=False)),
        }
    )


HISTORY_CHECK = "keeps_stored_history"
# Calendar days read before a window so the history-aware checks see HISTORY_BARS_NEEDED earlier sessions.
HISTORY_LOOKBACK_DAYS = 2 * HISTORY_BARS_NEEDED


def _check_result(outcome: BarCheckOutcome, severity: AssetCheckSeverity) -> AssetCheckResult:
    return counted_check_result(
        passed=outcome.passed,
        description=outcome.description,
        failures=outcome.failures,
        examples=outcome.examples,
        severity=severity,
    )


class MarketBarsConfig(Config):
    """Run config of `market_bars`. ``replace_history`` is the one explicit way to delete stored bars.

    Without it, a source that returns fewer bars for a window than are stored (a truncated CSV, a vendor
    outage answered with an empty frame) fails the run and nothing is written. With it, the run replaces the
    window's stored bars by what the source returned and logs every symbol and day it removes.
    """

    replace_history: bool = False


def history_check(shortfalls: tuple[RowShortfall, ...], replace_history: bool) -> StagedCheck:
    """The stored bars a source no longer returns: a blocking failure unless the run replaces explicitly."""
    removed = sum(shortfall.missing for shortfall in shortfalls)
    if not shortfalls:
        description = "the source returned every stored bar of the window"
    elif replace_history:
        description = f"replace_history: {removed} stored bars removed ({describe_shortfalls(shortfalls)})"
    else:
        description = (
            f"the source returned {removed} fewer stored bars than the store holds "
            f"({describe_shortfalls(shortfalls)}); fix the source, or re-run with replace_history: true"
        )
    return StagedCheck(
        HISTORY_CHECK,
        blocking=True,
        passed=replace_history or not shortfalls,
        description=description,
        failures=removed,
        examples=tuple(shortfall.describe() for shortfall in shortfalls),
    )


def market_bars(
    context: AssetExecutionContext,
    config: MarketBarsConfig,
    market_data: MarketDataResource,
    lake: DataLakeResource,
) -> Iterator:
    window = context.partition_time_window
    universe = market_data.universe()
    now = pd.Timestamp.now(tz="UTC")
    # A month partition may begin before the universe's first day or end after its last: those days are not
    # expected to hold bars (no gap), and are not fetched.
    chunk = bar_chunk_days(window.start, window.end, universe.timeframe, now).within(
        universe.start_date, universe.end_date
    )
    first_day, last_day = chunk.first_day, chunk.last_day
    trading = [
        meta for meta in universe.instruments if len(trading_days(meta.calendar, first_day, last_day)) > 0
    ]
    if trading:
        source = market_data.build_source()
        symbols = [meta.symbol for meta in trading]
        if universe.timeframe.is_intraday:
            bars = source.fetch(symbols, as_utc(window.start), as_utc(window.end))
        else:
            bars = source.fetch(symbols, first_day, last_day)
        bars = normalise_bars(bars, universe.timeframe)
    else:
        bars = empty_bars()

    store = lake.store(MARKET_BARS)
    stored = store.read_window(window.start, window.end)
    # Bars of symbols this run does not fetch (dropped from the universe, no session in the window) stay.
    if "symbol" in stored.columns:
        kept = stored.loc[~stored["symbol"].isin([meta.symbol for meta in trading])]
    else:
        kept = stored.iloc[0:0]
    history = store.read_window(
        pd.Timestamp(window.start) - pd.Timedelta(days=HISTORY_LOOKBACK_DAYS), window.start
    )
    outcomes = evaluate_bar_checks(
        bars,
        history,
        universe.instruments,
        first_day,
        chunk.closed_through,
        now,
        universe.timeframe,
        span=(as_utc(window.start), min(as_utc(window.end), now)),
    )
    staged = (
        normalise_bars(pd.concat([bars, kept], ignore_index=True), universe.timeframe) if len(kept) else bars
    )
    shortfalls = store.shortfalls(staged, window.start, window.end)
    checks = [
        history_check(shortfalls, config.replace_history),
        *(StagedCheck.from_bar_outcome(outcome) for outcome in outcomes),
    ]
    if shortfalls and config.replace_history:
        context.log.warning(f"{MARKET_BARS.name}: {checks[0].description}")
    yield from report_then_gate(context, MARKET_BARS, bars, checks, lake.base_dir)

    per_symbol = staged.groupby("symbol")["date"].agg(["count", "min", "max"]).reset_index()
    per_symbol["min"] = per_symbol["min"].dt.date.astype(str)
    per_symbol["max"] = per_symbol["max"].dt.date.astype(str)
    yield Output(
        staged,
        metadata={
            "rows": len(staged),
            "symbols": staged["symbol"].nunique(),
            "first_day": str(first_day),
            "last_day": str(last_day),
            "kept_rows_of_unfetched_symbols": len(kept),
            REPLACE_HISTORY_METADATA: config.replace_history,
            "per_symbol": MetadataValue.md(per_symbol.to_markdown(index=False))
            if len(per_symbol)
            else "none",
        },
    )


def market_bars_asset(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """`market_bars` over the partitions `build_definitions` made from the settings."""
    return asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        deps=[instrument_universe],
        check_specs=[
            AssetCheckSpec(
                HISTORY_CHECK,
                asset=MARKET_BARS.name,
                blocking=True,
                description="the source returns every bar already stored for the window; blocks: stored "
                "history is never deleted by a short or missing source (replace_history: true replaces it "
                "explicitly)",
            ),
            *(
                AssetCheckSpec(
                    check.name, asset=MARKET_BARS.name, blocking=check.blocking, description=check.description
                )
                for check in BAR_CHECKS
            ),
        ],
        description="OHLCV bars per symbol (canonical frame), one partition per chunk of time: a month of "
        "daily bars, a trading day of intraday bars; the current chunk is re-materialized as bars arrive, "
        "and a range of partitions loads in one run. Staged, checked, then published: a blocking check "
        "that fails leaves the store untouched (the frame goes to quarantine), and stored bars the source "
        "no longer returns are never deleted unless the run says replace_history.",
    )(market_bars)


@asset_check(
    asset=MARKET_BARS.name,
    description="Newest stored bar of each symbol is at most a few sessions old, as of today or the "
    "universe's end date, whichever is earlier.",
)
def market_bars_fresh(
    context: AssetCheckExecutionContext, market_data: MarketDataResource, lake: DataLakeResource
) -> AssetCheckResult:
    universe = market_data.universe()
    today = datetime.now(UTC).date()
    as_of = min(today, universe.end_date) if universe.end_date else today
    recent = lake.read(MARKET_BARS, start=pd.Timestamp(as_of - timedelta(days=400)))
    latest = (
        {symbol: stamp.date() for symbol, stamp in recent.groupby("symbol")["date"].max().items()}
        if "symbol" in recent.columns
        else {}
    )
    outcome = check_freshness(latest, universe.instruments, as_of, FRESHNESS_MAX_MISSING_SESSIONS)
    return _check_result(outcome, AssetCheckSeverity.ERROR)
