"""Walk-forward periods: monthly partitions over the configured date range, after the training window."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from dagster import MonthlyPartitionsDefinition

from emp_pipeline.domain.study_windows import DEFAULT_TRAIN_MONTHS

# The embargo is at least a week of bars (domain/study_windows.py): a calendar week always holds it.
EMBARGO_CALENDAR_DAYS = 7


def first_walk_forward_month(universe_start: date, train_months: int = DEFAULT_TRAIN_MONTHS) -> datetime:
    """The first month that starts at least the training span plus the embargo after the start."""
    earliest = (
        pd.Timestamp(universe_start)
        + pd.DateOffset(months=train_months)
        + pd.Timedelta(days=EMBARGO_CALENDAR_DAYS)
    )
    month_start = earliest.to_period("M").to_timestamp()
    return (month_start if month_start == earliest else month_start + pd.DateOffset(months=1)).to_pydatetime()


def walk_forward_partitions(
    first_day: date, last_day: date | None, train_months: int = DEFAULT_TRAIN_MONTHS
) -> MonthlyPartitionsDefinition:
    # Datetimes, not strings: Dagster would parse strings with the "%Y-%m" key format.
    return MonthlyPartitionsDefinition(
        start_date=first_walk_forward_month(first_day, train_months),
        # Exclusive end: the last period is the last whole month the universe covers.
        end_date=datetime.combine(last_day + timedelta(days=1), datetime.min.time()) if last_day else None,
        timezone="UTC",
        fmt="%Y-%m",
    )
