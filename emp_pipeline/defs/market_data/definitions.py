"""The market-data concern: the instrument universe, daily bars and their checks, jobs and schedules."""

from __future__ import annotations

from dagster import Definitions

from emp_pipeline.defs.market_data.assets import instrument_universe, market_bars_asset, market_bars_fresh
from emp_pipeline.defs.market_data.jobs import daily_update_job, freshness_job, universe_job
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.market_data.schedules import daily_update_schedule, freshness_schedule
from emp_pipeline.defs.partitions import PipelinePartitions
from emp_pipeline.settings import Settings


def market_data_definitions(settings: Settings, partitions: PipelinePartitions) -> Definitions:
    return Definitions(
        assets=[instrument_universe, market_bars_asset(partitions.bars)],
        asset_checks=[market_bars_fresh],
        jobs=[universe_job, daily_update_job, freshness_job],
        schedules=[daily_update_schedule, freshness_schedule],
        resources={"market_data": MarketDataResource.from_settings(settings.data)},
    )
