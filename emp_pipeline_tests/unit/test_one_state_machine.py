"""Kernel, live fold and paper broker run one state machine: on random bars and signals they agree exactly.

The bars are bid prices with a spread (zero or not) every buy pays, and the sleeve is financed overnight
(an FX instrument's rollovers, Wednesday's triple; swaps zero or not, in pips or percent): the fills agree
price for price, the kernel and the live fold bar for bar, and the paper account, which books each rollover's
swap into its cash, ends on the kernel's equity.

Each of the three reaches the positions by its own route (the population kernel books trades, the live path
folds the step over the history and turns the decision into an order, the paper broker fills that order and
its resting levels from its own state in a registry), so any of them not running `sleeve.step_sleeve` would
part from the others here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emp_pipeline.broker.interface import OrderRequest
from emp_pipeline.broker.paper import PaperBroker, PriceBar
from emp_pipeline.domain.backtest import MarketArrays, simulate_strategy
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.execution import order_for_target, sleeve_rules, sleeve_target
from emp_pipeline.domain.financing import swap_nights, swap_terms
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType
from emp_pipeline.domain.sleeve import fold_sleeve, start_sleeve
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_account

CAPITAL = 1_000_000.0
COSTS = Costs(fee_bps=3.0, slippage_bps=2.0)


class _BarsSoFar:
    """The paper exchange's prices: the bars up to the current one, nothing later."""

    def __init__(self, times: Sequence[dt.datetime], market: MarketArrays) -> None:
        self._bars = [
            PriceBar(
                time,
                float(market.open[t, 0]),
                float(market.high[t, 0]),
                float(market.low[t, 0]),
                float(market.spread_grid()[t, 0]),
            )
            for t, time in enumerate(times)
        ]
        self._closes = market.close[:, 0]
        self.known = 0

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        return self._bars[self.known - 1].time if self.known else None

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        later = [bar for bar in self._bars[: self.known] if bar.time > after]
        return (later[0].time, later[0].open) if later else None

    def bars_since(self, symbol: str, since: dt.datetime) -> Sequence[PriceBar]:
        return [bar for bar in self._bars[: self.known] if bar.time >= since]

    def close_before(self, symbol: str, at: dt.datetime) -> float | None:
        before = [t for t, bar in enumerate(self._bars[: self.known]) if bar.time < at]
        return float(self._closes[before[-1]]) if before else None


def _instrument(swap: float, swap_type: SwapType) -> InstrumentMeta:
    """An FX-calendar instrument (rollovers 17:00 New York, Wednesday triple) paying ``swap`` on a long and
    earning half of it on a short, in pips (0.01) or percent a year."""
    return InstrumentMeta(
        "XYZ", "test", AssetClass.FX, "USD", 0.001, 2, 1.0, 1.0, 1.0, CALENDAR_24X5,
        swap_long=swap, swap_short=-swap / 2, swap_type=swap_type,
    )  # fmt: skip


def _market(seed: int, n_bars: int, spread: float, meta: InstrumentMeta) -> tuple[MarketArrays, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n_bars, 1)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.02, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, close.shape))
    atr = close * 0.02
    atr[:2] = np.nan
    signals = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=close.shape)
    signals = np.repeat(signals[::2], 2, axis=0)[:n_bars]
    dates = pd.date_range("2021-01-04", periods=n_bars, freq="D", tz="UTC")
    # The instrument's nights at each bar's start (daily bars every day: weekends finance none).
    nights = swap_nights(meta, dates)[:, None]
    terms = np.array([swap_terms(meta)])
    return (
        MarketArrays(
            dates, ("XYZ",), open_, high, low, close, atr, np.full(close.shape, spread), nights, terms
        ),
        signals,
    )


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "template.sqlite"
    upgrade_database(f"sqlite:///{path}")
    return path


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n_bars=st.integers(8, 30),
    stop_atr=st.floats(0.3, 3.0),
    take_profit_atr=st.floats(0.3, 4.0),
    fraction=st.floats(0.1, 1.0),
    max_hold=st.integers(1, 8),
    spread=st.sampled_from([0.0, 0.3, 1.5]),
    swap=st.sampled_from([0.0, -5.0, 2.0]),
    swap_type=st.sampled_from([SwapType.PIPS, SwapType.PERCENT]),
)
@example(  # percent swaps on a long and a short, whatever else hypothesis draws
    seed=7, n_bars=24, stop_atr=3.0, take_profit_atr=4.0, fraction=0.8, max_hold=8, spread=0.3, swap=-5.0,
    swap_type=SwapType.PERCENT,
)  # fmt: skip
def test_kernel_live_fold_and_paper_broker_give_the_same_trades_and_equity(
    registry_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    n_bars: int,
    stop_atr: float,
    take_profit_atr: float,
    fraction: float,
    max_hold: int,
    spread: float,
    swap: float,
    swap_type: SwapType,
) -> None:
    meta = _instrument(swap, swap_type)
    market, signals = _market(seed, n_bars, spread, meta)
    assert swap == 0.0 or n_bars < 5 or market.nights_grid().max() == 3.0  # premise: a triple night
    genes = RiskGenes(stop_atr, take_profit_atr, fraction, max_hold)
    genome = Genome(
        "both", Condition("what_x", ">", 0.0), Condition("what_x", "<", 0.0), None, ("bull_trend",), genes
    )
    kernel = simulate_strategy(genome, signals, market, COSTS)
    columns = [np.ascontiguousarray(a[:, 0]) for a in (market.open, market.high, market.low, market.close)]
    columns += [np.ascontiguousarray(market.atr[:, 0]), np.ascontiguousarray(signals[:, 0])]
    columns += [np.ascontiguousarray(market.spread_grid()[:, 0]), np.ascontiguousarray(market.nights[:, 0])]

    path = tmp_path_factory.mktemp("broker") / "registry.sqlite"
    path.write_bytes(registry_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    times = [stamp.to_pydatetime() for stamp in market.dates]
    prices = _BarsSoFar(times, market)
    broker = PaperBroker(engine, prices, costs=COSTS, initial_cash=CAPITAL, instruments={"XYZ": meta})
    try:
        for t in range(n_bars):
            prices.known = t + 1
            broker.settle_open_orders()  # this bar's open fills and its protective check
            # The live fold: the step over the bars so far, in one compiled call, gives the kernel's sleeve.
            state = fold_sleeve(
                start_sleeve(1.0), *(c[: t + 1] for c in columns), sleeve_rules(genes), COSTS.fill_costs(),
                market.swap_of(0),
            )  # fmt: skip
            assert state.equity == kernel.result.instrument_equity[0, t, 0]
            held = sum(p.quantity for p in broker.positions())
            order = order_for_target(
                strategy_id="s", symbol="XYZ", bar_time=times[t], current=held,
                target=sleeve_target(state, CAPITAL), reference_price=float(market.close[t, 0]),
                volume_step=1e-12, min_volume=1e-12,
            )  # fmt: skip
            if order is not None:
                broker.submit_order(
                    OrderRequest(
                        f"o{t}", "XYZ", order.side, order.quantity,
                        relative_stop_loss=order.stop_distance if order.opens_position else None,
                        relative_take_profit=order.take_profit_distance if order.opens_position else None,
                    )
                )  # fmt: skip
        with session_scope(engine) as session:
            cash = get_account(session, broker.account_id).cash
            fills = sorted(
                (fill.filled_at, fill.price)
                for order in orders_for_account(session, broker.account_id)
                for fill in fills_for_order(session, order.client_order_id)
            )
    finally:
        engine.dispose()
    held = sum(p.quantity for p in broker.positions())
    equity = cash + held * float(market.close[-1, 0])
    assert equity / CAPITAL == pytest.approx(kernel.result.equity[0, -1], rel=1e-9)
    if spread == 0.0:
        assert kernel.result.spread_costs[0] == 0.0
    if swap == 0.0:
        assert kernel.result.swap_costs[0] == 0.0
    trades = kernel.trades
    expected = sorted(
        [(d.to_pydatetime(), p) for d, p in zip(trades["entry_date"], trades["entry_price"], strict=True)]
        + [
            (d.to_pydatetime(), p)
            for d, p, reason in zip(
                trades["exit_date"], trades["exit_price"], trades["exit_reason"], strict=True
            )
            if reason != "end_of_data"
        ]
    )
    # A reversal is one paper fill for the kernel's exit and entry at the same price.
    assert sorted(set(fills)) == sorted(set(expected))
