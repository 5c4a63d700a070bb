"""Parity replay: the live path stepped through a Parquet lake and a SQLite paper account against the kernel.

Where the live engine's semantics coincide with the kernel's (no gap between a close and the next open, no
slippage, a fine volume grid, protective levels never touched) the two must be identical; where they do not,
the replay must say exactly where they part. Look-ahead in a feature or a rule is named on the live path.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.domain.anchored_perception import window_regimes
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Genome, RiskGenes
from emp_pipeline.domain.instruments import SwapType
from emp_pipeline.domain.risk import RiskLimits, position_fraction_ceiling
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.synthetic import SyntheticMarket, generate_market
from emp_pipeline.domain.timeframes import Timeframe, periods_per_year
from emp_pipeline.parity.gates import sensory_features
from emp_pipeline.parity.replay import ParityConfig, ParityInputError, run_parity
from emp_pipeline.parity.report import compare_trades, live_volumes
from emp_pipeline.settings import UNIVERSES_DIR, load_universe
from emp_pipeline_tests.unit.test_lookahead import (
    biased_cortex,
    biased_feature_genome,
    biased_rule_genome,
    correct_genome,
)

WARMUP_BARS = 260
WINDOW_BARS = 120
# Limits that never bind for a two-sleeve book: risk rejections are tested in unit/test_risk.py.
OPEN_LIMITS = RiskLimits(max_position_fraction=1.0, max_gross_exposure=1.0, daily_loss_limit=1.0)


def gapless(market: SyntheticMarket) -> SyntheticMarket:
    """Each open at the previous close: the close a live order is sized at is the price it fills at."""
    bars = market.bars.copy()
    previous = bars.groupby("symbol")["close"].shift(1)
    bars["open"] = previous.fillna(bars["open"])
    bars["high"] = np.maximum(bars["high"], bars["open"])
    bars["low"] = np.minimum(bars["low"], bars["open"])
    return dataclasses.replace(market, bars=bars)


def fine_grid(market: SyntheticMarket) -> tuple:
    return tuple(dataclasses.replace(m, step_volume=1e-10, min_volume=1e-10) for m in market.instruments)


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(n_instruments=2, n_bars=WARMUP_BARS + WINDOW_BARS, seed=3)


def window(market: SyntheticMarket) -> tuple[pd.Timestamp, pd.Timestamp]:
    dates = pd.DatetimeIndex(sorted(market.bars["date"].unique()))
    return dates[WARMUP_BARS], dates[-1] + pd.Timedelta(days=1)


def wide_stops() -> Genome:
    genome = correct_genome()
    return dataclasses.replace(
        genome, risk=dataclasses.replace(genome.risk, stop_atr=10.0, take_profit_atr=20.0)
    )


def test_correct_genome_is_identical_where_semantics_coincide(market: SyntheticMarket) -> None:
    smooth = gapless(market)
    start, end = window(smooth)
    config = ParityConfig(costs=Costs(fee_bps=1.0, slippage_bps=0.0), limits=OPEN_LIMITS, audit=4)
    report = run_parity(
        wide_stops(), smooth.bars, fine_grid(smooth), start, end, biased_cortex(smooth), config=config
    )
    # The premise: protective levels never fire (the paper broker has no stops; that is the next test).
    assert set(report.backtest_trades["exit_reason"]) <= {"signal", "max_holding", "end_of_data"}
    assert len(report.backtest_trades) >= 3
    assert report.passed, report.describe()
    assert len(report.live_trades) == len(report.backtest_trades)
    np.testing.assert_allclose(report.equity["live"], report.equity["backtest"], rtol=1e-9)
    assert report.n_bars == WINDOW_BARS and len(report.audited_bars) == 4


def grid(market: SyntheticMarket, step: float, minimum: float) -> tuple:
    return tuple(dataclasses.replace(m, step_volume=step, min_volume=minimum) for m in market.instruments)


@pytest.mark.parametrize("step", [0.01, 1.0, 7.0])
def test_volume_rounding_alone_is_not_a_divergence(market: SyntheticMarket, step: float) -> None:
    """Issue 14 point 6: the live order carries the kernel's quantity rounded down onto the volume grid
    (fine and coarse steps): the backtest is compared after the same rounding, so the replay passes and
    says how many trades were rounded, with every live quantity on the grid."""
    start, end = window(market)
    config = ParityConfig(limits=OPEN_LIMITS, audit=0)
    instruments = grid(market, step, step)
    report = run_parity(
        wide_stops(), market.bars, instruments, start, end, biased_cortex(market), config=config
    )
    assert len(report.backtest_trades) >= 3, "premise: the window has trades"
    assert report.passed, report.describe()
    assert report.rounded_trades == len(report.backtest_trades), "premise: every kernel quantity is off-grid"
    assert "after rounding volumes" in report.describe()
    live_quantities = report.live_trades["units"].to_numpy() * config.capital
    np.testing.assert_allclose(live_quantities / step, np.round(live_quantities / step), atol=1e-6)
    kernel_quantities = report.backtest_trades["units"].to_numpy() * config.capital
    np.testing.assert_allclose(
        live_quantities, np.floor(kernel_quantities / step + 1e-9) * step, rtol=1e-9, atol=1e-9
    )
    assert not np.allclose(report.equity["live"], report.equity["backtest"], rtol=1e-9, atol=0)


def test_entries_below_the_minimum_volume_are_expected_to_be_missing(market: SyntheticMarket) -> None:
    """With a minimum volume above every kernel quantity the live path sends no order: not a divergence."""
    start, end = window(market)
    config = ParityConfig(limits=OPEN_LIMITS, audit=0)
    minimum = 2 * config.capital / float(market.bars["close"].min())  # above any entry of a sleeve's equity
    report = run_parity(
        wide_stops(),
        market.bars,
        grid(market, 1.0, minimum),
        start,
        end,
        biased_cortex(market),
        config=config,
    )
    assert report.passed, report.describe()
    assert len(report.live_trades) == 0 and report.untradeable_trades == len(report.backtest_trades) > 0
    np.testing.assert_allclose(report.equity["live"], 1.0, rtol=1e-12)


def test_a_volume_beyond_rounding_still_fails(market: SyntheticMarket) -> None:
    """A live quantity that differs from the rounded kernel quantity by one step is a divergence, named."""
    start, end = window(market)
    config = ParityConfig(limits=OPEN_LIMITS, audit=0)
    report = run_parity(
        wide_stops(), market.bars, grid(market, 1.0, 1.0), start, end, biased_cortex(market), config=config
    )
    rounded, _ = live_volumes(report.backtest_trades, {m.symbol: m for m in market.instruments}, 1.0)
    assert compare_trades(rounded, report.live_trades) is not None  # premise: rounding at capital 1 differs
    placeable, _ = live_volumes(
        report.backtest_trades, {m.symbol: m for m in grid(market, 1.0, 1.0)}, config.capital
    )
    assert compare_trades(placeable, report.live_trades) is None
    off_by_a_step = report.live_trades.assign(
        units=report.live_trades["units"] + 1.0 / config.capital * (report.live_trades.index == 0)
    )
    found = compare_trades(placeable, off_by_a_step)
    assert found is not None and found.field == "units" and found.layer == "execution"


def test_stops_resting_at_the_paper_broker_fill_as_the_kernel_stops(market: SyntheticMarket) -> None:
    """A 0.25 ATR stop is touched inside bars: the broker's resting level must exit at the kernel's price."""
    smooth = gapless(market)
    start, end = window(smooth)
    tight = dataclasses.replace(correct_genome(), risk=RiskGenes(0.25, 20.0, 0.5, 100))
    config = ParityConfig(costs=Costs(fee_bps=1.0, slippage_bps=0.0), limits=OPEN_LIMITS, audit=0)
    report = run_parity(
        tight, smooth.bars, fine_grid(smooth), start, end, biased_cortex(smooth), config=config
    )
    stops = report.backtest_trades.loc[report.backtest_trades["exit_reason"] == "stop"]
    assert len(stops) >= 2, "premise: a 0.25 ATR stop is touched more than once"
    assert report.passed, report.describe()
    live = report.live_trades.set_index(["symbol", "entry_date"])
    for _, trade in stops.iterrows():
        assert live.loc[(trade["symbol"], trade["entry_date"]), "exit_price"] == pytest.approx(
            trade["exit_price"], rel=1e-12
        )


def test_biased_feature_is_named_by_the_replay(market: SyntheticMarket) -> None:
    start, end = window(market)
    config = ParityConfig(limits=OPEN_LIMITS, audit=3)
    report = run_parity(
        biased_feature_genome(),
        market.bars,
        fine_grid(market),
        start,
        end,
        biased_cortex(market),
        config=config,
    )
    inputs = [d for d in report.divergences if d.layer == "inputs"]
    assert "what_close_z" in {d.field for d in inputs}
    assert "what_rsi_14" not in {d.field for d in inputs}
    assert not report.decision_passed
    assert any("long_entry.all[1]" in note for note in report.notes)
    assert "what_close_z" in report.describe()


def test_biased_rule_is_named_by_the_replay(market: SyntheticMarket) -> None:
    start, end = window(market)
    config = ParityConfig(limits=OPEN_LIMITS, audit=3)
    report = run_parity(
        biased_rule_genome(), market.bars, fine_grid(market), start, end, biased_cortex(market), config=config
    )
    by_field = {d.field: d for d in report.divergences if d.layer == "inputs"}
    future = by_field["what_future_return"]
    assert future.date in report.audited_bars and np.isnan(future.live)
    assert "long_entry.all[1]" in by_field
    assert "long_entry.all[0]" not in by_field


def test_sizing_at_the_live_cap_trades_as_measured_and_above_it_does_not() -> None:
    """Issue 13 point 5 on a one-instrument book, where a sleeve holds all the strategy's equity: a genome
    sizing at the live cap (the GA's ceiling) has every entry approved and no divergence; the same genome
    sizing above the cap has its entries refused by the live check, which the replay reports."""
    single = gapless(generate_market(n_instruments=1, n_bars=WARMUP_BARS + WINDOW_BARS, seed=3))
    start, end = window(single)
    limits = RiskLimits(max_position_fraction=0.25, max_gross_exposure=1.0, daily_loss_limit=1.0)
    config = ParityConfig(costs=Costs(fee_bps=1.0, slippage_bps=0.0), limits=limits, audit=0)

    def replay(position_fraction: float):
        genome = wide_stops()
        genome = dataclasses.replace(
            genome, risk=dataclasses.replace(genome.risk, position_fraction=position_fraction)
        )
        return run_parity(
            genome, single.bars, fine_grid(single), start, end, biased_cortex(single), config=config
        )

    at_cap = replay(position_fraction_ceiling(limits))
    assert len(at_cap.backtest_trades) >= 2, "premise: the window has entries"
    assert at_cap.passed, at_cap.describe()
    assert not any("risk" in note for note in at_cap.notes), at_cap.notes
    above = replay(0.5)
    assert not above.passed
    assert any("risk rejected" in note and "25.00% of equity" in note for note in above.notes), above.notes
    assert above.first("execution") is not None


def test_window_outside_the_data_is_refused(market: SyntheticMarket) -> None:
    late = market.bars["date"].max() + pd.Timedelta(days=30)
    with pytest.raises(ParityInputError, match="no bars between"):
        run_parity(
            correct_genome(),
            market.bars,
            market.instruments,
            late,
            late + pd.Timedelta(days=30),
            biased_cortex(market),
        )


def _trade(
    symbol: str, entry: str, exit_: str, units: float = 0.01, price: float = 100.0
) -> dict[str, object]:
    return {
        "symbol": symbol,
        "direction": 1,
        "entry_date": pd.Timestamp(entry, tz="UTC"),
        "exit_date": pd.Timestamp(exit_, tz="UTC"),
        "units": units,
        "entry_price": price,
        "exit_price": price * 1.01,
        "entry_fee": 1e-4,
        "exit_fee": 1e-4,
    }


def test_trade_comparison_reports_the_earliest_field_over_symbols() -> None:
    backtest = pd.DataFrame(
        [_trade("A", "2020-01-02", "2020-01-10"), _trade("B", "2020-01-03", "2020-01-06")]
    )
    live = pd.DataFrame(
        [
            _trade("A", "2020-01-02", "2020-01-10", price=100.0 * (1 + 1e-15)),
            _trade("B", "2020-01-03", "2020-01-07"),
        ]
    )
    found = compare_trades(backtest, live)
    assert found is not None
    assert (found.symbol, found.field, found.date) == ("B", "exit_date", pd.Timestamp("2020-01-06", tz="UTC"))
    extra = pd.concat([live, pd.DataFrame([_trade("A", "2020-01-01", "2020-01-02")])], ignore_index=True)
    found = compare_trades(backtest, extra)
    assert found is not None and (found.symbol, found.field) == ("A", "entry_date")
    assert found.date == found.live == pd.Timestamp("2020-01-01", tz="UTC")
    shorter = compare_trades(backtest, live.iloc[:1])
    assert shorter is not None and (shorter.symbol, shorter.field, shorter.live) == ("B", "trade", "none")
    assert compare_trades(backtest, backtest) is None


@pytest.mark.parametrize("swap_type", [SwapType.PIPS, SwapType.PERCENT])
def test_hourly_fx_sample_replays_bar_by_bar_like_the_backtest(swap_type: SwapType) -> None:
    """Issue 12 points 4 and 5: the parity replay on the bundled EURUSD H1 2017 sample with its universe's
    terms (volume step 1,000, spread, swaps; and with percent swaps instead of its pips): every hour stepped
    through the lake, audits recomputed from the bars up to their hour only (a window reaching the next day
    would show as look-ahead), and the live path matches the kernel after volume rounding, its equity with
    the overnight swaps the paper account booked."""
    universe = load_universe(UNIVERSES_DIR / "sample_fx_h1.yaml")
    if swap_type is SwapType.PERCENT:  # about the pips' carry: 1.35% a year of the position's value
        terms = {"swap_type": swap_type, "swap_long": -1.35, "swap_short": 1.35}
        universe = dataclasses.replace(
            universe, instruments=tuple(dataclasses.replace(m, **terms) for m in universe.instruments)
        )
    source = SampleSource.for_universe(SAMPLE_DIR, universe)
    start_utc = pd.Timestamp("2017-01-01", tz="UTC")
    bars = source.fetch(universe.symbols, start_utc, pd.Timestamp("2017-03-01", tz="UTC"))
    hours = pd.DatetimeIndex(sorted(bars["date"].unique()))
    start, end = hours[-300], hours[-1] + pd.Timedelta(hours=1)
    # A month of H1 bars stands for the regimes' year, so labels settle inside the sample's two months.
    windows = StudyWindows(periods_per_year=periods_per_year(Timeframe.H1, CALENDAR_24X5) // 12)
    config = ParityConfig(costs=Costs(fee_bps=0.5, slippage_bps=0.0), limits=OPEN_LIMITS, audit=3, seed=2)
    report = run_parity(
        wide_stops(),
        bars,
        universe.instruments,
        start,
        end,
        sensory_features(universe.instruments),
        window_regimes("rules", windows),
        config=config,
    )
    assert len(report.backtest_trades) >= 2, "premise: the window has hourly trades"
    assert report.passed, report.describe()
    assert report.n_bars == 300 and all(bar != bar.normalize() for bar in report.audited_bars[:1])
    assert report.rounded_trades > 0  # EURUSD trades in steps of 1,000 units
    assert report.booked_swaps != 0.0  # held across 17:00 New York: equity matched with the swaps booked
    assert f"{start:%Y-%m-%d %H:%M}" in report.describe()
