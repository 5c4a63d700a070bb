"""The market-data concern: the instrument universe, daily bars and their checks, jobs and schedules."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from emp_pipeline.defs.market_data import assets
from emp_pipeline.defs.market_data.jobs import daily_update_job, freshness_job, universe_job
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.market_data.schedules import daily_update_schedule, freshness_schedule
from emp_pipeline.settings import Settings


def market_data_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=load_assets_from_modules([assets]),
        asset_checks=load_asset_checks_from_modules([assets]),
        jobs=[universe_job, daily_update_job, freshness_job],
        schedules=[daily_update_schedule, freshness_schedule],
        resources={
            "market_data": MarketDataResource(
                source=settings.data_source,
                universe_file=str(settings.universe_file) if settings.universe_file else None,
                csv_dir=str(settings.csv_dir) if settings.csv_dir else None,
            )
        },
    )
