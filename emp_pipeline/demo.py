"""`emp demo`: the whole pipeline on the embedded defaults, in-process, with a short printed summary.

Every run goes to a persistent SQLite Dagster instance under EMP_HOME, so `make ui` (dagster dev with
DAGSTER_HOME pointing there) shows the demo's whole history afterwards: every bar partition with data
materialized, the checks, the walk-forward, the report, the champions and the live ticks. Bar partitions are
months of daily bars (defs/partitions.py), so the whole history is one single-run backfill of a few hundred
partition events. A rerun leaves registry, paper account and lake as the first run did: the study is
deterministic (content ids, a pinned seed) and the paper ticks replay on the demo's own account, reset first.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    PartitionsDefinition,
)

from emp_pipeline.instance.workspace_runs import execute_as_workspace_run
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.reporting.formatting import ratio_text
from emp_pipeline.settings import SETTINGS_FILE_NAME, Settings, masked_url
from emp_pipeline.storage.datasets import (
    EVOLVED_STRATEGIES,
    LIVE_EQUITY,
    LIVE_RISK_DECISIONS,
    LIVE_RISK_LIMITS,
    MARKET_BARS,
    STRATEGY_PERFORMANCE,
    WALK_FORWARD_REPORT,
)

# The demo's study settings, written to EMP_HOME/settings.env so that `make ui` and `emp run` afterwards run
# with them too (settings.py): a GA small enough for seconds per month; a seed of its own, because with a GA
# this small whether a month's pick trades at all is the draw's luck and seed 1 shows every step (paper
# orders included); gates lenient enough that a short study on three instruments yields champions to trade
# (the production defaults are stricter and the summary prints the gates in force).
DEMO_SETTINGS = {
    "EMP_EVOLUTION_POPULATION": "40",
    "EMP_EVOLUTION_GENERATIONS": "8",
    "EMP_EVOLUTION_SEED": "1",
    "EMP_GATE_MIN_SHARPE": "0",
    "EMP_GATE_MIN_DEFLATED_SHARPE": "0",
    "EMP_GATE_MAX_DRAWDOWN": "0.5",
    "EMP_GATE_MIN_TRADES": "1",
    "EMP_GATE_MAX_NULL_P_VALUE": "1",
    "EMP_MAX_CHAMPIONS": "5",
}


def demo_settings_text(study: Mapping[str, str] | None = None) -> str:
    """The settings file's text: DEMO_SETTINGS, then a timeframe's study (demo_timeframes.py) over them."""
    return (
        "# Written by `emp demo`: the demo's study settings, which `make ui` and `emp run` read too.\n"
        "# Environment variables win over these. Delete this file for the research defaults (GA 200 x 50,\n"
        "# seed 7, strict gates), or edit it: `emp demo` writes it only where there is none.\n"
        + "".join(f"{name}={value}\n" for name, value in {**DEMO_SETTINGS, **(study or {})}.items())
    )


DEMO_SETTINGS_TEXT = demo_settings_text()

# The paper account the demo replays its ticks on (paper broker, whatever EMP_BROKER says): the demo's own, so
# resetting it before each replay (a rerun reproduces the first run) never touches an account of the user's.
DEMO_ACCOUNT = "demo"
DEMO_BROKER = {"live_broker": {"config": {"kind": "paper", "account_name": DEMO_ACCOUNT}}}

# The tags that make a run cover a range of partitions (what Dagster puts on a single-run backfill's run).
# Spelled out because Dagster exports them only from a private module; test_demo.py pins that a run tagged
# with them materializes exactly that range.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

# The summary is the demo's output; Dagster's per-event DEBUG lines would bury it.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StepSummary:
    job: str
    partitions: str
    seconds: float
    materializations: Counter = field(default_factory=Counter)
    rows: dict[str, int] = field(default_factory=dict)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)
    success: bool = True


def demo_instance(settings: Settings) -> DagsterInstance:
    """A persistent SQLite instance under EMP_HOME/dagster_home (what `make ui` points dagster dev at)."""
    home = settings.home / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    return DagsterInstance.local_temp(tempdir=str(home))


def _run_job(
    defs: Definitions,
    instance: DagsterInstance,
    job_name: str,
    partition_range: tuple[str, str] | None,
    op_config: dict[str, dict] | None = None,
    resource_config: dict[str, dict] | None = None,
) -> StepSummary:
    tags = {}
    if partition_range:
        tags = {PARTITION_RANGE_START_TAG: partition_range[0], PARTITION_RANGE_END_TAG: partition_range[1]}
    started = time.perf_counter()
    result = execute_as_workspace_run(
        defs.resolve_job_def(job_name),
        instance,
        run_config={
            **QUIET_LOGS,
            "ops": {op: {"config": config} for op, config in (op_config or {}).items()},
            "resources": resource_config or {},
        },
        tags=tags,
    )
    summary = StepSummary(
        success=result.success,
        job=job_name,
        partitions=f"{partition_range[0]}..{partition_range[1]}" if partition_range else "unpartitioned",
        seconds=time.perf_counter() - started,
    )
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key.to_user_string()
        summary.materializations[key] += 1
        # A range run attaches the same output metadata to every partition's event: read it once.
        if key not in summary.rows and "rows" in materialization.metadata:
            summary.rows[key] = int(materialization.metadata["rows"].value)
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            summary.checks_passed += 1
        elif evaluation.severity == AssetCheckSeverity.WARN:
            summary.checks_warned.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        else:
            summary.checks_failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return summary


def write_demo_settings(
    home: Path, environ: Mapping[str, str], study: Mapping[str, str] | None = None
) -> str:
    """Leave the demo's study settings where `make ui` and `emp run` read them, unless the file there is not
    the demo's (a user's, or the demo's edited): that one is kept. Returns the line the demo prints."""
    path = home / SETTINGS_FILE_NAME
    text = demo_settings_text(study)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        note = f"settings: the demo's study settings written to {path}; make ui and emp run read them too"
    elif path.read_text(encoding="utf-8") == text:
        note = f"settings: the demo's study settings, from {path} (make ui and emp run read them too)"
    else:
        note = f"settings: {path} is not the demo's file (yours, or edited): kept, and the demo runs with it"
    overridden = sorted(name for name in DEMO_SETTINGS if environ.get(name, "").strip())
    if overridden:
        note += f"; the environment sets {', '.join(overridden)}, which wins"
    return note + "\n"


def run_demo(
    settings: Settings,
    out: TextIO,
    periods: int = 3,
    settings_note: str = "",
    paper_bars: int | None = None,
    ui_command: str = "make ui",
) -> list[StepSummary]:
    """Every step of the pipeline with `settings`, which the caller read after `write_demo_settings`."""
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    from emp_pipeline.definitions import build_definitions
    from emp_pipeline.defs.partitions import build_partitions

    defs = build_definitions(settings)
    partitions = build_partitions(settings)

    instance = demo_instance(settings)
    keys = partitions.bars.get_partition_keys(dynamic_partitions_store=instance)
    source = "bundled sample data" if settings.data.source == "sample" else f"{settings.data.source} data"
    out.write(
        f"emp demo: {source}, registry {settings.database_url.split(':')[0]}, Parquet files, paper broker\n"
        f"{settings_note}"
    )
    steps = [_report(out, _run_job(defs, instance, "universe_job", None))]
    steps.append(_report(out, _run_job(defs, instance, "daily_update_job", (keys[0], keys[-1]))))
    # The walk-forward study: the last `periods` months evolved and measured, then report and champions.
    walk_forward_keys = _walk_forward_keys(partitions.walk_forward, instance, periods)
    if not walk_forward_keys:
        out.write(
            f"- walk-forward study skipped: the universe covers {keys[0]}..{keys[-1]}, and the first period "
            "needs about three years of training history before it (see walk_forward_partitions)\n"
        )
    for key in walk_forward_keys:
        steps.append(_report(out, _run_job(defs, instance, "evolution_job", (key, key))))
    if walk_forward_keys:
        steps.append(_report(out, _run_job(defs, instance, "research_job", None)))
    steps.extend(_paper_trade_newest_period(out, defs, instance, settings, walk_forward_keys, paper_bars))
    _write_walk_forward_summary(out, instance, settings, walk_forward_keys)
    _write_paper_tick_summary(out, settings)
    write_locations(out, settings, ui_command)
    failed = [step.job for step in steps if not step.success]
    if failed:
        out.write(f"FAILED runs: {', '.join(failed)}\n")
    return steps


def write_locations(out: TextIO, settings: Settings, ui_command: str = "make ui") -> None:
    """Where the demo left its results, and the command that opens them in the UI; the registry URL with its
    password masked."""
    out.write(f"data files:    {settings.data_dir}\n")
    out.write(f"registry:      {masked_url(settings.database_url)}\n")
    out.write(f"dagster home:  {settings.home / 'dagster_home'} ({ui_command} opens it in dagster dev)\n")


def _paper_trade_newest_period(
    out: TextIO,
    defs: Definitions,
    instance: DagsterInstance,
    settings: Settings,
    keys: list[str],
    bars: int | None = None,
) -> list[StepSummary]:
    """Paper-trade the champions through the study's newest period, one live tick per stored bar, on the
    demo's own paper account, reset first.

    The bundled history ends years before the champions were activated, so their live track record is taken
    to start with that period; each tick decides on one day's close exactly as the scheduled job decides on
    the newest bar, and the paper broker fills at the next tick's open. With `bars`, only the last `bars`
    bars from the period's start on are ticked; the track record still starts with the period, so the first
    tick takes up the positions the champions hold by then.
    """
    if not keys:
        return []
    _reset_demo_account(out, settings)
    start = f"{keys[-1]}-01"
    days = sorted(MARKET_BARS.read(settings.data_dir, start)["date"].drop_duplicates())
    days = days[-bars:] if bars else days
    steps = []
    started = time.perf_counter()
    for day in days:
        config = {"start_date": start, "as_of_date": bar_text(day)}
        step = _run_job(
            defs,
            instance,
            "live_execution_job",
            None,
            op_config={"execute_live_tick": config},
            resource_config=DEMO_BROKER,
        )
        steps.append(step)
        if not step.success:
            return [_report(out, step)]
    out.write(
        f"- live_execution_job x {len(steps)} paper ticks [{bar_text(days[0])}..{bar_text(days[-1])}] in "
        f"{time.perf_counter() - started:.1f}s\n"
    )
    return steps


def _reset_demo_account(out: TextIO, settings: Settings) -> None:
    """Empty the demo's paper account (orders, fills, resting levels, swaps booked, positions, its journal)
    and give it its starting cash back, so the replay starts from scratch and a rerun reproduces the first
    run: replayed ticks on a filled account would find their old orders and trade the difference."""
    from sqlalchemy import delete, select, update

    from emp_pipeline.broker.interface import BrokerKind
    from emp_pipeline.registry.engine import make_engine, session_scope
    from emp_pipeline.registry.models import (
        Account,
        Fill,
        Order,
        PaperFinancing,
        PaperProtectiveLevels,
        Position,
    )

    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            account_id = session.scalar(
                select(Account.id).where(
                    Account.broker == BrokerKind.PAPER.value, Account.name == DEMO_ACCOUNT
                )
            )
            if account_id is None:
                return
            orders = select(Order.id).where(Order.account_id == account_id)
            fills = session.execute(delete(Fill).where(Fill.order_id.in_(orders))).rowcount
            for kept_by_account in (PaperProtectiveLevels, PaperFinancing):
                session.execute(delete(kept_by_account).where(kept_by_account.account_id == account_id))
            removed = session.execute(delete(Order).where(Order.account_id == account_id)).rowcount
            positions = session.execute(delete(Position).where(Position.account_id == account_id)).rowcount
            capital = settings.research.capital
            session.execute(
                update(Account).where(Account.id == account_id).values(cash=capital, initial_cash=capital)
            )
    finally:
        engine.dispose()
    for journal in (LIVE_EQUITY, LIVE_RISK_DECISIONS, LIVE_RISK_LIMITS):
        shutil.rmtree(journal.store(settings.data_dir, f"account_{account_id}").directory, ignore_errors=True)
    out.write(
        f"- paper account {DEMO_ACCOUNT!r} reset for the replay: the previous demo's {removed} order(s), "
        f"{fills} fill(s) and {positions} position(s) removed, its journal too, cash back to {capital:,.0f}\n"
    )


def bar_text(bar: object) -> str:
    """A daily bar by its day, an intraday one by day and time (UTC): what a tick's as_of_date takes."""
    bar = pd.Timestamp(bar)
    return f"{bar:%Y-%m-%d}" if bar == bar.normalize() else f"{bar:%Y-%m-%d %H:%M}"


def _report(out: TextIO, step: StepSummary) -> StepSummary:
    """Print a step as soon as it ends, so a long demo shows progress."""
    status = "" if step.success else " FAILED"
    out.write(f"- {step.job} [{step.partitions}] in {step.seconds:.1f}s{status}\n")
    for key, count in sorted(step.materializations.items()):
        rows = f", {step.rows[key]:,} rows" if key in step.rows else ""
        out.write(f"    {key}: {count} materialization(s){rows}\n")
    failed = f", failed: {', '.join(step.checks_failed)}" if step.checks_failed else ""
    warned = f", warned: {', '.join(step.checks_warned)}" if step.checks_warned else ""
    out.write(f"    checks: {step.checks_passed} passed{warned}{failed}\n")
    out.flush()
    return step


def _write_paper_tick_summary(out: TextIO, settings: Settings) -> None:
    from emp_pipeline.registry.engine import make_engine, session_scope
    from emp_pipeline.registry.orders import orders_for_account
    from emp_pipeline.registry.positions import get_or_create_paper_account, positions_for_account
    from emp_pipeline.registry.research import active_strategies

    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            account = get_or_create_paper_account(session, DEMO_ACCOUNT)
            orders = orders_for_account(session, account.id)
            positions = positions_for_account(session, account.id)
            champions = active_strategies(session)
    finally:
        engine.dispose()
    out.write(
        f"paper-trading tick: {len(champions)} active champion(s), {len(orders)} order(s) of paper account "
        f"{DEMO_ACCOUNT!r} in the registry\n"
    )
    for order in orders[-10:]:
        out.write(
            f"    {order.client_order_id} {order.side} {order.quantity:g} {order.symbol} "
            f"(bar {bar_text(order.bar_time)}, strategy {order.strategy_id}): {order.status}\n"
        )
    if any(order.status == "accepted" for order in orders):
        out.write(
            "    accepted orders fill at the next bar's open, which the bundled history does not have\n"
        )
    for position in positions:
        out.write(f"    position {position.symbol}: {position.quantity:g} @ {position.avg_price:.2f}\n")


def _walk_forward_keys(
    walk_forward: PartitionsDefinition, instance: DagsterInstance, periods: int
) -> list[str]:
    keys = walk_forward.get_partition_keys(dynamic_partitions_store=instance)
    return keys[-periods:] if periods > 0 else []


def period_line(key: str, evolved: Mapping[str, object], measured: Mapping[str, object], trades: int) -> str:
    """One period of the summary from its two materializations' metadata; a pick that never traded out of
    sample says so (its Sharpe of 0.00 would read as a measured result)."""
    result = (
        f"{trades} trade(s), Sharpe {_sharpe_text(measured['selected_sharpe'])}, "
        f"return {measured['selected_total_return']}"
        if trades
        else "no trades"
    )
    ga = f"GA {evolved['population_size']} x {evolved['generations']} (run seed {evolved['seed']})"
    return (
        f"    {key}: {ga}, {evolved['recorded_strategies']} strategies with lineage recorded, best training "
        f"fitness {ratio_text(evolved['best_fitness'])}; out of sample {measured['bars']} bars, selected "
        f"strategy {result}\n"
    )


def _sharpe_text(value: object) -> str:
    """A Sharpe from metadata: a number rounded, or the report's own words when it has too few trades to mean
    anything ("not meaningful: 4 trades < 5")."""
    return value if isinstance(value, str) else ratio_text(value)


def _out_of_sample_trades(settings: Settings, strategy_id: str, period: str) -> int:
    """How many trades the period's selected strategy made out of sample (its registry performance row)."""
    from sqlalchemy import select

    from emp_pipeline.registry.engine import make_engine, session_scope
    from emp_pipeline.registry.models import Performance, WindowKind

    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            trades = session.scalar(
                select(Performance.trade_count).where(
                    Performance.strategy_id == strategy_id,
                    Performance.period == period,
                    Performance.kind == WindowKind.OUT_OF_SAMPLE.value,
                )
            )
    finally:
        engine.dispose()
    return int(trades or 0)


def _latest_metadata(
    instance: DagsterInstance, asset: str, partition: str | None = None
) -> dict[str, object]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def _write_walk_forward_summary(
    out: TextIO, instance: DagsterInstance, settings: Settings, keys: list[str]
) -> None:
    """Each period with the GA it was evolved with (from its run, not today's settings), then the study."""
    if not keys:
        return
    research = settings.research
    out.write(
        f"walk-forward study: {len(keys)} monthly period(s) {keys[0]}..{keys[-1]}, settings GA population "
        f"{research.population} x {research.generations} generations, seed {research.seed}\n"
    )
    for key in keys:
        evolved = _latest_metadata(instance, EVOLVED_STRATEGIES.name, key)
        measured = _latest_metadata(instance, STRATEGY_PERFORMANCE.name, key)
        if not evolved or not measured:
            out.write(f"    {key}: not measured\n")
            continue
        trades = _out_of_sample_trades(settings, str(measured["selected_strategy"]), key)
        out.write(period_line(key, evolved, measured, trades))
    report = _latest_metadata(instance, WALK_FORWARD_REPORT.name)
    if report:
        out.write(
            f"    stitched out of sample: return {report['total_return']}, Sharpe "
            f"{_sharpe_text(report['sharpe'])}, max drawdown {report['max_drawdown']}, "
            f"PBO {ratio_text(report['pbo'])}\n"
            f"    against doing nothing clever: {report['headline']}\n"
        )
    champions = _latest_metadata(instance, "champion_strategies")
    if champions:
        out.write(
            f"    champions: {champions['promoted']} promoted, {champions['retired']} retired, "
            f"{champions['active_champions']} active (gates: {', '.join(champions['gates'].values())})\n"
        )
