"""The live side's reads and writes of the lake on hourly bars: a window holds its bar and no later one.

Daily code used ``bar + 1 day`` as a bar's window end; on H1 bars that window reaches the rest of the day,
so a re-run of an earlier hour would read later hours (look-ahead) or, writing, find them missing from its
frame (HistoryLossError). These pin that every read and write of one bar covers that bar alone.
"""

from __future__ import annotations

import pandas as pd
import pytest

from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.live.engine import load_market_view, trading_day_starts
from emp_pipeline.live.journal import LiveJournal
from emp_pipeline.storage.datasets import MARKET_BARS, MARKET_REGIMES, SENSORY_FEATURES

HOURS = pd.date_range("2017-03-14 13:00", periods=4, freq="h", tz="UTC")


def _decision(verdict: str) -> dict[str, object]:
    return {
        "strategy_id": "s1",
        "symbol": "EURUSD",
        "decision": "enter: signal",
        "current": 0.0,
        "target": 1000.0,
        "requested_quantity": 1000.0,
        "approved_quantity": 1000.0,
        "verdict": verdict,
        "reason": "within limits",
        "client_order_id": None,
    }


def test_rerunning_an_earlier_hour_keeps_the_later_hours_of_the_day(tmp_path) -> None:
    journal = LiveJournal(tmp_path, account_id=1)
    for k, bar in enumerate(HOURS):
        journal.record_equity(bar, 100_000.0 + k, 100_000.0)
        journal.record_decisions(bar, bar + pd.Timedelta(minutes=1), [_decision("approved")])
        journal.record_limits(bar, bar + pd.Timedelta(minutes=1), RiskLimits())
    rerun = HOURS[1]
    journal.record_equity(rerun, 99_000.0, 99_000.0)  # raised HistoryLossError with a one-day window
    journal.record_decisions(rerun, rerun + pd.Timedelta(hours=5), [_decision("rejected")])
    journal.record_limits(rerun, rerun + pd.Timedelta(hours=5), RiskLimits())

    equity = LiveJournal(tmp_path, account_id=1)._equity.read_window().set_index("date")["equity"]
    assert list(equity.index) == list(HOURS)
    assert list(equity) == [100_000.0, 99_000.0, 100_002.0, 100_003.0]
    assert journal.day_start_equity(HOURS[2]) == 99_000.0  # the previous hour's close, not a later one
    decisions = journal.decisions()
    per_bar = decisions.groupby("date")["verdict"].apply(list).to_dict()
    assert per_bar[rerun] == ["approved", "rejected"]
    assert all(per_bar[bar] == ["approved"] for bar in HOURS if bar != rerun)
    assert len(journal.limits()) == len(HOURS) + 1


def _write_hours(root) -> None:
    rows = pd.DataFrame({"date": HOURS, "symbol": "EURUSD"})
    prices = rows.assign(open=1.06, high=1.07, low=1.05, close=[1.061, 1.062, 1.063, 1.064], volume=1.0)
    frames = {
        MARKET_BARS: prices.assign(adj_close=prices["close"]),
        SENSORY_FEATURES: rows.assign(warmup=False, what_rsi_14=50.0),
        MARKET_REGIMES: rows.assign(regime="calm_bull", warmup=False),
    }
    for dataset, frame in frames.items():
        dataset.store(root).write_window(frame, HOURS[0], HOURS[-1] + pd.Timedelta(hours=1))


@pytest.mark.parametrize("hour", [0, 2])
def test_a_tick_as_of_an_hour_sees_no_later_hour(tmp_path, hour: int) -> None:
    _write_hours(tmp_path)
    view = load_market_view(tmp_path, as_of=HOURS[hour].to_pydatetime())
    assert view.bar_time == HOURS[hour]
    assert view.bars["date"].max() == HOURS[hour] and view.features["date"].max() == HOURS[hour]
    assert view.closes == {"EURUSD": pytest.approx(1.061 + 0.001 * hour)}


def _utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(s, tz="UTC") for s in stamps])


def test_the_daily_loss_limit_measures_from_the_trading_day_not_the_previous_hour() -> None:
    # FX days start 17:00 New York: 22:00 UTC in winter, 21:00 UTC in summer.
    fx = trading_day_starts(_utc("2017-03-08 15:00", "2017-03-08 22:00", "2017-06-14 20:00"), {"24x5"})
    assert list(fx) == list(_utc("2017-03-07 22:00", "2017-03-08 22:00", "2017-06-13 21:00"))
    # Daily labels are their own start (the reference stays the previous day's bar), on every calendar.
    daily = _utc("2017-03-08", "2017-03-09")
    for calendars in ({"24x5"}, {"XNYS"}, {"24x7"}, {"XNYS", "24x5"}):
        starts = trading_day_starts(daily, calendars)
        assert all(
            day - pd.Timedelta(days=1) < start <= day for start, day in zip(starts, daily, strict=True)
        )
    # An exchange's H1 bar: its session's open (09:30 New York = 14:30 UTC in winter).
    assert list(trading_day_starts(_utc("2017-03-08 17:30"), {"XNYS"})) == list(_utc("2017-03-08 14:30"))


def test_the_journal_reference_of_an_hour_is_the_previous_fx_days_last_equity(tmp_path) -> None:
    journal = LiveJournal(tmp_path, account_id=1)
    hours = pd.date_range("2017-03-08 19:00", periods=6, freq="h", tz="UTC")  # across 22:00 UTC
    for k, bar in enumerate(hours):
        journal.record_equity(bar, 100_000.0 + k, 100_000.0)
    (day_begins,) = trading_day_starts(hours[-1:], {"24x5"})
    assert day_begins == pd.Timestamp("2017-03-08 22:00", tz="UTC")
    assert journal.day_start_equity(day_begins) == 100_002.0  # the 21:00 bar, the FX day's last
