"""The live decision path against the backtest kernel, and the order arithmetic that follows it."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import MarketArrays, simulate_strategy
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.execution import (
    ExecutionInputError,
    SleeveTarget,
    client_order_id,
    order_for_target,
    round_to_step,
    sleeve_rules,
    sleeve_target,
)
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.sleeve import (
    ALL_PHASES,
    NO_SWAP_TERMS,
    SleeveState,
    entry_fill_price,
    fold_sleeve,
    new_fills,
    start_sleeve,
    step_sleeve,
)

BAR = datetime(2024, 3, 1, tzinfo=UTC)
Bar = tuple[float, float, float, float, float, int]  # open, high, low, close, ATR, signal


def step(state: SleeveState, bar: Bar, genes: RiskGenes, costs: Costs, key: int = 0) -> SleeveState:
    """One bar of the kernel's own step from Python."""
    after, _ = step_sleeve(
        state, key, *map(float, bar[:5]), 0.0, 0.0, int(bar[5]), sleeve_rules(genes), costs.fill_costs(),
        NO_SWAP_TERMS, ALL_PHASES, new_fills()[0],
    )  # fmt: skip
    return after


def sleeve_columns(market: MarketArrays, signals: np.ndarray, i: int) -> list[np.ndarray]:
    return [
        np.ascontiguousarray(a[:, i])
        for a in (market.open, market.high, market.low, market.close, market.atr)
    ] + [np.ascontiguousarray(signals[:, i])]


def _random_market(seed: int, n_bars: int = 400, n_instruments: int = 3) -> tuple[MarketArrays, np.ndarray]:
    """A random walk with wide bars (stops and take profits get hit), gaps (NaN opens) and random signals."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_instruments)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, close.shape))
    atr = close * 0.015
    atr[:5] = np.nan  # the first bars cannot enter: the ATR is still warming up
    gaps = rng.random(close.shape) < 0.03
    for array in (open_, high, low, close):
        array[gaps] = np.nan
    signals = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=close.shape, p=[0.3, 0.3, 0.4])
    signals = np.repeat(signals[::4], 4, axis=0)[:n_bars]  # hold signals a few bars, like real rules do
    dates = pd.date_range("2020-01-01", periods=n_bars, freq="B", tz="UTC")
    symbols = tuple(f"S{i}" for i in range(n_instruments))
    return MarketArrays(dates, symbols, open_, high, low, close, atr), signals


def _genome(stop: float, take_profit: float, fraction: float, max_hold: int) -> Genome:
    rule = Condition("what_x", ">", 0.0)
    return Genome(
        "both",
        rule,
        Condition("what_x", "<", 0.0),
        None,
        ("bull_trend",),
        RiskGenes(stop, take_profit, fraction, max_hold),
    )


@pytest.mark.parametrize(
    ("seed", "genes"),
    [(1, (1.0, 2.0, 0.8, 500)), (2, (0.5, 0.75, 1.0, 7)), (3, (3.0, 1.0, 0.3, 3))],
)
def test_stepping_the_sleeve_reproduces_the_kernel_equity_bar_for_bar(seed, genes):
    market, signals = _random_market(seed)
    genome = _genome(*genes)
    costs = Costs(fee_bps=2.0, slippage_bps=3.0)
    kernel = simulate_strategy(genome, signals, market, costs)
    assert len(kernel.trades) > 20  # the comparison exercises entries, exits, stops and reversals
    assert len(set(kernel.trades["exit_reason"])) >= 2  # protective and signal or holding exits
    n_instruments = len(market.symbols)
    for i in range(n_instruments):
        columns = sleeve_columns(market, signals, i)
        state = start_sleeve(1.0 / n_instruments)
        for t in range(len(market.dates)):
            state = step(state, tuple(column[t] for column in columns), genome.risk, costs, t)
            expected = kernel.result.instrument_equity[0, t, i]
            assert state.equity == pytest.approx(expected, rel=1e-12, abs=1e-15), (i, t)


def test_the_live_fold_equals_stepping_and_a_prefix_fold_is_the_state_at_that_bar():
    market, signals = _random_market(4, n_bars=120, n_instruments=1)
    genes = RiskGenes(1.0, 2.0, 0.5, 10)
    columns = sleeve_columns(market, signals, 0)
    state = start_sleeve(1.0)
    for t in range(60):
        state = step(state, tuple(column[t] for column in columns), genes, Costs(), t)
    folded = fold_sleeve(
        start_sleeve(1.0), *(column[:60] for column in columns), np.zeros(60), np.zeros(60),
        sleeve_rules(genes), Costs().fill_costs(), NO_SWAP_TERMS,
    )  # fmt: skip
    assert folded == state


def test_entry_target_is_sized_from_equity_at_the_close_and_carries_atr_levels():
    """The live quantity is the kernel's own: decided at the close, filled unchanged at the next open."""
    genes = RiskGenes(stop_atr=2.0, take_profit_atr=3.0, position_fraction=0.5, max_holding_bars=10)
    state = step(start_sleeve(1.0), (100, 101, 99, 100, 1.5, 1), genes, Costs())
    target = sleeve_target(state, capital=10_000.0)
    assert target.action == "enter" and target.direction == 1
    assert target.quantity == pytest.approx(0.5 * 1.0 / 100 * 10_000.0)
    assert target.stop_distance == pytest.approx(3.0) and target.take_profit_distance == pytest.approx(4.5)
    # The next bar fills it at the open, as the kernel does.
    filled = step(state, (102, 103, 101, 102, 1.5, 1), genes, Costs(), 1)
    assert filled.direction == 1 and filled.units * 10_000.0 == target.quantity
    assert filled.entry_price == pytest.approx(entry_fill_price(102.0, 1, 1.0))
    assert sleeve_target(filled, 10_000.0).action == "hold"


def test_exit_and_reversal_targets():
    genes = RiskGenes(stop_atr=5.0, take_profit_atr=5.0, position_fraction=1.0, max_holding_bars=100)
    costs = Costs(fee_bps=0.0, slippage_bps=0.0)
    long = step(
        step(start_sleeve(1.0), (100, 100, 100, 100, 1.0, 1), genes, costs),
        (100,) * 4 + (1.0, 1),
        genes,
        costs,
        1,
    )
    exit_state = step(long, (100, 100, 100, 100, 1.0, 0), genes, costs, 2)
    assert sleeve_target(exit_state, 1.0) == SleeveTarget("exit", 0, 0.0, "signal")
    reverse = sleeve_target(step(long, (100, 100, 100, 110, 1.0, -1), genes, costs, 2), 1.0)
    assert reverse.action == "reverse" and reverse.direction == -1
    # Sleeve equity at the close (the long marked at 110, before any exit cost), sized at that close.
    assert reverse.quantity == pytest.approx(-(1.1 / 110))


def test_max_holding_exit_blocks_reentry_until_the_signal_leaves():
    genes = RiskGenes(stop_atr=5.0, take_profit_atr=5.0, position_fraction=1.0, max_holding_bars=2)
    flat = (100, 100, 100, 100, 1.0, 1)
    state = start_sleeve(1.0)
    for t in range(3):
        state = step(state, flat, genes, Costs(), t)
    assert state.direction == 1 and state.pending_exit and state.blocked == 1
    after = step(state, flat, genes, Costs(), 3)
    assert after.direction == 0 and after.pending_entry == 0  # signal still 1: no fresh entry


def test_client_order_id_is_stable_short_and_depends_on_every_part():
    first = client_order_id("strat", "EURUSD", BAR, 1000.0)
    assert first == client_order_id("strat", "EURUSD", BAR, 1000.0)
    assert first.startswith("emp-") and len(first) <= 50
    others = {
        client_order_id("other", "EURUSD", BAR, 1000.0),
        client_order_id("strat", "USDJPY", BAR, 1000.0),
        client_order_id("strat", "EURUSD", datetime(2024, 3, 4, tzinfo=UTC), 1000.0),
        client_order_id("strat", "EURUSD", BAR, 2000.0),
    }
    assert first not in others and len(others) == 4
    with pytest.raises(ExecutionInputError, match="naive"):
        client_order_id("strat", "EURUSD", datetime(2024, 3, 1), 1.0)


def test_round_to_step_rounds_toward_zero():
    assert round_to_step(1234.9, 100.0) == 1200.0
    assert round_to_step(-1234.9, 100.0) == -1200.0
    assert round_to_step(0.3, 0.1) == pytest.approx(0.3)
    assert round_to_step(99.0, 100.0) == 0.0


def _order(current: float, quantity: float, step: float = 1000.0, minimum: float = 1000.0, action="enter"):
    direction = (quantity > 0) - (quantity < 0)
    target = SleeveTarget(action, direction, quantity, "signal", 0.01, 0.02)
    return order_for_target(
        strategy_id="s",
        symbol="EURUSD",
        bar_time=BAR,
        current=current,
        target=target,
        reference_price=1.1,
        volume_step=step,
        min_volume=minimum,
    )


def test_order_diff_moves_current_to_rounded_target():
    order = _order(current=2000.0, quantity=10_499.0)
    assert order is not None
    assert order.target == 10_000.0 and order.signed_quantity == 8000.0 and order.side == "buy"
    assert order.client_order_id == client_order_id("s", "EURUSD", BAR, 10_000.0)
    reverse = _order(current=5000.0, quantity=-3000.0)
    assert reverse.side == "sell" and reverse.quantity == 8000.0 and reverse.opens_position


def test_order_diff_skips_moves_below_minimum_but_always_closes():
    assert _order(current=10_000.0, quantity=10_900.0) is None  # rounds to the current position
    assert _order(current=10_000.0, quantity=10_500.0, step=100.0, minimum=1000.0) is None
    closing = _order(current=300.0, quantity=0.0, step=100.0, minimum=1000.0)
    assert (
        closing is not None and closing.target == 0.0 and closing.side == "sell" and closing.quantity == 300.0
    )
    assert not closing.opens_position


def test_a_hold_keeps_a_live_position_on_the_kernels_side_and_brings_any_other_to_the_kernels():
    assert _order(current=9_000.0, quantity=12_000.0, action="hold") is None  # drifted size is kept
    assert _order(current=0.0, quantity=0.0, action="hold") is None
    missed = _order(current=0.0, quantity=12_000.0, action="hold")  # e.g. the entry tick never ran
    assert missed.target == 12_000.0 and missed.opens_position and missed.stop_distance == 0.01
    stale = _order(current=5_000.0, quantity=0.0, action="hold")  # e.g. the exit order was refused
    assert stale.target == 0.0 and stale.side == "sell" and stale.quantity == 5_000.0
    flipped = _order(current=-3_000.0, quantity=12_000.0, action="hold")
    assert flipped.signed_quantity == 15_000.0


def test_hold_target_is_the_kernels_position_with_stops_at_its_levels():
    genes = RiskGenes(stop_atr=2.0, take_profit_atr=3.0, position_fraction=0.5, max_holding_bars=10)
    costs = Costs(fee_bps=0.0, slippage_bps=0.0)
    pending = step(start_sleeve(1.0), (100, 101, 99, 100, 1.0, 1), genes, costs)
    held = step(pending, (100, 101, 99, 100.5, 1.0, 1), genes, costs, 1)
    target = sleeve_target(held, capital=1_000.0)
    assert (target.action, target.direction) == ("hold", 1)
    assert target.quantity == pytest.approx(held.units * 1_000.0) and held.units == pytest.approx(0.005)
    assert target.stop_distance == pytest.approx(100.5 - 98.0)  # kernel stop at 100 - 2 x ATR
    assert target.take_profit_distance == pytest.approx(103.0 - 100.5)


def test_sleeve_target_refuses_non_positive_capital():
    state = start_sleeve(1.0)
    with pytest.raises(ExecutionInputError, match="capital"):
        sleeve_target(state, 0.0)
    assert math.isnan(state.last_close)
