"""Baselines and the null model: buy-and-hold by hand, the null's draws, percentiles, and the SPA test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import MarketArrays, market_arrays
from emp_pipeline.domain.baselines import (
    BaselineInputError,
    buy_and_hold,
    compare_with_null,
    null_genomes,
    period_baselines,
    superior_predictive_ability,
)
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.evolution import EvolutionConfig, feature_space
from emp_pipeline.domain.genome import feature_panel, genome_features, strategy_id
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.regimes import RuleRegimeClassifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import generate_market


def test_buy_and_hold_buys_every_instrument_at_the_second_open_and_marks_at_the_last_close():
    dates = pd.date_range("2021-01-04", periods=4, freq="B", tz="UTC")
    opens = np.array([[100.0, 50.0], [101.0, 49.0], [103.0, 52.0], [104.0, 51.0]])
    closes = np.array([[100.5, 50.5], [102.0, 50.0], [104.0, 51.0], [106.0, 53.0]])
    atr = np.full_like(opens, 1.0)
    market = MarketArrays(dates, ("A", "B"), opens, opens + 3.0, opens - 3.0, closes, atr)
    costs = Costs(fee_bps=10.0, slippage_bps=5.0)
    result = buy_and_hold(market, costs)
    # Each half of the capital: units decided at the first close, filled at the second open plus slippage,
    # a fee on the notional, then marked at the closes (no exit costs at the end of data).
    equity = []
    for bar in range(4):
        total = 0.0
        for k in range(2):
            units = 0.5 / closes[0, k]
            fill = opens[1, k] * (1 + 5e-4)
            cash = 0.5 - units * fill - units * fill * 1e-3
            total += cash + units * closes[bar, k] if bar >= 1 else 0.5
        equity.append(total)
    np.testing.assert_allclose(result.equity[0], equity, rtol=1e-12)
    assert result.trade_counts[0] == 2


def _chain(n_bars: int = 700, seed: int = 4):
    bars = generate_market(n_instruments=2, n_bars=n_bars, seed=seed).bars
    instruments = [
        InstrumentMeta(symbol, symbol, AssetClass.INDEX, "USD", 0.01, 2, 1.0, 0.1, 0.1, "24x5")
        for symbol in sorted(bars["symbol"].unique())
    ]
    features = SensoryCortex(instruments).compute(bars)
    regimes = RuleRegimeClassifier().classify(bars, features)
    panel = feature_panel(features, regimes)
    return panel, market_arrays(bars, features, dates=panel.dates, symbols=panel.symbols)


def test_null_genomes_come_from_the_gene_pool_and_repeat_with_the_seed():
    panel, _ = _chain()
    space = feature_space(panel, excluded=("what_rsi_14",))
    first = null_genomes(space, 50, seed=3, max_conditions=3)
    assert [strategy_id(g) for g in first] == [strategy_id(g) for g in null_genomes(space, 50, 3, 3)]
    assert [strategy_id(g) for g in first] != [strategy_id(g) for g in null_genomes(space, 50, 4, 3)]
    assert set().union(*(genome_features(g) for g in first)) <= set(space.names)
    with pytest.raises(BaselineInputError, match="at least one"):
        null_genomes(space, 0, 3, 3)


def test_percentile_and_p_value_against_the_null():
    null = np.array([-1.0, 0.0, 0.0, 0.5, 2.0])
    best = compare_with_null(3.0, null)
    assert best.percentile == 100.0 and best.p_value == pytest.approx(1 / 6)
    tied = compare_with_null(0.0, null)
    assert tied.percentile == pytest.approx(100 * (1 + 1.0) / 5) and tied.p_value == pytest.approx(5 / 6)
    assert compare_with_null(-5.0, null).p_value == 1.0
    with pytest.raises(BaselineInputError):
        compare_with_null(1.0, np.array([]))


def test_spa_finds_a_skilled_candidate_and_not_noise_and_repeats_with_its_seed():
    rng = np.random.default_rng(0)
    benchmark = rng.normal(0.0, 0.01, 250)
    noise = rng.normal(0.0, 0.01, (40, 250))
    skilled = noise.copy()
    skilled[5] = benchmark + 0.003 + rng.normal(0.0, 0.002, 250)
    assert superior_predictive_ability(benchmark, skilled, seed=1).consistent < 0.05
    found = superior_predictive_ability(benchmark, noise, seed=1)
    assert found.consistent > 0.1 and found == superior_predictive_ability(benchmark, noise, seed=1)
    assert superior_predictive_ability(benchmark[:5], noise[:, :5], seed=1) is None
    assert superior_predictive_ability(benchmark, np.tile(benchmark, (3, 1)), seed=1) is None


def test_period_baselines_put_candidates_against_buy_and_hold_and_a_thousand_random_genomes():
    panel, market = _chain(n_bars=800)
    train_end, test_end = panel.dates[700], panel.dates[-1] + pd.Timedelta(days=1)
    training = panel.window(None, train_end)
    test_panel, test_market = panel.window(train_end, test_end), market.window(train_end, test_end)
    config = EvolutionConfig()
    candidates = np.random.default_rng(2).normal(0.0, 0.01, (20, len(test_panel.dates)))
    baselines = period_baselines(training, test_panel, test_market, candidates, config, seed=9)
    assert baselines.null_returns.shape == (1_000, len(test_panel.dates))
    assert baselines.buy_and_hold.shape == (len(test_panel.dates),)
    assert baselines.spa is not None and baselines.spa.n_candidates == 20
    again = period_baselines(training, test_panel, test_market, candidates, config, seed=9)
    np.testing.assert_array_equal(again.null_sharpes, baselines.null_sharpes)
    comparison = baselines.against_null(float(np.max(baselines.null_sharpes)) + 1.0)
    assert comparison.percentile == 100.0 and comparison.p_value == pytest.approx(1 / 1001)


def test_the_null_draws_its_sizing_under_the_same_ceiling_as_the_ga():
    panel, _ = _chain()
    space = feature_space(panel)
    capped = null_genomes(space, 200, seed=3, max_conditions=3, max_position_fraction=0.25)
    assert max(g.risk.position_fraction for g in capped) <= 0.25
    assert max(g.risk.position_fraction for g in null_genomes(space, 200, 3, 3)) > 0.25
