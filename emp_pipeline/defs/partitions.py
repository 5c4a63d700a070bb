"""The pipeline's partitions, built from the settings handed to `build_definitions` (never at import).

The date range comes from the universe file, or from EMP_DATA_START_DATE when a CSV folder's universe is
inferred at run time: no bar data is read here, so one bad data file cannot stop the definitions loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from dagster import DailyPartitionsDefinition, MonthlyPartitionsDefinition

from emp_pipeline.defs.research.partitions import walk_forward_partitions
from emp_pipeline.environment import partition_date_range
from emp_pipeline.settings import Settings


@dataclass(frozen=True)
class PipelinePartitions:
    """Daily bar partitions (market data, perception) and monthly walk-forward periods (research)."""

    bars: DailyPartitionsDefinition
    walk_forward: MonthlyPartitionsDefinition


def daily_bar_partitions(first_day: date, last_day: date | None) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=first_day.isoformat(),
        # Dagster's end_date is exclusive; the universe's is the last bar day it covers.
        end_date=(last_day + timedelta(days=1)).isoformat() if last_day else None,
        timezone="UTC",
    )


def build_partitions(settings: Settings) -> PipelinePartitions:
    first_day, last_day = partition_date_range(settings.data)
    return PipelinePartitions(
        bars=daily_bar_partitions(first_day, last_day),
        walk_forward=walk_forward_partitions(first_day, last_day, settings.research.train_months),
    )
