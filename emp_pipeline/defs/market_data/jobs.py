"""Market-data jobs: the universe, the daily update (bars, then features and regimes), freshness."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

from emp_pipeline.storage.datasets import MARKET_BARS

MARKET_BARS_FRESH = AssetCheckKey(AssetKey(MARKET_BARS.name), "market_bars_fresh")

universe_job = define_asset_job(
    "universe_job",
    selection=AssetSelection.assets("instrument_universe"),
    description="Validate the instrument universe and upsert it into the registry.",
)

daily_update_job = define_asset_job(
    "daily_update_job",
    # Freshness is about "now", not about the days being (back)filled: it runs in freshness_job.
    selection=AssetSelection.groups("market_data", "perception")
    - AssetSelection.assets("instrument_universe")
    - AssetSelection.checks(MARKET_BARS_FRESH),
    description="New bars of a partition (a month of daily bars, a trading day of intraday bars), "
    "then features and regimes of the same partition.",
)

freshness_job = define_asset_job(
    "freshness_job",
    selection=AssetSelection.checks(MARKET_BARS_FRESH),
    description="Is the newest stored bar of every symbol current? Scheduled apart from backfills.",
)
