"""Walk-forward periods and folds: training strictly before the test period, with the embargo gap."""

from __future__ import annotations

import pandas as pd
import pytest

from emp_pipeline.domain.walkforward import (
    WalkForwardError,
    WalkForwardFold,
    build_fold,
    period_bounds,
    period_key,
    period_keys,
)


def _folds(dates: pd.DatetimeIndex, frequency: str = "monthly", **window: int) -> list[WalkForwardFold]:
    """The fold of every period that has test bars; periods without enough training history are skipped."""
    folds = []
    for key in period_keys(dates[0], dates[-1] + pd.Timedelta(days=1), frequency):
        try:
            folds.append(build_fold(dates, key, frequency, **window))
        except WalkForwardError:
            continue
    return [fold for fold in folds if fold.n_test_bars > 0]


def _days() -> pd.DatetimeIndex:
    """Business days 2015-2018 (2015 has 261 of them)."""
    return pd.bdate_range("2015-01-01", "2018-12-31", tz="UTC")


@pytest.mark.parametrize(
    ("frequency", "day", "key", "start", "end"),
    [
        ("monthly", "2018-02-14", "2018-02", "2018-02-01", "2018-03-01"),
        ("monthly", "2018-12-31", "2018-12", "2018-12-01", "2019-01-01"),
        ("quarterly", "2018-05-31", "2018Q2", "2018-04-01", "2018-07-01"),
        ("yearly", "2018-07-04", "2018", "2018-01-01", "2019-01-01"),
    ],
)
def test_period_keys_and_bounds(frequency, day, key, start, end):
    assert period_key(day, frequency) == key
    assert period_bounds(key, frequency) == (pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


def test_bad_keys_and_frequencies_are_rejected():
    with pytest.raises(WalkForwardError, match="monthly key"):
        period_bounds("2018/02")
    with pytest.raises(WalkForwardError, match="not canonical"):
        period_bounds("2018-2")
    with pytest.raises(WalkForwardError, match="quarterly key"):
        period_bounds("2018Q5", "quarterly")
    with pytest.raises(WalkForwardError, match="unknown period frequency"):
        period_key("2018-01-01", "fortnightly")


def test_period_keys_cover_a_range():
    assert period_keys("2018-01-15", "2018-04-01") == ["2018-01", "2018-02", "2018-03"]
    assert period_keys("2018-01-15", "2018-04-02") == ["2018-01", "2018-02", "2018-03", "2018-04"]
    assert period_keys("2018-01-01", "2018-01-01") == []


def test_fold_trains_strictly_before_the_period_with_an_embargo_gap():
    days = _days()
    fold = build_fold(days, "2018-03", train_bars=500, embargo_bars=5)
    assert fold.test_start == pd.Timestamp("2018-03-01", tz="UTC")
    assert fold.test_end == pd.Timestamp("2018-04-01", tz="UTC")
    train = days[(days >= fold.train_start) & (days < fold.train_end)]
    test = days[(days >= fold.test_start) & (days < fold.test_end)]
    assert len(train) == fold.n_train_bars == 500
    assert len(test) == fold.n_test_bars == 22
    gap = days[(days > train[-1]) & (days < test[0])]
    assert len(gap) == 5 and train[-1] < test[0]
    # 2018-03-01 is a Thursday: five bars back is Thursday 2018-02-22, the first embargoed bar.
    assert fold.train_end == pd.Timestamp("2018-02-22", tz="UTC")


def test_no_embargo_trains_up_to_the_period_start_and_none_means_expanding():
    days = _days()
    fold = build_fold(days, "2016-01", train_bars=None, embargo_bars=0)
    assert fold.train_start == days[0]
    assert fold.train_end == pd.Timestamp("2016-01-01", tz="UTC")
    assert fold.n_train_bars == int((days < fold.train_end).sum())


def test_too_little_history_is_an_error():
    days = _days()
    with pytest.raises(WalkForwardError, match="training bars"):
        build_fold(days, "2015-06", train_bars=252, embargo_bars=5, min_train_bars=252)
    folds = _folds(days, train_bars=252, embargo_bars=5, min_train_bars=252)
    # 2016-01 starts at bar 261: 256 bars before the embargo; 2015-12 (bar 239) has only 234.
    assert folds[0].period_key == "2016-01"
    assert folds[-1].period_key == "2018-12"
    assert all(fold.n_train_bars == 252 for fold in folds)
    assert [f.period_key for f in folds] == sorted(f.period_key for f in folds)


def test_folds_before_a_cut_do_not_depend_on_later_dates():
    days = _days()
    full = _folds(days, "quarterly", train_bars=300, embargo_bars=3, min_train_bars=200)
    cut = days[days < pd.Timestamp("2017-07-01", tz="UTC")]
    truncated = _folds(cut, "quarterly", train_bars=300, embargo_bars=3, min_train_bars=200)
    assert truncated == full[: len(truncated)]
    assert truncated[-1].period_key == "2017Q2"


def test_invalid_window_settings_are_rejected():
    days = _days()
    with pytest.raises(WalkForwardError, match="embargo_bars"):
        build_fold(days, "2018-01", embargo_bars=-1)
    with pytest.raises(WalkForwardError, match="sorted"):
        build_fold(days[::-1], "2018-01")
