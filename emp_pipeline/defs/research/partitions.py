"""Walk-forward periods: monthly partitions over the configured date range, and the training window."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from dagster import MonthlyPartitionsDefinition

# Each period trains on the WALK_FORWARD_TRAIN_BARS trading days that end WALK_FORWARD_EMBARGO_BARS days
# before it: the first period is the first whole month with about that much history behind it.
WALK_FORWARD_TRAIN_BARS = 756
WALK_FORWARD_EMBARGO_BARS = 5
WALK_FORWARD_MIN_TRAIN_BARS = 252


def first_walk_forward_month(universe_start: date) -> datetime:
    """The first month that starts at least three years plus the embargo (a calendar week) after the start."""
    earliest = pd.Timestamp(universe_start) + pd.DateOffset(years=3) + pd.Timedelta(days=7)
    month_start = earliest.to_period("M").to_timestamp()
    return (month_start if month_start == earliest else month_start + pd.DateOffset(months=1)).to_pydatetime()


def walk_forward_partitions(first_day: date, last_day: date | None) -> MonthlyPartitionsDefinition:
    # Datetimes, not strings: Dagster would parse strings with the "%Y-%m" key format.
    return MonthlyPartitionsDefinition(
        start_date=first_walk_forward_month(first_day),
        # Exclusive end: the last period is the last whole month the universe covers.
        end_date=datetime.combine(last_day + timedelta(days=1), datetime.min.time()) if last_day else None,
        timezone="UTC",
        fmt="%Y-%m",
    )
