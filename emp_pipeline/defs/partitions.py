"""The pipeline's partitions, built from the settings handed to `build_definitions` (never at import).

Bar partitions are chunks of time, not bars (Dagster's event log costs about one event per partition and
asset, so one partition per bar would not scale): daily and weekly bars are partitioned by calendar MONTH
(UTC), intraday bars by TRADING DAY of the universe's calendar:
- '24x5' (FX): the FX day, [17:00, 17:00) New York time, so daylight saving moves it in UTC with New York.
  A window opens at each Sunday..Thursday 17:00 New York and is keyed by that opening time: partition
  ``2017-01-01-17:00`` is Monday 2017-01-02's trading day. Thursday's window runs to Sunday 17:00 and holds
  Friday's day (the weekend is closed time), so a year has ~260 partitions.
- '24x7' (crypto): the UTC day.
- one exchange calendar: the exchange's local weekday (its sessions never cross local midnight); a holiday
  is an empty partition.
- a universe mixing calendars: the UTC day.
Twenty years of daily history is 240 partitions; a year of H1 FX bars about 260.

The date range comes from the universe file, or from EMP_DATA_START_DATE when no universe file is
configured: no bar data is read here, so one bad data file cannot stop the definitions loading. An
open-ended range also holds the chunk in progress (``end_offset=1``): the current month is a partition the
evening update re-materializes with each new bar, and an incomplete one is normal.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import exchange_calendars
from dagster import (
    AllPartitionMapping,
    BetaWarning,
    MonthlyPartitionsDefinition,
    PartitionMapping,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
)

from emp_pipeline.defs.research.partitions import walk_forward_partitions
from emp_pipeline.domain.calendars import (
    CALENDAR_24X5,
    CALENDAR_24X7,
    FX_DAY_END,
    NEW_YORK,
    is_exchange_calendar,
)
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.environment import partition_plan
from emp_pipeline.settings import Settings

UTC = "UTC"


@dataclass(frozen=True)
class BarChunking:
    """How bar partitions cut time: a window opens at each tick of `cron_schedule` in `timezone`."""

    cron_schedule: str
    timezone: str
    fmt: str
    # When the daily update runs (in `timezone`): after the day's close, for the chunk holding that day.
    update_cron: str
    # The most partitions one calendar year can hold: look-back offsets count in partitions.
    max_per_year: int
    # FX days open the evening before the day they are named after.
    opens_day_before: bool = False

    @property
    def is_monthly(self) -> bool:
        return self.max_per_year == 12

    def first_tick_for(self, first_day: date) -> datetime:
        """A time at or before the first tick of the chunk that holds `first_day`."""
        zone = ZoneInfo(self.timezone)
        if self.is_monthly:
            return datetime.combine(first_day.replace(day=1), time(0), tzinfo=zone)
        if self.opens_day_before:
            return datetime.combine(first_day - timedelta(days=1), FX_DAY_END, tzinfo=zone)
        return datetime.combine(first_day, time(0), tzinfo=zone)

    def inside_day(self, day: date) -> datetime:
        """An instant inside the chunk that holds trading day `day` (noon of that day, local time)."""
        return datetime.combine(day, time(12), tzinfo=ZoneInfo(self.timezone))


# 22:30 UTC is after the US cash close in summer and winter time, and after the FX day's 17:00 New York end.
MONTHS = BarChunking("0 0 1 * *", UTC, "%Y-%m", "30 22 * * 1-5", max_per_year=12)
UTC_DAYS = BarChunking("0 0 * * *", UTC, "%Y-%m-%d", "10 0 * * *", max_per_year=366)
# At most 52 weeks x 5 + 2 weekdays of any five-day set fall in one calendar year.
WEEKDAYS_PER_YEAR = 262
FX_DAYS = BarChunking(
    f"{FX_DAY_END.minute} {FX_DAY_END.hour} * * 0-4",
    NEW_YORK,
    "%Y-%m-%d-%H:%M",
    f"{FX_DAY_END.minute + 10} {FX_DAY_END.hour} * * 1-5",
    max_per_year=WEEKDAYS_PER_YEAR,
    opens_day_before=True,
)


def exchange_days(calendar: str) -> BarChunking:
    """The exchange's local weekdays: each holds that day's session (if any) whole."""
    zone = str(exchange_calendars.get_calendar(calendar).tz)
    return BarChunking("0 0 * * 1-5", zone, "%Y-%m-%d", "0 20 * * 1-5", max_per_year=WEEKDAYS_PER_YEAR)


def bar_chunking(timeframe: Timeframe, calendars: Collection[str]) -> BarChunking:
    """Months for daily and weekly bars; trading days of the calendar for intraday bars (module doc)."""
    if not timeframe.is_intraday:
        return MONTHS
    kinds = set(calendars)
    if kinds == {CALENDAR_24X5}:
        return FX_DAYS
    if kinds == {CALENDAR_24X7}:
        return UTC_DAYS
    if len(kinds) == 1 and is_exchange_calendar(next(iter(kinds))):
        return exchange_days(next(iter(kinds)))
    return UTC_DAYS


def bar_partitions(
    chunking: BarChunking, first_day: date, last_day: date | None
) -> TimeWindowPartitionsDefinition:
    """The chunks from the one holding `first_day` to the one holding `last_day` (or the current one)."""
    open_ended = TimeWindowPartitionsDefinition(
        cron_schedule=chunking.cron_schedule,
        start=chunking.first_tick_for(first_day),
        timezone=chunking.timezone,
        fmt=chunking.fmt,
        end_offset=1,
    )
    if last_day is None:
        return open_ended
    last_key = open_ended.get_partition_key_for_timestamp(chunking.inside_day(last_day).timestamp())
    return TimeWindowPartitionsDefinition(
        cron_schedule=chunking.cron_schedule,
        start=open_ended.start,
        # Exclusive: a window belongs when it ends at or before `end`, so the last chunk is kept whole.
        end=open_ended.time_window_for_partition_key(last_key).end,
        timezone=chunking.timezone,
        fmt=chunking.fmt,
        end_offset=1,  # while the range is still running, its chunk in progress is a partition too
    )


# Every update tick runs minutes to hours after a day's close and before the next day's: the moment this long
# before the tick lies inside the day that just closed.
UPDATE_LOOKBACK = timedelta(hours=1)


def partition_to_update(
    partitions_def: TimeWindowPartitionsDefinition, tick: datetime, lookback: timedelta = UPDATE_LOOKBACK
) -> str | None:
    """The chunk the daily update at `tick` re-materializes: the one holding the day that just closed (the
    current month for daily bars, so its partition gains one bar each evening), or None past the range.
    `lookback` is how long before the tick an instant surely lies inside what closed (a bar update: less
    than a bar)."""
    moment = tick - lookback
    key = partitions_def.get_partition_key_for_timestamp(moment.timestamp())
    window = partitions_def.time_window_for_partition_key(key)
    if window.start < partitions_def.start or (partitions_def.end and window.end > partitions_def.end):
        return None
    return key


def lookback_partitions(chunking: BarChunking, history_years: int) -> int:
    """Partitions that reach back to Jan 1 of (year - history_years) from any chunk of the year."""
    return (history_years + 1) * chunking.max_per_year


def period_bars_mapping(
    periods: TimeWindowPartitionsDefinition,
    bars: TimeWindowPartitionsDefinition,
    start_offset: int = 0,
    end_offset: int = 0,
) -> PartitionMapping:
    """The bar partitions a walk-forward period depends on (offsets in periods), for the asset graph.

    Dagster maps time windows only within one timezone: FX-day bar partitions (New York) against the UTC
    months of the study depend on every bar partition instead. The research reads cut the rows by time
    themselves (strictly before the period to train, inside it to measure), so nothing read changes.
    """
    if periods.timezone != bars.timezone:
        return AllPartitionMapping()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
        )


@dataclass(frozen=True)
class PipelinePartitions:
    """Bar partitions (market data, perception), how they chunk time, and monthly walk-forward periods."""

    bars: TimeWindowPartitionsDefinition
    chunking: BarChunking
    walk_forward: MonthlyPartitionsDefinition


def build_partitions(settings: Settings) -> PipelinePartitions:
    plan = partition_plan(settings.data)
    chunking = bar_chunking(plan.timeframe, plan.calendars)
    return PipelinePartitions(
        bars=bar_partitions(chunking, plan.first_day, plan.last_day),
        chunking=chunking,
        walk_forward=walk_forward_partitions(plan.first_day, plan.last_day, settings.research.train_months),
    )
