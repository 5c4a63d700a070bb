"""Study windows: spans of time turned into bars of the timeframe, the daily figures unchanged."""

from __future__ import annotations

import pandas as pd
import pytest

from emp_pipeline.domain.study_windows import StudyWindowError, StudyWindows, universe_periods_per_year
from emp_pipeline.domain.timeframes import Timeframe, bar_open_times


def test_daily_exchange_windows_are_the_figures_the_daily_study_always_used():
    windows = StudyWindows.for_universe(Timeframe.D1, ["XNYS", "XNAS"])
    assert windows.periods_per_year == 252
    assert (windows.train_bars, windows.min_train_bars, windows.embargo_bars) == (756, 252, 5)
    assert (windows.regime_volatility_lookback, windows.regime_min_history) == (756, 252)
    assert windows.hmm_min_training_bars == 252


def test_fx_hourly_windows_are_the_same_spans_of_time_in_hours():
    windows = StudyWindows.for_universe("H1", ["24x5"])
    assert windows.periods_per_year == 6240  # 24 x 5 x 52
    assert windows.train_bars == 3 * 6240
    assert windows.embargo_bars == 120  # one FX week of hourly bars
    assert windows.hmm_min_training_bars == 6240
    assert StudyWindows(6240, train_months=3).train_bars == 1560


def test_regime_ranking_is_capped_in_bars_so_a_year_of_hourly_bars_has_labels():
    hourly = StudyWindows.for_universe("H1", ["24x5"])
    assert (hourly.regime_volatility_lookback, hourly.regime_min_history) == (1095, 365)
    assert hourly.regime_min_history < len(bar_open_times("24x5", Timeframe.H1, "2017-01-02", "2017-02-01"))
    # No daily or weekly span reaches the caps: their windows are the spans of time they always were.
    for timeframe, calendar, ranking, warmup in [
        ("D1", "XNYS", 756, 252),
        ("D1", "24x5", 780, 260),
        ("D1", "24x7", 1095, 365),
        ("W1", "XNYS", 156, 52),
    ]:
        windows = StudyWindows.for_universe(timeframe, [calendar])
        assert (windows.regime_volatility_lookback, windows.regime_min_history) == (ranking, warmup)


@pytest.mark.parametrize(
    ("timeframe", "calendars", "expected"),
    [
        ("D1", ["XNYS"], 252),
        ("D1", ["24x5"], 260),
        ("D1", ["XNYS", "24x5", "24x7"], 365),  # the panel is the union: crypto trades every day
        ("H1", ["24x5", "XNYS"], 6240),
        ("H1", ["24x7"], 8760),
        ("M1", ["24x5"], 374_400),
        ("W1", ["XNYS", "24x7"], 52),
    ],
)
def test_a_universe_is_annualised_with_its_most_open_calendar(timeframe, calendars, expected):
    assert universe_periods_per_year(timeframe, calendars) == expected


def test_an_empty_universe_or_a_window_below_one_is_refused_by_name():
    with pytest.raises(StudyWindowError, match="without instruments"):
        universe_periods_per_year("D1", [])
    with pytest.raises(StudyWindowError, match="train_months must be >= 1"):
        StudyWindows(252, train_months=0)
    with pytest.raises(StudyWindowError, match="periods_per_year must be >= 1"):
        StudyWindows(0)


def test_the_daily_training_lookback_holds_the_training_bars_even_with_holidays():
    windows = StudyWindows(252)
    days = windows.training_lookback_days
    for end in ("2010-01-01", "2013-07-15"):
        weekdays = int((pd.date_range(end=end, periods=days).day_of_week < 5).sum())
        holidays = 10 * (days // 365 + 1)  # US exchanges close on about nine or ten weekdays a year
        assert weekdays - holidays >= windows.train_bars + windows.embargo_bars


@pytest.mark.parametrize("train_months", [3, 36])
def test_the_hourly_fx_training_lookback_holds_the_training_bars(train_months):
    windows = StudyWindows(6240, train_months=train_months)
    end = pd.Timestamp("2017-12-01", tz="UTC")
    start = end - pd.Timedelta(days=windows.training_lookback_days)
    opens = bar_open_times("24x5", Timeframe.H1, start, end)
    assert len(opens) >= windows.train_bars + windows.embargo_bars
