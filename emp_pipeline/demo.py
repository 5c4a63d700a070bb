"""`emp demo`: the whole pipeline on the embedded defaults, in-process, with a short printed summary.

Runs go to a persistent SQLite Dagster instance under EMP_HOME, so `dagster dev` (with DAGSTER_HOME pointing
there, as the README says) shows the demo's materializations and check results afterwards.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TextIO

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.settings import Settings

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


def demo_instance(settings: Settings) -> DagsterInstance:
    """A persistent SQLite instance under EMP_HOME/dagster_home (what `make ui` points dagster dev at)."""
    home = settings.home / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    return DagsterInstance.local_temp(tempdir=str(home))


def _run_job(
    defs, instance: DagsterInstance, job_name: str, partition_range: tuple[str, str] | None
) -> StepSummary:
    tags = (
        {
            ASSET_PARTITION_RANGE_START_TAG: partition_range[0],
            ASSET_PARTITION_RANGE_END_TAG: partition_range[1],
        }
        if partition_range
        else {}
    )
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags=tags, run_config=QUIET_LOGS
    )
    summary = StepSummary(
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
        else:
            summary.checks_failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return summary


def run_demo(settings: Settings, out: TextIO, periods: int = 3) -> list[StepSummary]:
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    from emp_pipeline.definitions import defs
    from emp_pipeline.defs.partitions import daily_bar_partitions

    instance = demo_instance(settings)
    keys = daily_bar_partitions.get_partition_keys(dynamic_partitions_store=instance)
    steps = [
        _run_job(defs, instance, "universe_job", None),
        _run_job(defs, instance, "daily_update_job", (keys[0], keys[-1])),
    ]
    # --- walk-forward research: the last `periods` months evolved and measured, then report and champions ---
    walk_forward_keys = _walk_forward_keys(instance, periods)
    research_defs = _research_definitions(settings)
    for key in walk_forward_keys:
        steps.append(_run_job(research_defs, instance, "evolution_job", (key, key)))
    if walk_forward_keys:
        steps.append(_run_job(research_defs, instance, "research_job", None))
    # --- end walk-forward research ---
    out.write("emp demo: embedded defaults (sample data, SQLite registry, Parquet files, paper broker)\n")
    for step in steps:
        out.write(f"- {step.job} [{step.partitions}] in {step.seconds:.1f}s\n")
        for key, count in sorted(step.materializations.items()):
            rows = f", {step.rows[key]:,} rows" if key in step.rows else ""
            out.write(f"    {key}: {count} materialization(s){rows}\n")
        failed = f", FAILED: {', '.join(step.checks_failed)}" if step.checks_failed else ""
        out.write(f"    checks: {step.checks_passed} passed{failed}\n")
    _write_walk_forward_summary(out, instance, settings, walk_forward_keys)
    out.write(f"data files:    {settings.data_dir}\n")
    out.write(f"registry:      {settings.database_url}\n")
    out.write(f"dagster home:  {settings.home / 'dagster_home'} (make ui opens it in dagster dev)\n")
    return steps


# --- walk-forward research (defs/assets/strategies.py, performance.py, champions.py) ---


def _walk_forward_keys(instance: DagsterInstance, periods: int) -> list[str]:
    from emp_pipeline.defs.partitions import walk_forward_partitions

    keys = walk_forward_partitions.get_partition_keys(dynamic_partitions_store=instance)
    return keys[-periods:] if periods > 0 else []


def _research_definitions(settings: Settings) -> Definitions:
    """The project's definitions with the demo's small GA, so a few periods take seconds, not minutes."""
    from emp_pipeline.definitions import build_definitions

    return build_definitions(
        replace(
            settings,
            evolution_population=settings.demo_population,
            evolution_generations=settings.demo_generations,
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
        f"{settings.demo_population} x {settings.demo_generations} generations\n"
    )
    for key in keys:
        evolved = _latest_metadata(instance, "evolved_strategies", key)
        measured = _latest_metadata(instance, "strategy_performance", key)
        if not evolved or not measured:
            out.write(f"    {key}: not measured\n")
            continue
        out.write(
            f"    {key}: {evolved['recorded_strategies']} strategies with lineage recorded, best training "
            f"fitness {float(evolved['best_fitness']):.2f}; out of sample {measured['bars']} bars, selected "
            f"strategy Sharpe {float(measured['selected_sharpe']):.2f}, "
            f"return {float(measured['selected_total_return']):+.2%}\n"
        )
    report = _latest_metadata(instance, "walk_forward_report")
    if report:
        out.write(
            f"    stitched out of sample: return {float(report['total_return']):+.2%}, Sharpe "
            f"{float(report['sharpe']):.2f}, max drawdown {float(report['max_drawdown']):.2%}, "
            f"PBO {float(report['pbo']):.2f}\n"
        )
    champions = _latest_metadata(instance, "champion_strategies")
    if champions:
        out.write(
            f"    champions: {champions['promoted']} promoted, {champions['retired']} retired, "
            f"{champions['active_champions']} active (gates: {', '.join(champions['gates'].values())})\n"
        )


# --- end walk-forward research ---
