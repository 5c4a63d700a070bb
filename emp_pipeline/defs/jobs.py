"""Asset jobs: named selections the schedules, sensors, CLI and UI launch."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from emp_pipeline.defs.partitions import daily_bar_partitions

universe_job = define_asset_job(
    "universe_job",
    selection=AssetSelection.assets("instrument_universe"),
    description="Validate the instrument universe and upsert it into the registry.",
)

daily_update_job = define_asset_job(
    "daily_update_job",
    selection=AssetSelection.groups("market_data", "perception")
    - AssetSelection.assets("instrument_universe"),
    partitions_def=daily_bar_partitions,
    description="New daily bars, then features and regimes for the same days.",
)
