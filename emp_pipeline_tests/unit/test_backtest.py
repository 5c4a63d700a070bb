"""The backtest kernel against hand-computed fills, fees, slippage, stops and holding limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import (
    BacktestInputError,
    MarketArrays,
    RiskArrays,
    simulate_population,
    simulate_strategy,
)
from emp_pipeline.domain.costs import Costs, CostsError
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.sleeve import entry_fill_price, exit_fill_price, intrabar_exit

FREE = Costs(fee_bps=0.0, slippage_bps=0.0)
COSTS = Costs(fee_bps=2.0, slippage_bps=3.0)


def _market(open_, high=None, low=None, close=None, atr=1.0) -> MarketArrays:
    """One instrument; high/low default to open +/- 0.5 and close to open (no intrabar surprises)."""
    o = np.asarray(open_, dtype=np.float64)[:, None]
    h = o + 0.5 if high is None else np.asarray(high, dtype=np.float64)[:, None]
    lo = o - 0.5 if low is None else np.asarray(low, dtype=np.float64)[:, None]
    c = o if close is None else np.asarray(close, dtype=np.float64)[:, None]
    a = np.full_like(o, atr) if np.isscalar(atr) else np.asarray(atr, dtype=np.float64)[:, None]
    dates = pd.date_range("2020-01-06", periods=len(o), freq="B", tz="UTC")
    return MarketArrays(dates, ("X",), o, h, lo, c, a)


def _genome(stop=10.0, take_profit=20.0, fraction=1.0, max_hold=500, direction="long") -> Genome:
    rule = Condition("what_x", ">", 0.0)
    return Genome(
        direction=direction,
        long_entry=rule if direction != "short" else None,
        short_entry=rule if direction != "long" else None,
        exit=None,
        regimes=("bull_trend",),
        risk=RiskGenes(stop, take_profit, fraction, max_hold),
    )


def _signals(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int8)[:, None]


def test_five_bar_trade_with_fees_and_slippage_matches_hand_computation():
    """Units are decided at the signal bar's close (sizing at decision time), filled at the next open."""
    market = _market([100.0, 101.0, 102.0, 103.0, 104.0], close=[100.5, 101.5, 102.5, 103.5, 104.5])
    run = simulate_strategy(
        _genome(), _signals([1, 1, 0, 0, 0]), market, Costs(fee_bps=10.0, slippage_bps=10.0)
    )

    entry = 101.0 * 1.001  # signal at close of bar 0, bought at bar 1's open, 10 bps worse
    units = 1.0 / 100.5  # the whole sleeve (fraction 1.0 of equity 1.0) at the signal bar's close
    cash_after_entry = 1.0 - units * entry * 1.001  # notional paid plus a 10 bps fee on it
    exit_price = 103.0 * 0.999  # signal 0 at close of bar 2, sold at bar 3's open, 10 bps worse
    final = cash_after_entry + units * exit_price * (1 - 0.001)
    expected_equity = [1.0, cash_after_entry + units * 101.5, cash_after_entry + units * 102.5, final, final]

    np.testing.assert_allclose(run.result.equity[0], expected_equity, rtol=0, atol=1e-12)
    assert len(run.trades) == 1
    trade = run.trades.iloc[0]
    assert trade["entry_date"] == market.dates[1] and trade["exit_date"] == market.dates[3]
    assert trade["entry_price"] == pytest.approx(entry, abs=1e-12)
    assert trade["exit_price"] == pytest.approx(exit_price, abs=1e-12)
    assert trade["pnl"] == pytest.approx(final - 1.0, abs=1e-12)
    assert trade["exit_reason"] == "signal"
    assert run.result.trade_counts[0] == 1 and run.result.winning_trades[0] == 1
    np.testing.assert_allclose(run.result.returns[0, 1:], np.diff(expected_equity) / expected_equity[:-1])


def test_no_signal_keeps_equity_flat():
    market = _market([100.0, 90.0, 120.0, 80.0, 100.0])
    run = simulate_strategy(
        _genome(), _signals([0, 0, 0, 0, 0]), market, Costs(fee_bps=5.0, slippage_bps=5.0)
    )
    np.testing.assert_array_equal(run.result.equity[0], np.ones(5))
    np.testing.assert_array_equal(run.result.returns[0], np.zeros(5))
    assert run.trades.empty and run.result.trade_counts[0] == 0 and run.result.exposure[0] == 0.0


def test_stop_and_take_profit_touched_in_one_bar_takes_the_stop():
    # Entry at 100 (bar 1 open); ATR 1 at the signal bar, 2 ATR stop = 98, 2 ATR target = 102.
    market = _market(
        [100.0, 100.0, 100.0, 100.0],
        high=[100.5, 100.5, 103.0, 100.5],
        low=[99.5, 99.5, 97.0, 99.5],
    )
    run = simulate_strategy(_genome(stop=2.0, take_profit=2.0), _signals([1, 1, 1, 1]), market, FREE)
    assert list(run.trades["exit_reason"]) == ["stop"]
    assert run.trades["exit_price"].iloc[0] == 98.0
    assert run.trades["exit_date"].iloc[0] == market.dates[2]
    # After the stop the signal is still long: no re-entry without a fresh signal.
    assert run.result.equity[0, -1] == pytest.approx(0.98)


def test_gap_through_stop_fills_at_the_worse_open():
    market = _market(
        [100.0, 100.0, 95.0, 96.0], high=[100.5, 100.5, 96.0, 96.5], low=[99.5, 99.5, 94.0, 95.5]
    )
    run = simulate_strategy(_genome(stop=2.0, take_profit=5.0), _signals([1, 1, 1, 1]), market, FREE)
    assert list(run.trades["exit_reason"]) == ["stop"]
    assert run.trades["exit_price"].iloc[0] == 95.0  # not the 98 stop level
    assert run.result.equity[0, -1] == pytest.approx(0.95)


def test_gap_through_take_profit_fills_at_the_better_open():
    market = _market([100.0, 100.0, 106.0, 106.0])
    run = simulate_strategy(_genome(stop=2.0, take_profit=3.0), _signals([1, 1, 1, 1]), market, FREE)
    assert list(run.trades["exit_reason"]) == ["take_profit"]
    assert run.trades["exit_price"].iloc[0] == 106.0


def test_stop_is_checked_on_the_entry_bar_from_the_open():
    market = _market([100.0, 100.0, 100.0], high=[100.5, 100.5, 100.5], low=[99.5, 97.0, 99.5])
    run = simulate_strategy(_genome(stop=2.0, take_profit=5.0), _signals([1, 1, 1]), market, FREE)
    assert run.trades["entry_date"].iloc[0] == run.trades["exit_date"].iloc[0] == market.dates[1]
    assert run.trades["exit_price"].iloc[0] == 98.0


def test_max_holding_exits_at_next_open_and_needs_a_fresh_signal():
    market = _market([100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0])
    signals = _signals([1, 1, 1, 1, 0, 1, 1, 1])
    run = simulate_strategy(_genome(max_hold=2), signals, market, FREE)
    first, second = run.trades.iloc[0], run.trades.iloc[1]
    # Entered at bar 1's open, held through the closes of bars 1 and 2, out at bar 3's open.
    assert (first["entry_price"], first["exit_price"], first["exit_reason"]) == (101.0, 103.0, "max_holding")
    # Signal stayed long at bar 3, so no re-entry until it went to 0 (bar 4) and back to 1 (bar 5).
    assert second["entry_date"] == market.dates[6] and second["entry_price"] == 106.0
    assert second["exit_reason"] == "end_of_data"
    assert len(run.trades) == 2


def test_short_side_profits_from_a_fall_and_pays_slippage_both_ways():
    """Units are decided at the signal bar's close, so the P&L is per unit of that close."""
    market = _market([100.0, 100.0, 95.0, 90.0, 90.0])
    run = simulate_strategy(
        _genome(direction="short", stop=10.0, take_profit=20.0),
        _signals([-1, -1, 0, 0, 0]),
        market,
        Costs(fee_bps=0.0, slippage_bps=10.0),
    )
    entry, exit_price = 100.0 * 0.999, 90.0 * 1.001
    trade = run.trades.iloc[0]
    assert trade["direction"] == -1
    assert (trade["entry_price"], trade["exit_price"]) == (pytest.approx(entry), pytest.approx(exit_price))
    # Sized at the signal bar's close (100): 0.01 units short.
    assert run.result.equity[0, -1] == pytest.approx(1.0 + (entry - exit_price) / 100.0, abs=1e-12)
    assert run.result.equity[0, 2] == pytest.approx(1.0 + (entry - 95.0) / 100.0, abs=1e-12)


def test_short_stop_is_above_entry():
    market = _market([100.0, 100.0, 100.0], high=[100.5, 100.5, 103.5], low=[99.5, 99.5, 99.5])
    run = simulate_strategy(
        _genome(direction="short", stop=3.0, take_profit=5.0), _signals([-1, -1, -1]), market, FREE
    )
    assert list(run.trades["exit_reason"]) == ["stop"] and run.trades["exit_price"].iloc[0] == 103.0


def test_reversal_exits_then_enters_the_other_way_at_the_same_open():
    market = _market([100.0, 100.0, 110.0, 110.0, 100.0])
    run = simulate_strategy(
        _genome(direction="both", stop=10.0, take_profit=20.0), _signals([1, -1, -1, 0, 0]), market, FREE
    )
    assert list(run.trades["direction"]) == [1, -1]
    assert run.trades["exit_date"].iloc[0] == run.trades["entry_date"].iloc[1] == market.dates[2]
    # +0.1 on the long (100 -> 110); the short is sized at the close of bar 1 (equity 1.0 at 100: 0.01
    # units), sold at 110 and covered at 100: +0.1.
    assert run.result.equity[0, 2] == pytest.approx(1.1)
    assert run.result.equity[0, -1] == pytest.approx(1.1 + 1.1 * 10.0 / 110.0)


def test_position_fraction_scales_exposure_of_the_sleeve():
    market = _market([100.0, 100.0, 120.0, 120.0])
    run = simulate_strategy(_genome(fraction=0.25), _signals([1, 1, 0, 0]), market, FREE)
    assert run.result.equity[0, -1] == pytest.approx(1.0 + 0.25 * 0.2)


def test_bars_without_a_price_carry_equity_and_delay_the_fill():
    market = _market(
        [100.0, np.nan, 102.0, 103.0], high=[100.5, np.nan, 102.5, 103.5], low=[99.5, np.nan, 101.5, 102.5]
    )
    run = simulate_strategy(_genome(), _signals([1, 0, 1, 1]), market, FREE)
    assert run.result.equity[0, 1] == 1.0
    assert run.trades["entry_price"].iloc[0] == 102.0


def test_population_equals_strategies_run_alone_and_sleeves_sum_to_portfolio():
    rng = np.random.default_rng(7)
    n_bars, n_instruments = 300, 3
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, n_instruments)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.002, close.shape))
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    atr = np.full_like(close, 1.5)
    market = MarketArrays(
        pd.date_range("2020-01-01", periods=n_bars, tz="UTC"), ("A", "B", "C"), open_, high, low, close, atr
    )
    signals = rng.integers(-1, 2, size=(4, n_bars, n_instruments)).astype(np.int8)
    risk = RiskArrays(
        stop_atr=np.array([1.0, 2.0, 3.0, 0.5]),
        take_profit_atr=np.array([2.0, 1.0, 6.0, 0.5]),
        position_fraction=np.array([1.0, 0.5, 0.2, 0.9]),
        max_holding_bars=np.array([5, 500, 3, 1], dtype=np.int64),
    )
    together = simulate_population(signals, market, risk, COSTS, record_instruments=True)
    for k in range(4):
        alone = simulate_population(
            signals[k : k + 1],
            market,
            RiskArrays(*(genes[k : k + 1] for genes in vars(risk).values())),
            COSTS,
        )
        np.testing.assert_array_equal(alone.equity[0], together.equity[k])
        assert alone.trade_counts[0] == together.trade_counts[k]
    np.testing.assert_allclose(together.instrument_equity.sum(axis=2), together.equity, rtol=1e-14)
    assert (together.trade_counts > 0).all()
    # Truncating the data at bar t changes nothing up to t: the kernel never reads ahead.
    cut = 170
    truncated = simulate_population(
        signals[:, :cut],
        MarketArrays(market.dates[:cut], market.symbols, *(a[:cut] for a in (open_, high, low, close, atr))),
        risk,
        COSTS,
    )
    np.testing.assert_array_equal(truncated.equity, together.equity[:, :cut])


def test_fill_helpers_are_the_documented_arithmetic():
    assert entry_fill_price(100.0, 1, 5.0) == pytest.approx(100.05)
    assert entry_fill_price(100.0, -1, 5.0) == pytest.approx(99.95)
    assert exit_fill_price(100.0, 1, 5.0) == pytest.approx(99.95)
    assert exit_fill_price(100.0, -1, 5.0) == pytest.approx(100.05)
    assert intrabar_exit(1, 100.0, 101.0, 99.0, 98.0, 102.0, True)[0] == -1
    assert intrabar_exit(-1, 100.0, 101.0, 97.5, 103.0, 98.0, True) == (2, 98.0)


def test_wrong_inputs_are_rejected_with_a_message():
    market = _market([100.0, 101.0])
    risk = RiskArrays.from_genomes([_genome()])
    with pytest.raises(BacktestInputError, match="int8"):
        simulate_population(np.zeros((1, 2, 1), dtype=np.int64), market, risk, FREE)
    with pytest.raises(BacktestInputError, match="prices have shape"):
        simulate_population(np.zeros((1, 3, 1), dtype=np.int8), market, risk, FREE)
    with pytest.raises(CostsError, match="fee_bps"):
        simulate_population(np.zeros((1, 2, 1), dtype=np.int8), market, risk, Costs(fee_bps=-1.0))


def _reference_sleeve(signals, o, h, lo, c, atr, stop_atr, tp_atr, fraction, max_hold, fee, slip, capital):
    """The module docstring's rules written out plainly, bar by bar, for one sleeve (no shared code)."""
    cash, units, side, held, blocked = capital, 0.0, 0, 0, 0
    pending_exit, pending_entry, pending_units, pending_atr = False, 0, 0.0, 0.0
    stop = target = 0.0
    equity_path, trades = [], 0

    def close_position(price):
        nonlocal cash, units, side, trades
        fill = price * (1 - side * slip)
        cash += units * fill - abs(units * fill) * fee
        units, side, trades = 0.0, 0, trades + 1

    for t in range(len(o)):
        if pending_exit and side:
            close_position(o[t])
        pending_exit = False
        fresh = False
        if pending_entry and not side:
            fill = o[t] * (1 + pending_entry * slip)
            units = pending_units  # decided at the previous close
            cash -= units * fill + abs(units * fill) * fee
            side, held, fresh = pending_entry, 0, True
            stop = fill - side * stop_atr * pending_atr
            target = fill + side * tp_atr * pending_atr
        pending_entry = 0
        if side:
            worse = (lambda a, b: a <= b) if side > 0 else (lambda a, b: a >= b)
            better = (lambda a, b: a >= b) if side > 0 else (lambda a, b: a <= b)
            adverse, favourable = (lo[t], h[t]) if side > 0 else (h[t], lo[t])
            exit_price = None
            if not fresh and (worse(o[t], stop) or better(o[t], target)):
                exit_price = o[t]  # a gap through either level fills at the open
            elif worse(adverse, stop):
                exit_price = stop
            elif better(favourable, target):
                exit_price = target
            if exit_price is not None:
                blocked = side
                close_position(exit_price)
        equity = cash + units * c[t]
        equity_path.append(equity)
        signal = int(signals[t])
        if signal != blocked:
            blocked = 0
        if side:
            held += 1
            if signal != side:
                pending_exit = True
                if signal:
                    pending_entry, pending_atr = signal, atr[t]
                    pending_units = signal * fraction * equity / c[t]
            elif held >= max_hold:
                pending_exit, blocked = True, side
        elif signal and signal != blocked:
            pending_entry, pending_atr = signal, atr[t]
            pending_units = signal * fraction * equity / c[t]
    return np.array(equity_path), trades + (1 if side else 0)


def test_kernel_matches_a_plain_reference_implementation_on_random_markets():
    rng = np.random.default_rng(42)
    n_bars, n_instruments, n_strategies = 250, 2, 12
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_instruments)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, close.shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, close.shape)))
    atr = close * 0.02
    market = MarketArrays(
        pd.date_range("2021-01-01", periods=n_bars, tz="UTC"), ("A", "B"), open_, high, low, close, atr
    )
    # Sticky random signals, so positions last a while and stops and holding limits get their turn.
    changes = rng.random((n_strategies, n_bars, n_instruments)) < 0.15
    draws = rng.integers(-1, 2, size=changes.shape)
    signals = np.zeros(changes.shape, dtype=np.int8)
    for t in range(n_bars):
        previous = signals[:, t - 1] if t else 0
        signals[:, t] = np.where(changes[:, t], draws[:, t], previous)
    risk = RiskArrays(
        stop_atr=rng.uniform(0.5, 3.0, n_strategies),
        take_profit_atr=rng.uniform(0.5, 5.0, n_strategies),
        position_fraction=rng.uniform(0.1, 1.0, n_strategies),
        max_holding_bars=rng.integers(1, 30, n_strategies).astype(np.int64),
    )
    result = simulate_population(
        signals, market, risk, Costs(fee_bps=7.0, slippage_bps=4.0), record_instruments=True
    )
    for s in range(n_strategies):
        total_trades = 0
        for i in range(n_instruments):
            path, trades = _reference_sleeve(
                signals[s, :, i], open_[:, i], high[:, i], low[:, i], close[:, i], atr[:, i],
                risk.stop_atr[s], risk.take_profit_atr[s], risk.position_fraction[s],
                risk.max_holding_bars[s], 7e-4, 4e-4, 1.0 / n_instruments,
            )  # fmt: skip
            np.testing.assert_allclose(result.instrument_equity[s, :, i], path, rtol=1e-12, atol=1e-15)
            total_trades += trades
        assert result.trade_counts[s] == total_trades
    assert result.trade_counts.sum() > 100


def test_final_state_tells_the_live_engine_what_to_do_at_the_next_open():
    """Units come from the signal bar's close; the units of the order due at the next open are kept."""
    market = _market([100.0, 100.0, 101.0, 102.0, 103.0], atr=2.0)
    run = simulate_strategy(
        _genome(direction="both", stop=1.5, take_profit=4.0, fraction=0.5),
        _signals([0, 1, 1, 1, -1]),
        market,
        FREE,
    )
    state = run.final_state.loc["X"]
    assert state["direction"] == 1 and state["bars_held"] == 3
    assert state["entry_price"] == 101.0
    assert (state["stop"], state["take_profit"]) == (101.0 - 3.0, 101.0 + 8.0)
    assert state["units"] == pytest.approx(0.5 / 100.0)  # sized at the signal bar's close
    assert state["exit_at_next_open"] and state["enter_at_next_open"] == -1
    # The reversal's units are decided now: half the sleeve equity at this close, short, at this close.
    equity_now = state["cash"] + state["units"] * 103.0
    assert state["units_at_next_open"] == pytest.approx(-0.5 * equity_now / 103.0, rel=1e-15)
    flat = simulate_strategy(_genome(), _signals([0, 0, 0, 0, 0]), market, FREE).final_state.loc["X"]
    assert flat["direction"] == 0 and not flat["exit_at_next_open"] and flat["enter_at_next_open"] == 0
    assert flat["cash"] == 1.0
