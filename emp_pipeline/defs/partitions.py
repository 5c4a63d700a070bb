"""Daily bar partitions (market data, perception), derived from the configured universe's date range."""

from __future__ import annotations

from datetime import timedelta

from dagster import DailyPartitionsDefinition

from emp_pipeline.environment import configured_universe
from emp_pipeline.settings import Settings

UNIVERSE = configured_universe(Settings.from_env())

daily_bar_partitions = DailyPartitionsDefinition(
    start_date=UNIVERSE.start_date.isoformat(),
    # Dagster's end_date is exclusive; the universe's is the last bar day it covers.
    end_date=(UNIVERSE.end_date + timedelta(days=1)).isoformat() if UNIVERSE.end_date else None,
    timezone="UTC",
)
