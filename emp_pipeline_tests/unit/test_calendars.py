"""Trading calendars: trading days, the FX week and its New York rollover across DST, exchange sessions."""

from __future__ import annotations

from datetime import date

import exchange_calendars
import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.calendars import (
    CalendarError,
    calendar_known_at,
    regular_session_stretches,
    rollover_times,
    scheduled_trading_days,
    trading_day_of,
    trading_day_window,
    trading_days,
    trading_intervals,
)


def _utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(stamp, tz="UTC") for stamp in stamps]


def _days(index: pd.DatetimeIndex) -> list[str]:
    return [stamp.strftime("%Y-%m-%d") for stamp in index]


def test_exchange_calendar_skips_weekends_and_holidays() -> None:
    days = trading_days("XNYS", date(2024, 12, 20), date(2025, 1, 2))
    assert str(days.dtype) == "datetime64[ns, UTC]"
    assert _days(days) == [
        "2024-12-20", "2024-12-23", "2024-12-24", "2024-12-26", "2024-12-27", "2024-12-30", "2024-12-31",
        "2025-01-02",
    ]  # fmt: skip
    assert (days == days.normalize()).all()


def test_exchange_calendar_covers_old_sample_years_inclusively() -> None:
    days = trading_days("XNYS", "1999-01-04", "2018-12-31")
    assert len(days) == 5031  # the bundled S&P 500 file has exactly one bar per session
    assert days[0] == pd.Timestamp("1999-01-04", tz="UTC") and days[-1] == pd.Timestamp(
        "2018-12-31", tz="UTC"
    )


def test_round_the_clock_calendars() -> None:
    assert _days(trading_days("24x5", date(2024, 12, 20), date(2024, 12, 25))) == [
        "2024-12-20", "2024-12-23", "2024-12-24", "2024-12-25",
    ]  # fmt: skip
    assert len(trading_days("24x7", date(2024, 12, 20), date(2024, 12, 26))) == 7
    assert str(trading_days("24x7", date(2024, 1, 1), date(2024, 1, 2)).dtype) == "datetime64[ns, UTC]"


def test_trading_days_edge_cases() -> None:
    assert len(trading_days("XNYS", date(2024, 1, 5), date(2024, 1, 1))) == 0
    assert len(trading_days("XNYS", date(2024, 12, 25), date(2024, 12, 25))) == 0
    assert _days(
        trading_days("XNYS", pd.Timestamp("2024-07-05 15:00", tz="America/New_York"), "2024-07-05")
    ) == ["2024-07-05"]
    with pytest.raises(CalendarError, match="unknown calendar 'MOON'"):
        trading_days("MOON", date(2024, 1, 1), date(2024, 1, 5))
    with pytest.raises(CalendarError, match=r"calendar 'AIXK' cannot cover 2005-01-03\.\.2005-01-31"):
        trading_days("AIXK", date(2005, 1, 3), date(2005, 1, 31))  # the exchange opened in 2017


@pytest.mark.parametrize(
    ("sunday", "open_utc", "friday_close_utc"),
    [
        ("2017-03-05", "2017-03-05 22:00", "2017-03-10 22:00"),  # winter: New York is UTC-5
        ("2017-03-12", "2017-03-12 21:00", "2017-03-17 21:00"),  # DST began at 02:00 that Sunday: UTC-4
        ("2017-10-29", "2017-10-29 21:00", "2017-11-03 21:00"),
        ("2017-11-05", "2017-11-05 22:00", "2017-11-10 22:00"),  # DST ended at 02:00 that Sunday
    ],
)
def test_fx_week_opens_sunday_and_closes_friday_at_17_new_york_across_dst(
    sunday: str, open_utc: str, friday_close_utc: str
) -> None:
    monday = pd.Timestamp(sunday) + pd.Timedelta(days=1)
    [(opened, closed)] = trading_intervals("24x5", monday, monday + pd.Timedelta(hours=1))
    assert (opened, closed) == tuple(_utc(open_utc, friday_close_utc))
    assert opened.tz_convert("America/New_York").hour == 17 == closed.tz_convert("America/New_York").hour


def test_fx_week_is_found_from_any_time_inside_it() -> None:
    for text in ("2017-03-13 10:00", "2017-03-17 20:59", "2017-11-06 23:30"):
        start = pd.Timestamp(text, tz="UTC")
        [(opened, closed)] = trading_intervals("24x5", start, start + pd.Timedelta(minutes=1))
        assert opened <= start < closed
        assert opened.day_of_week == 6 and closed.day_of_week == 4


def test_fx_weekend_is_closed_time_not_a_trading_day() -> None:
    friday_close, sunday_open = _utc("2017-01-06 22:00", "2017-01-08 22:00")
    weekend = pd.date_range(friday_close, sunday_open, freq="1h", inclusive="left")
    assert trading_day_of("24x5", weekend).isna().all()
    assert trading_intervals("24x5", friday_close, sunday_open) == []
    assert trading_days("24x5", date(2017, 1, 7), date(2017, 1, 8)).empty


@pytest.mark.parametrize(
    ("instant", "day"),
    [
        ("2017-03-10 21:59", "2017-03-10"),  # Friday 16:59 EST: still Friday
        ("2017-03-10 22:00", None),  # Friday 17:00 EST: the week is over
        ("2017-03-12 20:59", None),  # Sunday 16:59 EDT: not yet open
        ("2017-03-12 21:00", "2017-03-13"),  # Sunday 17:00 EDT: Monday's trading day begins
        ("2017-03-13 20:59", "2017-03-13"),  # Monday 16:59 EDT
        ("2017-03-13 21:00", "2017-03-14"),  # Monday 17:00 EDT: the rollover starts Tuesday
        ("2017-11-03 20:59", "2017-11-03"),  # Friday 16:59 EDT
        ("2017-11-05 21:59", None),  # Sunday 16:59 EST (DST ended that morning)
        ("2017-11-05 22:00", "2017-11-06"),
        ("2017-11-06 21:59", "2017-11-06"),
        ("2017-11-06 22:00", "2017-11-07"),
    ],
)
def test_fx_trading_day_boundary_is_the_new_york_rollover(instant: str, day: str | None) -> None:
    [label] = trading_day_of("24x5", [pd.Timestamp(instant, tz="UTC")])
    assert (None if pd.isna(label) else label) == (None if day is None else pd.Timestamp(day, tz="UTC"))


def test_fx_trading_day_window_and_rollovers_move_with_dst() -> None:
    assert trading_day_window("24x5", "2017-03-13") == tuple(_utc("2017-03-12 21:00", "2017-03-13 21:00"))
    assert trading_day_window("24x5", "2017-11-06") == tuple(_utc("2017-11-05 22:00", "2017-11-06 22:00"))
    assert trading_day_window("24x5", "2017-03-10") == tuple(_utc("2017-03-09 22:00", "2017-03-10 22:00"))
    with pytest.raises(CalendarError, match="does not trade on 2017-03-11"):
        trading_day_window("24x5", "2017-03-11")
    assert list(rollover_times("24x5", "2017-03-09", "2017-03-15")) == _utc(
        "2017-03-09 22:00", "2017-03-10 22:00", "2017-03-13 21:00", "2017-03-14 21:00"
    )
    assert list(rollover_times("24x5", "2017-11-03", "2017-11-07")) == _utc(
        "2017-11-03 21:00", "2017-11-06 22:00"
    )
    assert rollover_times("24x5", "2017-03-13 21:00", "2017-03-13 21:01")[0] == pd.Timestamp(
        "2017-03-13 21:00", tz="UTC"
    )  # the window is [start, end): a rollover exactly at start counts
    assert rollover_times("24x5", "2017-03-13 20:00", "2017-03-13 21:00").empty


def test_crypto_days_are_utc_days_and_never_close() -> None:
    assert trading_day_window("24x7", "2017-03-12") == tuple(_utc("2017-03-12", "2017-03-13"))
    assert list(trading_day_of("24x7", _utc("2017-03-11 23:59", "2017-03-12 00:00"))) == _utc(
        "2017-03-11", "2017-03-12"
    )
    assert list(rollover_times("24x7", "2017-03-10 12:00", "2017-03-12 12:00")) == _utc(
        "2017-03-11", "2017-03-12"
    )


def test_exchange_sessions_shift_in_utc_with_dst_and_keep_early_closes() -> None:
    assert trading_day_window("XNYS", "2017-03-10") == tuple(_utc("2017-03-10 14:30", "2017-03-10 21:00"))
    assert trading_day_window("XNYS", "2017-03-13") == tuple(_utc("2017-03-13 13:30", "2017-03-13 20:00"))
    assert trading_day_window("XNYS", "2017-11-24") == tuple(_utc("2017-11-24 14:30", "2017-11-24 18:00"))
    labels = trading_day_of(
        "XNYS", _utc("2017-03-13 13:29", "2017-03-13 13:30", "2017-03-13 19:59", "2017-03-13 20:00")
    )
    assert [None if pd.isna(label) else label for label in labels] == [
        None, pd.Timestamp("2017-03-13", tz="UTC"), pd.Timestamp("2017-03-13", tz="UTC"), None
    ]  # fmt: skip
    assert list(rollover_times("XNYS", "2017-03-10", "2017-03-14")) == _utc(
        "2017-03-10 21:00", "2017-03-13 20:00"
    )


def test_exchange_with_a_lunch_break_trades_in_two_stretches() -> None:
    assert trading_intervals("XHKG", "2017-03-10", "2017-03-11") == [
        tuple(_utc("2017-03-10 01:30", "2017-03-10 04:00")),
        tuple(_utc("2017-03-10 05:00", "2017-03-10 08:00")),
    ]
    assert [stretch.total_seconds() / 3600 for stretch in regular_session_stretches("XHKG")] == [2.5, 3.0]
    assert [stretch.total_seconds() / 3600 for stretch in regular_session_stretches("XNYS")] == [6.5]
    with pytest.raises(CalendarError, match="'24x5' is not an exchange calendar"):
        regular_session_stretches("24x5")
    with pytest.raises(CalendarError, match="unknown calendar 'MOON'"):
        trading_intervals("MOON", "2017-03-10", "2017-03-11")


def test_closures_announced_after_the_day_a_calendar_is_known_at_are_still_sessions():
    week = ("2012-10-22", "2012-11-02")
    actual = trading_days("XNYS", *week)
    assert pd.Timestamp("2012-10-29", tz="UTC") not in actual  # hurricane Sandy: 29-30 October closed
    with calendar_known_at("2012-10-26"):
        as_known = trading_days("XNYS", *week)
    assert len(as_known) == len(actual) + 2
    assert {pd.Timestamp(d, tz="UTC") for d in ("2012-10-29", "2012-10-30")} <= set(as_known)
    with calendar_known_at("2012-10-31"):  # the closure has happened: known
        assert trading_days("XNYS", *week).equals(actual)
    with calendar_known_at("2012-10-26"):  # regular holidays were always known
        assert pd.Timestamp("2012-11-22", tz="UTC") not in trading_days("XNYS", "2012-11-19", "2012-11-23")
    assert trading_days("XNYS", *week).equals(actual)  # outside, the calendar knows everything


def test_an_exchange_instant_outside_every_session_on_its_own_has_no_trading_day() -> None:
    """A daily bar's midnight label alone (what a live tick asks): no session overlaps it, so NaT."""
    assert trading_day_of("XNYS", _utc("2013-02-01")).isna().all()
    assert trading_day_of("XNYS", _utc("2013-02-02", "2013-02-03")).isna().all()  # a weekend


@pytest.mark.parametrize("calendar", ["XNYS", "XLON", "XHKG", "XFRA", "XASX"])
def test_scheduled_days_of_any_range_are_the_weekdays_less_the_rules_holidays_in_it(calendar: str) -> None:
    """The holidays are cached by whole years; any range, starting and ending anywhere in a year, must see
    exactly what the exchange's holiday rules give when asked for that range alone."""
    rng = np.random.default_rng(7)
    exchange = exchange_calendars.get_calendar(calendar, start="2000-01-01", end="2025-12-31")
    for _ in range(40):
        first = pd.Timestamp("2000-01-01") + pd.Timedelta(days=int(rng.integers(0, 22 * 365)))
        last = first + pd.Timedelta(days=int(rng.integers(0, 3 * 365)))
        weekdays = pd.bdate_range(first, last, freq="C", weekmask=exchange.weekmask)
        expected = weekdays[~weekdays.isin(exchange.regular_holidays.holidays(first, last))]
        assert list(scheduled_trading_days(calendar, first, last).tz_localize(None)) == list(expected), (
            calendar,
            first,
            last,
        )
