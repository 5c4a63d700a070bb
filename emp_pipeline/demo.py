"""`emp demo`: the whole pipeline on the embedded defaults, in-process, with a short printed summary.

Runs go to a persistent SQLite Dagster instance under EMP_HOME, so `dagster dev` (with DAGSTER_HOME pointing
there, as the README says) shows the demo's materializations and check results afterwards.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from dagster import DagsterInstance
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
    out.write("emp demo: embedded defaults (sample data, SQLite registry, Parquet files, paper broker)\n")
    for step in steps:
        out.write(f"- {step.job} [{step.partitions}] in {step.seconds:.1f}s\n")
        for key, count in sorted(step.materializations.items()):
            rows = f", {step.rows[key]:,} rows" if key in step.rows else ""
            out.write(f"    {key}: {count} materialization(s){rows}\n")
        failed = f", FAILED: {', '.join(step.checks_failed)}" if step.checks_failed else ""
        out.write(f"    checks: {step.checks_passed} passed{failed}\n")
    out.write(f"data files:    {settings.data_dir}\n")
    out.write(f"registry:      {settings.database_url}\n")
    out.write(f"dagster home:  {settings.home / 'dagster_home'} (make ui opens it in dagster dev)\n")
    return steps
