"""Timeframes: names, durations, cTrader codes, annualisation per calendar and the bars a calendar has."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from emp_pipeline.domain.calendars import CalendarError
from emp_pipeline.domain.timeframes import (
    Timeframe,
    TimeframeError,
    bar_chunk_days,
    bar_open_times,
    periods_per_year,
)


def _utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(stamp, tz="UTC") for stamp in stamps]


def test_ctrader_set_with_durations_and_trendbar_period_codes() -> None:
    expected = {
        "M1": (timedelta(minutes=1), 1),
        "M5": (timedelta(minutes=5), 5),
        "M15": (timedelta(minutes=15), 7),
        "M30": (timedelta(minutes=30), 8),
        "H1": (timedelta(hours=1), 9),
        "H4": (timedelta(hours=4), 10),
        "D1": (timedelta(days=1), 12),
        "W1": (timedelta(days=7), 13),
    }
    assert {str(tf): (tf.duration, tf.trendbar_period) for tf in Timeframe} == expected
    assert [str(tf) for tf in Timeframe if tf.is_intraday] == ["M1", "M5", "M15", "M30", "H1", "H4"]
    assert Timeframe.from_duration(timedelta(minutes=15)) is Timeframe.M15


def test_parse_accepts_names_in_any_case_and_refuses_the_rest_clearly() -> None:
    assert Timeframe.parse("h1") is Timeframe.H1
    assert Timeframe.parse(" D1 ") is Timeframe.D1
    assert Timeframe.parse(Timeframe.M5) is Timeframe.M5
    for bad in ("H2", "1h", "", None, 60):
        with pytest.raises(
            TimeframeError, match=r"unknown timeframe .*; use one of M1, M5, M15, M30, H1, H4, D1, W1"
        ):
            Timeframe.parse(bad)
    with pytest.raises(
        TimeframeError,
        match=r"bars 2 hours apart match no timeframe; accepted: M1 \(1 minute\), M5 \(5 minutes\)",
    ):
        Timeframe.from_duration(timedelta(hours=2))


@pytest.mark.parametrize(
    ("timeframe", "fx", "crypto", "xnys", "xhkg"),
    [
        ("M1", 374_400, 525_600, 98_280, 83_160),
        ("M5", 74_880, 105_120, 19_656, 16_632),
        ("M15", 24_960, 35_040, 6_552, 5_544),
        ("M30", 12_480, 17_520, 3_276, 2_772),
        ("H1", 6_240, 8_760, 1_764, 1_512),  # XNYS 09:30-16:00 = 7 bars, XHKG 3 + 3 around lunch
        ("H4", 1_560, 2_190, 504, 504),
        ("D1", 260, 365, 252, 252),
        ("W1", 52, 52, 52, 52),
    ],
)
def test_periods_per_year_per_timeframe_and_calendar(
    timeframe: str, fx: int, crypto: int, xnys: int, xhkg: int
) -> None:
    calendars = ("24x5", "24x7", "XNYS", "XHKG")
    assert [periods_per_year(Timeframe(timeframe), calendar) for calendar in calendars] == [
        fx,
        crypto,
        xnys,
        xhkg,
    ]


def test_daily_exchange_annualisation_is_exactly_the_historical_252() -> None:
    factor = periods_per_year(Timeframe.D1, "XNYS")
    assert factor == 252 and isinstance(factor, int)
    assert periods_per_year(Timeframe.H1, "24x5") == 24 * 5 * 52
    with pytest.raises(CalendarError, match="unknown calendar 'MOON'"):
        periods_per_year(Timeframe.H1, "MOON")


def test_fx_hourly_bars_skip_the_weekend_and_follow_new_york_dst() -> None:
    # Friday 2017-03-10 closes at 22:00 UTC (17:00 EST); Sunday 2017-03-12 opens at 21:00 UTC (17:00 EDT).
    bars = bar_open_times("24x5", Timeframe.H1, "2017-03-10 20:00", "2017-03-12 23:00")
    assert list(bars) == _utc("2017-03-10 20:00", "2017-03-10 21:00", "2017-03-12 21:00", "2017-03-12 22:00")
    # Friday 2017-11-03 closes at 21:00 UTC (EDT); Sunday 2017-11-05 opens at 22:00 UTC (EST).
    bars = bar_open_times("24x5", Timeframe.H1, "2017-11-03 19:00", "2017-11-05 23:00")
    assert list(bars) == _utc("2017-11-03 19:00", "2017-11-03 20:00", "2017-11-05 22:00")


def test_a_year_of_fx_hourly_bars_is_52_weeks_of_120() -> None:
    bars = bar_open_times("24x5", Timeframe.H1, "2017-01-01 22:00", "2017-12-29 22:00")
    assert len(bars) == 52 * 120
    assert (bars[0], bars[-1]) == tuple(_utc("2017-01-01 22:00", "2017-12-29 21:00"))
    assert str(bars.dtype) == "datetime64[ns, UTC]"
    assert not bars.day_of_week.isin([5]).any()  # never a Saturday bar


def test_h4_grid_is_utc_aligned_and_keeps_bars_partly_in_the_week() -> None:
    bars = bar_open_times("24x5", Timeframe.H4, "2017-01-06 12:00", "2017-01-09 04:00")
    # Friday's 20:00 bar holds 20:00-22:00; Sunday's 20:00 bar holds the week's first two hours.
    assert list(bars) == _utc("2017-01-06 12:00", "2017-01-06 16:00", "2017-01-06 20:00", "2017-01-08 20:00",
                              "2017-01-09 00:00")  # fmt: skip


def test_exchange_bars_start_at_the_session_open_and_the_last_is_cut_by_the_close() -> None:
    bars = bar_open_times("XNYS", Timeframe.H1, "2017-03-10", "2017-03-14")
    friday = _utc(*(f"2017-03-10 {hour}:30" for hour in range(14, 21)))
    monday = _utc(*(f"2017-03-13 {hour}:30" for hour in range(13, 20)))  # DST: one hour earlier in UTC
    assert list(bars) == friday + monday
    early_close = bar_open_times("XNYS", Timeframe.H1, "2017-11-24", "2017-11-25")
    assert list(early_close) == _utc(
        "2017-11-24 14:30", "2017-11-24 15:30", "2017-11-24 16:30", "2017-11-24 17:30"
    )
    lunch = bar_open_times("XHKG", Timeframe.H1, "2017-03-10", "2017-03-11")
    assert list(lunch) == _utc("2017-03-10 01:30", "2017-03-10 02:30", "2017-03-10 03:30", "2017-03-10 05:00",
                               "2017-03-10 06:00", "2017-03-10 07:00")  # fmt: skip


def test_crypto_bars_never_stop_and_daily_weekly_labels_are_midnight_utc() -> None:
    assert len(bar_open_times("24x7", Timeframe.M15, "2017-03-11", "2017-03-13")) == 2 * 96
    assert list(bar_open_times("24x5", Timeframe.D1, "2017-03-10", "2017-03-14")) == _utc(
        "2017-03-10", "2017-03-13"
    )
    assert list(bar_open_times("24x7", Timeframe.D1, "2017-03-10", "2017-03-12")) == _utc(
        "2017-03-10", "2017-03-11"
    )
    assert list(bar_open_times("XNYS", Timeframe.W1, "2017-03-01", "2017-04-01")) == _utc(
        "2017-03-06", "2017-03-13", "2017-03-20", "2017-03-27"
    )
    assert bar_open_times("24x5", Timeframe.H1, "2017-03-10", "2017-03-10").empty


def test_a_past_month_chunk_covers_its_days_and_all_of_them_are_final():
    chunk = bar_chunk_days("2008-09-01", "2008-10-01", Timeframe.D1, "2024-01-01")
    assert (chunk.first_day, chunk.last_day, chunk.closed_through) == (
        date(2008, 9, 1),
        date(2008, 9, 30),
        date(2008, 9, 30),
    )


def test_the_month_in_progress_reaches_today_and_is_final_only_through_yesterday():
    chunk = bar_chunk_days("2025-03-01", "2025-04-01", Timeframe.D1, "2025-03-12T22:30:00+00:00")
    assert (chunk.last_day, chunk.closed_through) == (date(2025, 3, 12), date(2025, 3, 11))
    first = bar_chunk_days("2025-03-01", "2025-04-01", Timeframe.D1, "2025-03-01T08:00:00+00:00")
    assert first.closed_through < first.first_day  # nothing final yet: no gap can be reported


def test_an_fx_day_chunk_of_hourly_bars_spans_two_utc_days():
    chunk = bar_chunk_days(
        "2017-03-12T21:00:00+00:00", "2017-03-13T21:00:00+00:00", Timeframe.H1, "2018-01-01"
    )
    assert (chunk.first_day, chunk.last_day) == (date(2017, 3, 12), date(2017, 3, 13))


def test_a_chunk_is_cut_to_the_universes_declared_range():
    chunk = bar_chunk_days("2013-03-01", "2013-04-01", Timeframe.D1, "2024-01-01")
    cut = chunk.within(date(2004, 8, 19), date(2013, 3, 1))
    assert (cut.first_day, cut.last_day, cut.closed_through) == (date(2013, 3, 1),) * 3
    first = bar_chunk_days("2004-08-01", "2004-09-01", Timeframe.D1, "2024-01-01").within(
        date(2004, 8, 19), None
    )
    assert (first.first_day, first.last_day) == (date(2004, 8, 19), date(2004, 8, 31))
