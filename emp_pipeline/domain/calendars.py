"""Trading calendars: when an instrument's market is open, what its trading days are, where a day ends.

Three kinds, named by the `calendar` field of an instrument:
- '24x5' (FX, and CFDs on Globex futures): the trading week runs from Sunday 17:00 to Friday 17:00 New York
  time, and each trading day ends at 17:00 New York (the daily rollover, when overnight financing is booked).
  Trading day D (Monday..Friday) is [D-1 17:00, D 17:00) New York time. New York's daylight saving time moves
  these boundaries in UTC: 22:00 UTC in winter (EST, UTC-5), 21:00 UTC in summer (EDT, UTC-4). Weekends are
  closed time, never gaps; no holidays are modelled (the interbank market trades through them, thinly).
- '24x7' (crypto): always open; trading day D is the UTC calendar day, ending at 00:00 UTC.
- an exchange_calendars code ('XNYS', 'XNAS', 'XLON', ...): the exchange's sessions, holidays and early
  closes (and lunch breaks where the exchange has them); a trading day is a session, ending at its close.

Daily bars are labelled by their trading day at midnight UTC. Intraday bar grids (which bar open times a
calendar has) are built in `domain/timeframes.py` from `trading_intervals` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, time, timedelta
from functools import lru_cache

import exchange_calendars
import numpy as np
import pandas as pd

CALENDAR_24X5 = "24x5"
CALENDAR_24X7 = "24x7"
ROUND_THE_CLOCK_CALENDARS = (CALENDAR_24X5, CALENDAR_24X7)

NEW_YORK = "America/New_York"
FX_DAY_END = time(17, 0)  # New York wall-clock time of the FX rollover and of the week's open and close
_FX_DAY_SHIFT = timedelta(hours=24) - timedelta(hours=FX_DAY_END.hour, minutes=FX_DAY_END.minute)

UTC_DTYPE = "datetime64[ns, UTC]"


class CalendarError(ValueError):
    """An unknown calendar, or a range the calendar cannot cover; the message says what to use instead."""


# The day the exchange calendars are known as of (None: all the calendar library knows, ad-hoc closures
# included). Set by `calendar_known_at`, read by `trading_days`.
_KNOWN_AS_OF: ContextVar[pd.Timestamp | None] = ContextVar("calendar_known_as_of", default=None)


@contextmanager
def calendar_known_at(day: date | str | pd.Timestamp) -> Iterator[None]:
    """Inside, exchange calendars are what was known at the close of ``day``: an ad-hoc closure after it
    (9/11, hurricane Sandy) had not been announced, so `trading_days` lists its days as the scheduled
    sessions they were. The look-ahead analysis recomputes features on data cut at a bar inside this, so a
    feature reading closures nobody knew yet differs from its full-data value and is named (issue 13)."""
    token = _KNOWN_AS_OF.set(_as_day(day))
    try:
        yield
    finally:
        _KNOWN_AS_OF.reset(token)


def is_known_calendar(calendar: str) -> bool:
    return calendar in ROUND_THE_CLOCK_CALENDARS or calendar in _exchange_calendar_names()


def is_exchange_calendar(calendar: str) -> bool:
    return calendar not in ROUND_THE_CLOCK_CALENDARS and calendar in _exchange_calendar_names()


@lru_cache(maxsize=1)
def _exchange_calendar_names() -> frozenset[str]:
    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


def _unknown(calendar: str) -> CalendarError:
    return CalendarError(f"unknown calendar {calendar!r}; use '24x5', '24x7' or an exchange_calendars code")


def as_utc(value: date | str | pd.Timestamp) -> pd.Timestamp:
    """A timestamp in UTC; a naive value (or a bare date) is read as UTC."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _as_day(value: date | str | pd.Timestamp) -> pd.Timestamp:
    """The calendar day a value names, as a naive midnight (a timezone-aware value keeps its own day)."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_localize(None)
    return stamp.normalize()


def _utc_index(values: object) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(values)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.astype(UTC_DTYPE).rename(None)


@lru_cache(maxsize=32)
def _exchange_calendar(calendar: str, first_year: int, last_year: int) -> exchange_calendars.ExchangeCalendar:
    """An exchange calendar over whole years; cached because building one takes ~0.1-0.3 s."""
    return exchange_calendars.get_calendar(calendar, start=f"{first_year}-01-01", end=f"{last_year}-12-31")


def _exchange_covering(
    calendar: str, first: pd.Timestamp, last: pd.Timestamp
) -> exchange_calendars.ExchangeCalendar:
    """A calendar covering whole years around [first, last].

    Decade-aligned years first, so callers walking partitions day by day share one cached calendar; then
    exactly the years asked for, since some calendars start late or record holidays only a year ahead.
    """
    last_year = max(last.year, pd.Timestamp.now().year)
    spans = dict.fromkeys([(first.year - first.year % 10, last_year), (first.year, last.year)])
    failure: Exception | None = None
    for first_year, through_year in spans:
        try:
            return _exchange_calendar(calendar, first_year, through_year)
        except Exception as error:  # exchange_calendars raises several unrelated types for bad ranges
            failure = error
    raise CalendarError(
        f"calendar {calendar!r} cannot cover {first.date()}..{last.date()}: {failure}; "
        "use '24x5' or another exchange code for this range"
    ) from failure


def trading_days(
    calendar: str, start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
) -> pd.DatetimeIndex:
    """Trading days in [start, end] (inclusive, by calendar day) as UTC-midnight timestamps.

    '24x5' is Monday to Friday, '24x7' every day, an exchange code its sessions (holidays excluded).
    """
    first, last = _as_day(start), _as_day(end)
    if last < first:
        return pd.DatetimeIndex([], dtype=UTC_DTYPE)
    if calendar == CALENDAR_24X7:
        days = pd.date_range(first, last, freq="D")
    elif calendar == CALENDAR_24X5:
        days = pd.bdate_range(first, last)
    elif calendar in _exchange_calendar_names():
        sessions = pd.DatetimeIndex(_exchange_covering(calendar, first, last).sessions).tz_localize(None)
        days = sessions[(sessions >= first) & (sessions <= last)]
        known_as_of = _KNOWN_AS_OF.get()
        if known_as_of is not None and known_as_of < last:
            unannounced = scheduled_trading_days(
                calendar, max(first, known_as_of + pd.Timedelta(days=1)), last
            )
            days = days.union(unannounced.tz_localize(None))
    else:
        raise _unknown(calendar)
    return _utc_index(days)


def _fx_weeks(first: pd.Timestamp, last: pd.Timestamp) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """(opens, closes) in UTC of the FX trading weeks that overlap [first, last]."""
    sundays = pd.date_range(
        first.tz_convert(NEW_YORK).tz_localize(None).normalize() - pd.Timedelta(days=7),
        last.tz_convert(NEW_YORK).tz_localize(None).normalize() + pd.Timedelta(days=1),
        freq="W-SUN",
        normalize=True,
    )
    local_open = sundays + pd.Timedelta(hours=FX_DAY_END.hour, minutes=FX_DAY_END.minute)
    opens = _utc_index(local_open.tz_localize(NEW_YORK))
    closes = _utc_index((local_open + pd.Timedelta(days=5)).tz_localize(NEW_YORK))
    return opens, closes


def _exchange_sessions_between(calendar: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
    """Schedule rows (open, break_start, break_end, close, UTC) of the sessions overlapping [first, last]."""
    exchange = _exchange_covering(calendar, first - pd.Timedelta(days=2), last + pd.Timedelta(days=2))
    schedule = exchange.schedule
    overlapping = (schedule["close"] > first) & (schedule["open"] <= last)
    return schedule.loc[overlapping]


def trading_intervals(
    calendar: str, start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The [open, close) stretches of time in UTC during which the market trades, overlapping [start, end).

    FX: one stretch per trading week; crypto: the whole window; an exchange: one per session, or two for a
    session with a lunch break. Stretches are returned whole (they may begin before `start`).
    """
    first, last = as_utc(start), as_utc(end)
    if last <= first:
        return []
    if calendar == CALENDAR_24X7:
        return [(first, last)]
    if calendar == CALENDAR_24X5:
        opens, closes = _fx_weeks(first, last)
        keep = (closes > first) & (opens < last)
        return list(zip(opens[keep], closes[keep], strict=True))
    if calendar not in _exchange_calendar_names():
        raise _unknown(calendar)
    stretches: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for row in _exchange_sessions_between(calendar, first, last).itertuples(index=False):
        if pd.isna(row.break_start):
            stretches.append((row.open, row.close))
        else:
            stretches.extend([(row.open, row.break_start), (row.break_end, row.close)])
    return [(open_, close) for open_, close in stretches if close > first and open_ < last]


def trading_day_of(calendar: str, instants: object) -> pd.DatetimeIndex:
    """The trading day (UTC midnight label) each instant belongs to; NaT where the market is closed.

    An FX instant belongs to the day whose 17:00 New York close comes next (Sunday 18:00 New York is
    Monday's); a crypto instant to its UTC day; an exchange instant to the session trading at that time.
    """
    stamps = _utc_index(instants)
    if len(stamps) == 0:
        return stamps
    if calendar == CALENDAR_24X7:
        return stamps.normalize()
    if calendar == CALENDAR_24X5:
        local = stamps.tz_convert(NEW_YORK).tz_localize(None) + _FX_DAY_SHIFT
        days = _utc_index(local.normalize())
        return days.where(days.day_of_week < 5)
    if calendar not in _exchange_calendar_names():
        raise _unknown(calendar)
    sessions = _exchange_sessions_between(calendar, stamps.min(), stamps.max())
    if sessions.empty:  # no session overlaps the instants (a daily bar's midnight label on its own)
        return pd.DatetimeIndex([pd.NaT] * len(stamps), tz="UTC")
    opens = _utc_index(sessions["open"]).asi8
    closes = _utc_index(sessions["close"]).asi8
    position = np.searchsorted(opens, stamps.asi8, side="right") - 1
    inside = (position >= 0) & (stamps.asi8 < closes[np.clip(position, 0, None)])
    labels = _utc_index(pd.DatetimeIndex(sessions.index)[np.clip(position, 0, None)])
    return labels.where(inside)


def trading_day_window(calendar: str, day: date | str | pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) in UTC of trading day `day`; CalendarError if the calendar does not trade that day.

    This is the span a day partition of intraday bars covers: FX day D is [D-1 17:00, D 17:00) New York
    time, a crypto day its UTC day, an exchange day its session from open to close.
    """
    label = _as_day(day)
    if not len(trading_days(calendar, label, label)):
        raise CalendarError(f"calendar {calendar!r} does not trade on {label.date()}")
    if calendar == CALENDAR_24X7:
        start = as_utc(label)
        return start, start + pd.Timedelta(days=1)
    if calendar == CALENDAR_24X5:
        end_local = label + pd.Timedelta(hours=FX_DAY_END.hour, minutes=FX_DAY_END.minute)
        end = as_utc(end_local.tz_localize(NEW_YORK))
        start = as_utc((end_local - pd.Timedelta(days=1)).tz_localize(NEW_YORK))
        return start, end
    session = _exchange_covering(calendar, label, label).schedule.loc[label]
    return as_utc(session["open"]), as_utc(session["close"])


def rollover_times(
    calendar: str, start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
) -> pd.DatetimeIndex:
    """The ends of trading days in [start, end), in UTC: when a position held overnight is financed.

    FX: 17:00 New York every Monday..Friday (21:00 or 22:00 UTC with daylight saving); crypto: 00:00 UTC
    every day; an exchange: each session's close. Which rollover counts triple is an instrument term
    (`InstrumentMeta.swap_triple_weekday`), not a calendar fact.
    """
    first, last = as_utc(start), as_utc(end)
    if last <= first:
        return pd.DatetimeIndex([], dtype=UTC_DTYPE)
    days = trading_days(calendar, first - pd.Timedelta(days=1), last + pd.Timedelta(days=1))
    if calendar == CALENDAR_24X7:
        ends = days + pd.Timedelta(days=1)
    elif calendar == CALENDAR_24X5:
        local = days.tz_localize(None) + pd.Timedelta(hours=FX_DAY_END.hour, minutes=FX_DAY_END.minute)
        ends = _utc_index(local.tz_localize(NEW_YORK))
    else:
        schedule = _exchange_covering(calendar, days.min(), days.max()).schedule
        ends = _utc_index(schedule.loc[days.tz_localize(None), "close"])
    return ends[(ends >= first) & (ends < last)]


@lru_cache(maxsize=64)
def regular_session_stretches(calendar: str) -> tuple[timedelta, ...]:
    """How long an exchange's regular session trades: one duration, or two around a lunch break.

    Read from the calendar's current regular open, close and break times (not from any particular day), so
    the answer does not depend on the date it is asked.
    """
    if not is_exchange_calendar(calendar):
        raise CalendarError(f"{calendar!r} is not an exchange calendar; it has no regular session")
    exchange = exchange_calendars.get_calendar(calendar)
    reference = pd.Timestamp("2000-01-03")  # any day: only wall-clock differences are used

    def at(times: tuple, offset: int = 0) -> pd.Timestamp:
        wall = times[-1][1]
        return reference + pd.Timedelta(days=offset, hours=wall.hour, minutes=wall.minute)

    open_ = at(exchange.open_times, exchange.open_offset)
    close = at(exchange.close_times, exchange.close_offset)
    if exchange.break_start_times:
        return (
            (at(exchange.break_start_times) - open_).to_pytimedelta(),
            (close - at(exchange.break_end_times)).to_pytimedelta(),
        )
    return ((close - open_).to_pytimedelta(),)


def scheduled_trading_days(
    calendar: str, start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
) -> pd.DatetimeIndex:
    """Trading days in [start, end] as scheduled in advance: ``trading_days`` without ad-hoc closures.

    An exchange's schedule here is its trading weekdays minus its regular holiday rules (New Year, Good
    Friday, Thanksgiving, ...); ad-hoc closures (9/11, hurricane Sandy, days of mourning) are left out,
    because nobody knew them until shortly before, and a feature must not know them earlier.
    '24x5' and '24x7' have no holidays: the same days as ``trading_days``.
    """
    if calendar in ROUND_THE_CLOCK_CALENDARS:
        return trading_days(calendar, start, end)
    if calendar not in _exchange_calendar_names():
        raise _unknown(calendar)
    first, last = _as_day(start), _as_day(end)
    if last < first:
        return pd.DatetimeIndex([], dtype=UTC_DTYPE)
    exchange = _exchange_covering(calendar, first, last)
    weekdays = pd.bdate_range(first, last, freq="C", weekmask=exchange.weekmask)
    holidays = _regular_holidays_of_years(calendar, first.year, last.year)
    return _utc_index(weekdays[~weekdays.isin(holidays)])


@lru_cache(maxsize=256)
def _regular_holidays_of_years(calendar: str, first_year: int, last_year: int) -> pd.DatetimeIndex:
    """An exchange's regular holidays in whole years. Cached because pandas evaluates every holiday rule
    afresh on each call (~0.15 s) and the look-ahead gate's truncations and the year-anchored features ask
    for the same years hundreds of times; a rule's dates in a year do not depend on the range asked."""
    first, last = pd.Timestamp(first_year, 1, 1), pd.Timestamp(last_year, 12, 31)
    exchange = _exchange_covering(calendar, first, last)
    return pd.DatetimeIndex(exchange.regular_holidays.holidays(first, last)).as_unit("ns")
