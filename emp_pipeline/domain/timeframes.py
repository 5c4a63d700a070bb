"""Bar sizes: cTrader's timeframes, what each one lasts and the code the venue knows it by.

A universe (and every data set read for it) declares one timeframe. Windows, warm-ups and annualisation are
counted in bars of that timeframe: `periods_per_year` is the one place that says how many bars make a year,
and `bar_open_times` lists the bars a trading calendar (`domain/calendars.py`) has in a window. The set is
cTrader's `ProtoOATrendbarPeriod` minus the sizes no strategy here
uses (M2, M3, M4, M10, H12, MN1): every timeframe we accept can be fetched from the venue we trade on.

A bar is labelled by its open time: the H1 bar labelled 14:00 UTC holds the prices of [14:00, 15:00).
D1 and W1 bars are labelled by the trading day (or the Monday of the trading week) at midnight UTC, the
convention the daily pipeline has always used.

Intraday grids: on the round-the-clock calendars ('24x5', '24x7') bars open on multiples of the duration
since midnight UTC (H4 at 00, 04, ..., 20 UTC), as cTrader's server-time (UTC) charts do, and a bar exists
when any part of it lies in trading time (so the FX week's first H4 bar opens at 20:00 UTC on a winter
Sunday, two hours before the market). On an exchange, bars start at each session's open (09:30, 10:30, ...
New York for XNYS H1) and the last one is cut short by the close, as exchanges and Yahoo label them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

import numpy as np
import pandas as pd

from emp_pipeline.domain.calendars import (
    CALENDAR_24X5,
    CALENDAR_24X7,
    UTC_DTYPE,
    CalendarError,
    as_utc,
    is_exchange_calendar,
    regular_session_stretches,
    trading_days,
    trading_intervals,
)


class TimeframeError(ValueError):
    """Text or a duration that is not one of the accepted timeframes; the message lists them."""


class Timeframe(StrEnum):
    """One of cTrader's bar sizes; the value is the name written in universe files and shown in the UI."""

    M1 = "M1"
    M5 = "M5"
    M15 = "M15"
    M30 = "M30"
    H1 = "H1"
    H4 = "H4"
    D1 = "D1"
    W1 = "W1"

    @property
    def duration(self) -> timedelta:
        """How long one bar lasts (a D1 bar one calendar day, a W1 bar seven, whatever the sessions)."""
        return _DURATIONS[self]

    @property
    def trendbar_period(self) -> int:
        """The `ProtoOATrendbarPeriod` number cTrader's GetTrendbars request takes for this timeframe."""
        return _TRENDBAR_PERIODS[self]

    @property
    def is_intraday(self) -> bool:
        """True for bars shorter than a day, which are labelled by their open time rather than their day."""
        return self.duration < timedelta(days=1)

    @classmethod
    def parse(cls, text: object) -> Timeframe:
        """'H1', 'h1' or ' H1 ' -> Timeframe.H1; anything else raises TimeframeError naming the choices."""
        if isinstance(text, Timeframe):
            return text
        if isinstance(text, str):
            try:
                return cls(text.strip().upper())
            except ValueError:
                pass
        raise TimeframeError(f"unknown timeframe {text!r}; use one of {', '.join(cls)}")

    @classmethod
    def from_duration(cls, duration: timedelta) -> Timeframe:
        """The timeframe whose bars last exactly `duration` (how a file's spacing names its timeframe)."""
        for timeframe in cls:
            if timeframe.duration == duration:
                return timeframe
        raise TimeframeError(
            f"bars {describe_duration(duration)} apart match no timeframe; accepted: "
            + ", ".join(f"{timeframe} ({describe_duration(timeframe.duration)})" for timeframe in cls)
        )


def describe_duration(duration: timedelta) -> str:
    """'30 minutes', '1 hour', '4 hours', '7 days': how messages name a spacing."""
    minutes = duration / timedelta(minutes=1)
    if minutes < 60 or minutes % 60:
        amount, unit = minutes, "minute"
    elif minutes < 24 * 60 or minutes % (24 * 60):
        amount, unit = minutes / 60, "hour"
    else:
        amount, unit = minutes / (24 * 60), "day"
    return f"{amount:g} {unit}{'' if amount == 1 else 's'}"


_DURATIONS: dict[Timeframe, timedelta] = {
    Timeframe.M1: timedelta(minutes=1),
    Timeframe.M5: timedelta(minutes=5),
    Timeframe.M15: timedelta(minutes=15),
    Timeframe.M30: timedelta(minutes=30),
    Timeframe.H1: timedelta(hours=1),
    Timeframe.H4: timedelta(hours=4),
    Timeframe.D1: timedelta(days=1),
    Timeframe.W1: timedelta(days=7),
}

# ProtoOATrendbarPeriod (spotware/openapi-proto-messages, OpenApiModelMessages.proto).
_TRENDBAR_PERIODS: dict[Timeframe, int] = {
    Timeframe.M1: 1,
    Timeframe.M5: 5,
    Timeframe.M15: 7,
    Timeframe.M30: 8,
    Timeframe.H1: 9,
    Timeframe.H4: 10,
    Timeframe.D1: 12,
    Timeframe.W1: 13,
}


# Trading days in a year by calendar kind, and weeks in a year. An exchange year is 252 sessions by the
# convention every daily figure in this project has used (bit-identical daily results depend on it); the FX
# year is 52 weeks of 5 days; crypto trades all 365 days.
EXCHANGE_DAYS_PER_YEAR = 252
FX_DAYS_PER_YEAR = 5 * 52
CRYPTO_DAYS_PER_YEAR = 365
WEEKS_PER_YEAR = 52


def periods_per_year(timeframe: Timeframe, calendar: str) -> int:
    """How many bars of `timeframe` one year holds on `calendar`: THE annualisation factor.

    - W1: 52 on every calendar.
    - D1: 252 on an exchange, 260 (5 x 52) on '24x5', 365 on '24x7'.
    - intraday on '24x5' / '24x7': trading days x bars in 24 hours (FX H1 = 24 x 5 x 52 = 6,240; crypto
      H1 = 24 x 365 = 8,760; FX M1 = 1,440 x 260 = 374,400).
    - intraday on an exchange: 252 x bars in its regular session, the last bar of a session (or of a
      morning before a lunch break) counting whole although the close cuts it short (XNYS, 09:30-16:00:
      H1 = 252 x 7 = 1,764; M30 = 252 x 13 = 3,276; H4 = 252 x 2 = 504). Early closes are ignored.
    """
    timeframe = Timeframe.parse(timeframe)
    if timeframe is Timeframe.W1:
        return WEEKS_PER_YEAR
    if calendar == CALENDAR_24X5:
        days = FX_DAYS_PER_YEAR
    elif calendar == CALENDAR_24X7:
        days = CRYPTO_DAYS_PER_YEAR
    elif is_exchange_calendar(calendar):
        if timeframe is Timeframe.D1:
            return EXCHANGE_DAYS_PER_YEAR
        per_session = sum(
            math.ceil(stretch / timeframe.duration) for stretch in regular_session_stretches(calendar)
        )
        return EXCHANGE_DAYS_PER_YEAR * per_session
    else:
        raise CalendarError(
            f"unknown calendar {calendar!r}; use '24x5', '24x7' or an exchange_calendars code"
        )
    return days * (timedelta(days=1) // timeframe.duration) if timeframe.is_intraday else days


def _overlaps(
    stretches: list[tuple[pd.Timestamp, pd.Timestamp]], opens: pd.DatetimeIndex, step: pd.Timedelta
) -> np.ndarray:
    """For each bar [open, open + step), whether it shares any time with the (sorted) trading stretches."""
    starts = opens.as_unit("ns").asi8
    stretch_opens = np.array([open_.value for open_, _ in stretches], dtype="int64")
    stretch_closes = np.array([close.value for _, close in stretches], dtype="int64")
    following = np.searchsorted(stretch_closes, starts, side="right")
    overlaps = following < len(stretches)
    overlaps[overlaps] = stretch_opens[following[overlaps]] < starts[overlaps] + step.value
    return overlaps


def bar_open_times(
    calendar: str,
    timeframe: Timeframe,
    start: date | str | pd.Timestamp,
    end: date | str | pd.Timestamp,
) -> pd.DatetimeIndex:
    """Open times (labels, UTC) of every bar `calendar` has for `timeframe` with start <= label < end.

    What a complete data set holds, so a bar missing from it is a gap and closed time (an FX weekend, an
    exchange night) is not. Daily and weekly labels are midnight UTC of the trading day / of the Monday.
    """
    timeframe = Timeframe.parse(timeframe)
    first, last = as_utc(start), as_utc(end)
    if last <= first:
        return pd.DatetimeIndex([], dtype=UTC_DTYPE)
    if not timeframe.is_intraday:
        days = trading_days(calendar, first.normalize(), last)
        if timeframe is Timeframe.W1:
            days = pd.DatetimeIndex(days - pd.to_timedelta(days.day_of_week, unit="D")).unique()
        return days[(days >= first) & (days < last)]
    step = pd.Timedelta(timeframe.duration)
    stretches = trading_intervals(calendar, first, last)
    if not stretches:
        return pd.DatetimeIndex([], dtype=UTC_DTYPE)
    if is_exchange_calendar(calendar):
        opens = [pd.date_range(open_, close - pd.Timedelta(1), freq=step) for open_, close in stretches]
        labels = opens[0].append(opens[1:]) if len(opens) > 1 else opens[0]
    else:
        grid = pd.date_range(first.floor(step), last, freq=step, inclusive="left").as_unit("ns")
        labels = grid[_overlaps(stretches, grid, step)]
    labels = pd.DatetimeIndex(labels).astype(UTC_DTYPE)
    return labels[(labels >= first) & (labels < last)]


@dataclass(frozen=True)
class ChunkDays:
    """The UTC days a chunk of time (a partition's window) covers, as far as `now` reaches.

    A chunk in progress (the current month of daily bars) is normal: it covers the days up to today, and
    its bars are final only through yesterday, so gaps are expected only until then.
    """

    first_day: date
    last_day: date
    closed_through: date  # may fall before first_day: nothing in the chunk is final yet

    def within(self, first: date, last: date | None) -> ChunkDays:
        """The days of the chunk inside [first, last] (a data set's declared range; None = open)."""
        last_day = min(self.last_day, last) if last else self.last_day
        closed = min(self.closed_through, last) if last else self.closed_through
        return ChunkDays(max(self.first_day, first), last_day, closed)


def bar_chunk_days(
    start: date | str | pd.Timestamp,
    end: date | str | pd.Timestamp,
    timeframe: Timeframe,
    now: date | str | pd.Timestamp,
) -> ChunkDays:
    """The days of the window [start, end) (UTC instants) that bars of `timeframe` can have by `now`.

    Daily and weekly bars are labelled at midnight, so the window's last day is the one before `end`;
    intraday bars open at instants, so it is the day of the last instant before `end` (or before `now`).
    """
    first, last, moment = as_utc(start), as_utc(end), as_utc(now)
    if Timeframe.parse(timeframe).is_intraday:
        last_day = (min(last, moment) - pd.Timedelta(1)).date()
    else:
        last_day = min((last - pd.Timedelta(days=1)).date(), moment.date())
    last_day = max(last_day, first.date())
    return ChunkDays(first.date(), last_day, min(last_day, moment.date() - timedelta(days=1)))


# Daily bars stamped in local time are 23 to 25 hours apart around DST changes, intraday ones at most 4 hours.
_DAY_LEVEL_SPACING = timedelta(hours=20)
_WEEK_LEVEL_SPACING = timedelta(days=6)
# Three steps in a row at a coarser bar size inside finer data are taken for a second timeframe, not gaps.
COARSER_RUN_STEPS = 3


class BarSpacingError(ValueError):
    """Bar times no single timeframe explains; `positions` index the bars the message is about."""

    def __init__(self, message: str, positions: tuple[int, ...]) -> None:
        super().__init__(message)
        self.positions = positions


def detect_timeframe(open_times: pd.DatetimeIndex) -> Timeframe | None:
    """The timeframe bars at these (sorted, unique) open times have, read from their spacing.

    The closest two bars give the bar size; longer steps are gaps (a weekend, a night, a missing bar).
    Day-level spacing gives D1 (W1 when no two bars are under six days apart). None for fewer than two
    bars. BarSpacingError when the closest spacing is no timeframe's, or when runs of a coarser timeframe
    sit inside finer data (a file that mixes timeframes).
    """
    if len(open_times) < 2:
        return None
    steps = np.diff(pd.DatetimeIndex(open_times).as_unit("ns").asi8)
    if (steps <= 0).any():
        raise ValueError("detect_timeframe needs sorted, unique open times")
    closest = int(np.argmin(steps))
    shortest = pd.Timedelta(int(steps[closest]), unit="ns").to_pytimedelta()
    if shortest >= _DAY_LEVEL_SPACING:
        return Timeframe.W1 if shortest >= _WEEK_LEVEL_SPACING else Timeframe.D1
    try:
        timeframe = Timeframe.from_duration(shortest)
    except TimeframeError:
        sizes = ", ".join(f"{tf} = {describe_duration(tf.duration)}" for tf in Timeframe if tf.is_intraday)
        raise BarSpacingError(
            f"bars {describe_duration(shortest)} apart, a spacing no timeframe has ({sizes})",
            (closest, closest + 1),
        ) from None
    for coarser in Timeframe:
        if not timeframe.duration < coarser.duration < _DAY_LEVEL_SPACING:
            continue
        at_coarser = np.concatenate([[False], steps == pd.Timedelta(coarser.duration).value, [False]])
        edges = np.flatnonzero(np.diff(at_coarser.astype(np.int8)))
        for run_start, run_end in zip(edges[::2], edges[1::2], strict=True):
            if run_end - run_start >= COARSER_RUN_STEPS:
                raise BarSpacingError(
                    f"{run_end - run_start + 1} bars in a row {describe_duration(coarser.duration)} apart "
                    f"({coarser} bars) among bars {describe_duration(timeframe.duration)} apart "
                    f"({timeframe}): the data mixes timeframes",
                    (int(run_start), int(run_end)),
                )
    return timeframe


def outside_trading_time(calendar: str, timeframe: Timeframe, open_times: pd.DatetimeIndex) -> np.ndarray:
    """True for each intraday bar none of whose time lies in the calendar's trading time.

    Such a bar cannot exist (a Saturday FX bar, a 03:00 New York bar of an NYSE stock): most often the
    times are local time read as UTC. Daily and weekly labels are never flagged here.
    """
    times = pd.DatetimeIndex(open_times).as_unit("ns")
    if not timeframe.is_intraday or len(times) == 0:
        return np.zeros(len(times), dtype=bool)
    step = pd.Timedelta(timeframe.duration)
    return ~_overlaps(trading_intervals(calendar, times.min(), times.max() + step), times, step)


def off_bar_grid(calendar: str, timeframe: Timeframe, open_times: pd.DatetimeIndex) -> np.ndarray:
    """True for each intraday bar of a round-the-clock calendar that does not open on the UTC bar grid.

    FX and crypto bars open on whole multiples of their duration since midnight UTC (see the module doc);
    an H1 bar at 10:30 is off the grid. Exchange bars follow each session's open, so none is flagged.
    """
    times = pd.DatetimeIndex(open_times).as_unit("ns")
    if not timeframe.is_intraday or is_exchange_calendar(calendar):
        return np.zeros(len(times), dtype=bool)
    return times.asi8 % pd.Timedelta(timeframe.duration).value != 0
