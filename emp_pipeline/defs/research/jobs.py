"""Research jobs: one walk-forward period (evolve, then measure), and the study report plus champions."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from emp_pipeline.storage.datasets import EVOLVED_STRATEGIES, STRATEGY_PERFORMANCE, WALK_FORWARD_REPORT

evolution_job = define_asset_job(
    "evolution_job",
    selection=AssetSelection.assets(EVOLVED_STRATEGIES.name, STRATEGY_PERFORMANCE.name),
    description="One walk-forward period: evolve on the history before it, then measure out of sample on it. "
    "A backfill over N periods is an N-period walk-forward study (one run per period).",
)

research_job = define_asset_job(
    "research_job",
    selection=AssetSelection.assets(WALK_FORWARD_REPORT.name, "champion_strategies"),
    description="Stitch the measured periods into the walk-forward report (equity, drawdown, PBO), then "
    "promote or retire champions through the gates; the gate checks block on a failing champion set.",
)
