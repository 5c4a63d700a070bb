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
            f"bars {_describe(duration)} apart match no timeframe; accepted: "
            + ", ".join(f"{timeframe} ({_describe(timeframe.duration)})" for timeframe in cls)
        )

    @classmethod
    def from_trendbar_period(cls, period: int) -> Timeframe:
        """The timeframe cTrader means by `period` (a GetTrendbars answer names the period of its bars)."""
        for timeframe in cls:
            if timeframe.trendbar_period == period:
                return timeframe
        raise TimeframeError(
            f"cTrader trendbar period {period!r} is not one we use; accepted: "
            + ", ".join(f"{timeframe}={timeframe.trendbar_period}" for timeframe in cls)
        )


def _describe(duration: timedelta) -> str:
    minutes = duration / timedelta(minutes=1)
    if minutes < 60 or minutes % 60:
        return f"{minutes:g} minutes"
    hours = minutes / 60
    return f"{hours:g} hours" if hours < 24 or hours % 24 else f"{hours / 24:g} days"


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
        stretch_opens = np.array([open_.value for open_, _ in stretches], dtype="int64")
        stretch_closes = np.array([close.value for _, close in stretches], dtype="int64")
        following = np.searchsorted(stretch_closes, grid.asi8, side="right")
        overlaps = following < len(stretches)
        overlaps[overlaps] = stretch_opens[following[overlaps]] < grid.asi8[overlaps] + step.value
        labels = grid[overlaps]
    labels = pd.DatetimeIndex(labels).astype(UTC_DTYPE)
    return labels[(labels >= first) & (labels < last)]
