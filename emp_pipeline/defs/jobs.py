"""Asset jobs: named selections the schedules, sensors, CLI and UI launch."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

MARKET_BARS_FRESH = AssetCheckKey(AssetKey("market_bars"), "market_bars_fresh")

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
    description="New daily bars, then features and regimes for the same days.",
)

freshness_job = define_asset_job(
    "freshness_job",
    selection=AssetSelection.checks(MARKET_BARS_FRESH),
    description="Is the newest stored bar of every symbol current? Scheduled apart from backfills.",
)

# --- walk-forward research (defs/assets/strategies.py, performance.py, champions.py) ---

evolution_job = define_asset_job(
    "evolution_job",
    selection=AssetSelection.assets("evolved_strategies", "strategy_performance"),
    description="One walk-forward period: evolve on the history before it, then measure out of sample on it. "
    "A backfill over N periods is an N-period walk-forward study (one run per period).",
)

research_job = define_asset_job(
    "research_job",
    selection=AssetSelection.assets("walk_forward_report", "champion_strategies"),
    description="Stitch the measured periods into the walk-forward report (equity, drawdown, PBO), then "
    "promote or retire champions through the gates; the gate checks block on a failing champion set.",
)

# --- end walk-forward research ---
