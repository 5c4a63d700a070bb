"""The market-data concern: the instrument universe, bars and their checks, jobs and schedules."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from emp_pipeline.defs.market_data.assets import instrument_universe, market_bars_asset, market_bars_fresh
from emp_pipeline.defs.market_data.jobs import daily_update_job, freshness_job, universe_job
from emp_pipeline.defs.market_data.resources import CTraderAccountResource, MarketDataResource
from emp_pipeline.defs.market_data.schedules import (
    bar_update_schedule,
    daily_update_schedule,
    freshness_schedule,
)
from emp_pipeline.defs.partitions import PipelinePartitions
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.environment import partition_plan
from emp_pipeline.settings import Settings


def ctrader_account_resource(
    settings: Settings, ctrader_token: CTraderTokenResource | None
) -> CTraderAccountResource | None:
    """The account bars are read from when EMP_DATA_SOURCE=ctrader (the settings made sure it is named)."""
    if settings.data.source != "ctrader" or ctrader_token is None:
        return None
    return CTraderAccountResource(
        url=settings.live.ctrader_api_url,
        account_id=settings.live.ctrader_account_id,
        client_id=EnvVar("CTRADER_CLIENT_ID"),
        client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        token=ctrader_token,
    )


def market_data_definitions(
    settings: Settings, partitions: PipelinePartitions, ctrader_token: CTraderTokenResource | None = None
) -> Definitions:
    ctrader = ctrader_account_resource(settings, ctrader_token)
    per_bar = bar_update_schedule(partitions, partition_plan(settings.data).timeframe)
    return Definitions(
        assets=[instrument_universe, market_bars_asset(partitions.bars)],
        asset_checks=[market_bars_fresh],
        jobs=[universe_job, daily_update_job, freshness_job],
        schedules=[daily_update_schedule(partitions), freshness_schedule, *([per_bar] if per_bar else [])],
        resources={"market_data": MarketDataResource.from_settings(settings.data, ctrader)},
    )
