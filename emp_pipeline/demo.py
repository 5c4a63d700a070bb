"""`emp demo`: the whole pipeline on the embedded defaults, in-process, with a short printed summary.

Every run goes to a persistent SQLite Dagster instance under EMP_HOME, so `make ui` (dagster dev with
DAGSTER_HOME pointing there) shows the demo's whole history afterwards: every bar partition with data
materialized, the checks, the walk-forward, the report, the champions and the live ticks. Bar partitions are
months of daily bars (defs/partitions.py), so the whole history is one single-run backfill of a few hundred
partition events.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TextIO

from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    PartitionsDefinition,
)

from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.reporting.formatting import ratio_text
from emp_pipeline.settings import Settings, masked_url
from emp_pipeline.storage.datasets import (
    EVOLVED_STRATEGIES,
    MARKET_BARS,
    STRATEGY_PERFORMANCE,
    WALK_FORWARD_REPORT,
)

# The demo's gates are lenient so a three-month study on three instruments yields champions to trade; the
# production defaults (EMP_GATE_*) are stricter and are printed beside them.
DEMO_GATES = {
    "min_sharpe": 0.0,
    "min_deflated_sharpe": 0.0,
    "max_drawdown": 0.5,
    "min_trades": 1,
    "max_null_p_value": 1.0,
    "max_champions": 5,
}

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
) -> StepSummary:
    tags = (
        {
            PARTITION_RANGE_START_TAG: partition_range[0],
            PARTITION_RANGE_END_TAG: partition_range[1],
        }
        if partition_range
        else {}
    )
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        tags=tags,
        run_config={
            **QUIET_LOGS,
            "ops": {op: {"config": config} for op, config in (op_config or {}).items()},
        },
        raise_on_error=False,
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


def run_demo(settings: Settings, out: TextIO, periods: int = 3) -> list[StepSummary]:
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
    research_defs = _research_definitions(settings)
    for key in walk_forward_keys:
        steps.append(_report(out, _run_job(research_defs, instance, "evolution_job", (key, key))))
    if walk_forward_keys:
        steps.append(_report(out, _run_job(research_defs, instance, "research_job", None)))
    steps.extend(_paper_trade_newest_period(out, defs, instance, settings, walk_forward_keys))
    _write_walk_forward_summary(out, instance, settings, walk_forward_keys)
    _write_paper_tick_summary(out, settings)
    write_locations(out, settings)
    failed = [step.job for step in steps if not step.success]
    if failed:
        out.write(f"FAILED runs: {', '.join(failed)}\n")
    return steps


def write_locations(out: TextIO, settings: Settings) -> None:
    """Where the demo left its results; the registry URL with its password masked."""
    out.write(f"data files:    {settings.data_dir}\n")
    out.write(f"registry:      {masked_url(settings.database_url)}\n")
    out.write(f"dagster home:  {settings.home / 'dagster_home'} (make ui opens it in dagster dev)\n")


def _paper_trade_newest_period(
    out: TextIO, defs: Definitions, instance: DagsterInstance, settings: Settings, keys: list[str]
) -> list[StepSummary]:
    """Paper-trade the champions through the study's newest period, one live tick per stored bar.

    The bundled history ends years before the champions were activated, so their live track record is taken
    to start with that period; each tick decides on one day's close exactly as the scheduled job decides on
    the newest bar, and the paper broker fills at the next tick's open.
    """
    if not keys:
        return []
    start = f"{keys[-1]}-01"
    days = MARKET_BARS.read(settings.data_dir, start)["date"].drop_duplicates()
    steps = []
    started = time.perf_counter()
    for day in sorted(days):
        config = {"start_date": start, "as_of_date": f"{day:%Y-%m-%d}"}
        step = _run_job(defs, instance, "live_execution_job", None, op_config={"execute_live_tick": config})
        steps.append(step)
        if not step.success:
            return [_report(out, step)]
    out.write(
        f"- live_execution_job x {len(steps)} paper ticks [{start}..{max(days):%Y-%m-%d}] in "
        f"{time.perf_counter() - started:.1f}s\n"
    )
    return steps


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
            account = get_or_create_paper_account(session)
            orders = orders_for_account(session, account.id)
            positions = positions_for_account(session, account.id)
            champions = active_strategies(session)
    finally:
        engine.dispose()
    out.write(
        f"paper-trading tick: {len(champions)} active champion(s), {len(orders)} order(s) in the registry\n"
    )
    for order in orders[-10:]:
        out.write(
            f"    {order.client_order_id} {order.side} {order.quantity:g} {order.symbol} "
            f"(bar {order.bar_time:%Y-%m-%d}, strategy {order.strategy_id}): {order.status}\n"
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


def _research_definitions(settings: Settings) -> Definitions:
    """The project's definitions with the demo's small GA, so a few periods take seconds, not minutes."""
    from emp_pipeline.definitions import build_definitions

    return build_definitions(
        replace(
            settings,
            research=replace(
                settings.research,
                population=settings.research.demo_population,
                generations=settings.research.demo_generations,
                seed=settings.research.demo_seed,
            ),
            gates=replace(settings.gates, **DEMO_GATES),
        )
    )


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
    if not keys:
        return
    out.write(
        f"walk-forward study: {len(keys)} monthly period(s) {keys[0]}..{keys[-1]}, GA population "
        f"{settings.research.demo_population} x {settings.research.demo_generations} generations, seed "
        f"{settings.research.demo_seed}\n"
    )
    for key in keys:
        evolved = _latest_metadata(instance, EVOLVED_STRATEGIES.name, key)
        measured = _latest_metadata(instance, STRATEGY_PERFORMANCE.name, key)
        if not evolved or not measured:
            out.write(f"    {key}: not measured\n")
            continue
        out.write(
            f"    {key}: {evolved['recorded_strategies']} strategies with lineage recorded, best training "
            f"fitness {ratio_text(evolved['best_fitness'])}; out of sample {measured['bars']} bars, selected "
            f"strategy Sharpe {ratio_text(measured['selected_sharpe'])}, "
            f"return {measured['selected_total_return']}\n"
        )
    report = _latest_metadata(instance, WALK_FORWARD_REPORT.name)
    if report:
        out.write(
            f"    stitched out of sample: return {report['total_return']}, Sharpe "
            f"{ratio_text(report['sharpe'])}, max drawdown {report['max_drawdown']}, "
            f"PBO {ratio_text(report['pbo'])}\n"
        )
    champions = _latest_metadata(instance, "champion_strategies")
    if champions:
        out.write(
            f"    champions: {champions['promoted']} promoted, {champions['retired']} retired, "
            f"{champions['active_champions']} active (gates: {', '.join(champions['gates'].values())})\n"
        )
