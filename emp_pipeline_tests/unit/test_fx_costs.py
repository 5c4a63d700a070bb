"""FX costs in the one step: the spread on every buy (bars are bids), swaps at the 17:00 New York rollover."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import MarketArrays, simulate_strategy
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.financing import (
    FinancingInputError,
    bar_spreads,
    swap_nights,
    swap_terms,
)
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType, UniverseError, Weekday

NO_COSTS = Costs(fee_bps=0.0, slippage_bps=0.0)


def _eurusd(**terms: object) -> InstrumentMeta:
    base: dict[str, object] = dict(
        symbol="EURUSD", name="EURUSD", asset_class=AssetClass.FX, quote_currency="USD", tick_size=0.00001,
        pip_position=4, lot_size=100_000, min_volume=1_000, step_volume=1_000, calendar="24x5",
    )  # fmt: skip
    return InstrumentMeta(**{**base, **terms})


def _new_york(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(stamps).tz_localize("America/New_York").tz_convert("UTC")


def _genome() -> Genome:
    return Genome(
        "both",
        Condition("what_x", ">", 0.0),
        Condition("what_x", "<", 0.0),
        None,
        ("bull_trend",),
        RiskGenes(stop_atr=10.0, take_profit_atr=10.0, position_fraction=1.0, max_holding_bars=100),
    )


def _flat_market(dates: pd.DatetimeIndex, meta: InstrumentMeta | None, spread: float = 0.0) -> MarketArrays:
    n = len(dates)
    price = np.full((n, 1), 1.1)
    nights = swap_nights(meta, dates).reshape(n, 1)
    return MarketArrays(
        dates, ("EURUSD",), price, price + 0.001, price - 0.001, price, np.full((n, 1), 0.001),
        np.full((n, 1), spread), nights, np.array([swap_terms(meta)]),
    )  # fmt: skip


def test_a_position_opened_1659_and_closed_1701_new_york_pays_one_night():
    meta = _eurusd(swap_long=-0.5, swap_short=0.2)
    dates = _new_york(*(f"2017-06-13 {hh}" for hh in ("16:57", "16:58", "16:59", "17:00", "17:01", "17:02")))
    # Long decided at the 16:58 close fills at the 16:59 open; flat at the 17:00 close exits at 17:01.
    signals = np.array([[0], [1], [1], [0], [0], [0]], dtype=np.int8)
    result = simulate_strategy(_genome(), signals, _flat_market(dates, meta), NO_COSTS)
    (trade,) = result.trades.itertuples()
    assert trade.entry_date == dates[2] and trade.exit_date == dates[4]
    paid_per_night = 0.5 * 1e-4 * trade.units
    assert result.result.swap_costs[0] == pytest.approx(paid_per_night)
    assert trade.pnl == pytest.approx(-paid_per_night)


def test_opening_at_the_rollover_itself_pays_nothing_and_closing_there_pays_it():
    meta = _eurusd(swap_long=-0.5)
    opens = _new_york("2017-06-13 16:00", "2017-06-13 17:00", "2017-06-13 18:00")
    assert swap_nights(meta, opens).tolist() == [0.0, 1.0, 0.0]
    # A long filled at the 17:00 open: financed only from the next rollover on.
    signals = np.array([[1], [1], [1]], dtype=np.int8)
    result = simulate_strategy(_genome(), signals, _flat_market(opens, meta), NO_COSTS)
    assert result.result.swap_costs[0] == 0.0


def test_the_triple_weekday_counts_three_nights_and_the_weekend_none():
    meta = _eurusd(swap_long=-0.5, swap_triple_weekday=Weekday.WEDNESDAY)
    week = pd.date_range("2017-06-12 00:00", "2017-06-18 23:00", freq="h", tz="UTC")
    opens = week[(week.day_of_week < 5) | ((week.day_of_week == 6) & (week.hour >= 21))]
    nights = swap_nights(meta, opens)
    charged = opens[nights > 0].tz_convert("America/New_York")
    assert [
        (stamp.day_name(), stamp.hour, n) for stamp, n in zip(charged, nights[nights > 0], strict=True)
    ] == [
        ("Monday", 17, 1.0),
        ("Tuesday", 17, 1.0),
        ("Wednesday", 17, 3.0),
        ("Thursday", 17, 1.0),
        ("Friday", 17, 1.0),
    ]
    # From Friday's last bar to Sunday's first: Friday's rollover only, never Saturday or Sunday.
    friday_to_sunday = pd.DatetimeIndex(["2017-06-16 20:00", "2017-06-18 21:00"], tz="UTC")
    assert swap_nights(meta, friday_to_sunday).tolist() == [0.0, 1.0]
    assert (
        swap_nights(_eurusd(swap_long=-0.5, swap_triple_weekday=Weekday.FRIDAY), friday_to_sunday)[1] == 3.0
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # US daylight saving starts 2017-03-12: the rollover moves from 22:00 to 21:00 UTC.
        (("2017-03-10 21:00", "2017-03-10 22:00"), ("2017-03-13 20:00", "2017-03-13 21:00")),
        # and ends 2017-11-05: back from 21:00 to 22:00 UTC.
        (("2017-11-03 20:00", "2017-11-03 21:00"), ("2017-11-06 21:00", "2017-11-06 22:00")),
    ],
)
def test_rollover_follows_new_york_across_the_dst_weeks(before: tuple[str, str], after: tuple[str, str]):
    meta = _eurusd(swap_long=-0.5)
    for pair in (before, after):
        # The bar opening at 17:00 New York is the one financed, whatever UTC hour that is.
        assert swap_nights(meta, pd.DatetimeIndex(pair, tz="UTC")).tolist() == [0.0, 1.0]
        shifted = pd.DatetimeIndex(pair, tz="UTC") - pd.Timedelta(hours=1)
        assert swap_nights(meta, shifted).tolist() == [0.0, 0.0]


def test_percent_swaps_are_a_yearly_rate_of_the_previous_close_over_360_days():
    terms = swap_terms(_eurusd(swap_long=-3.6, swap_short=1.8, swap_type=SwapType.PERCENT))
    assert terms.long_per_value == pytest.approx(-3.6 / 100 / 360)
    assert terms.short_per_value == pytest.approx(1.8 / 100 / 360)
    assert terms.long_per_unit == terms.short_per_unit == 0.0
    pips = swap_terms(_eurusd(swap_long=-0.42, swap_short=0.42))
    assert (pips.long_per_unit, pips.short_per_unit) == pytest.approx((-0.42e-4, 0.42e-4))


def test_buys_pay_the_ask_and_a_shorts_stop_triggers_on_the_ask():
    meta = _eurusd(spread_pips=2.0)  # 0.0002
    dates = pd.date_range("2017-06-13 10:00", periods=5, freq="h", tz="UTC")
    market = _flat_market(dates, meta, spread=0.0002)
    long = simulate_strategy(_genome(), np.array([[1], [1], [0], [0], [0]], dtype=np.int8), market, NO_COSTS)
    (trade,) = long.trades.itertuples()
    assert trade.entry_price == pytest.approx(1.1002) and trade.exit_price == pytest.approx(1.1)
    assert long.result.spread_costs[0] == pytest.approx(0.0002 * trade.units)
    short = simulate_strategy(
        _genome(), np.array([[-1], [-1], [0], [0], [0]], dtype=np.int8), market, NO_COSTS
    )
    (trade,) = short.trades.itertuples()
    assert trade.entry_price == pytest.approx(1.1) and trade.exit_price == pytest.approx(1.1002)
    # A short's stop 0.00025 above the bid entry is touched by the ask (bid high 1.101 + 0.0002) at once.
    tight = dataclasses.replace(_genome(), risk=RiskGenes(0.25, 10.0, 1.0, 100))
    stopped = simulate_strategy(
        tight, np.array([[-1], [-1], [-1], [-1], [-1]], dtype=np.int8), market, NO_COSTS
    )
    first = stopped.trades.iloc[0]
    assert first["exit_reason"] == "stop" and first["exit_price"] == pytest.approx(1.1 + 0.00025)


def test_spreads_come_from_the_bars_column_else_the_typical_spread_and_negative_ones_are_refused():
    instruments = {"EURUSD": _eurusd(spread_pips=0.6)}
    bars = pd.DataFrame({"date": [1, 2], "symbol": ["EURUSD", "EURUSD"], "spread": [0.0003, np.nan]})
    assert bar_spreads(bars, instruments).tolist() == pytest.approx([0.0003, 0.00006])
    assert bar_spreads(bars.drop(columns="spread"), instruments).tolist() == pytest.approx([6e-5, 6e-5])
    with pytest.raises(FinancingInputError, match=r"EURUSD has spread -0\.1"):
        bar_spreads(bars.assign(spread=[-0.1, 0.0]), instruments)
    with pytest.raises(UniverseError, match="spread_pips"):
        _eurusd(spread_pips=-1.0)
