"""The synthetic regime market: seeded, canonical, and faithful to the regime laws it was given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.bars import validate_bars
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.synthetic import (
    WELL_SEPARATED_REGIMES,
    RegimeSpec,
    SyntheticMarketError,
    balanced_accuracy,
    generate_market,
    transition_matrix,
)


def test_same_seed_same_market_bit_for_bit() -> None:
    first = generate_market(n_instruments=3, n_bars=400, seed=7)
    second = generate_market(n_instruments=3, n_bars=400, seed=7)
    pd.testing.assert_frame_equal(first.bars, second.bars, check_exact=True)
    pd.testing.assert_frame_equal(first.true_regimes, second.true_regimes, check_exact=True)
    other = generate_market(n_instruments=3, n_bars=400, seed=8)
    assert not np.array_equal(first.bars["close"].to_numpy(), other.bars["close"].to_numpy())


def test_bars_are_canonical_and_labels_line_up() -> None:
    market = generate_market(n_instruments=4, n_bars=300, seed=1)
    validate_bars(market.bars)
    assert market.bars["symbol"].unique().tolist() == ["SYN00", "SYN01", "SYN02", "SYN03"]
    assert (market.bars.groupby("symbol").size() == 300).all()
    assert market.true_regimes[["date", "symbol"]].equals(market.bars[["date", "symbol"]])
    assert set(market.true_regimes["regime"]) <= set(REGIME_LABELS)
    assert [meta.symbol for meta in market.instruments] == ["SYN00", "SYN01", "SYN02", "SYN03"]


def test_returns_follow_each_regimes_law() -> None:
    market = generate_market(n_instruments=4, n_bars=5000, seed=3)
    bars = market.bars
    returns = np.log(bars["close"]).groupby(bars["symbol"]).diff()
    for spec in WELL_SEPARATED_REGIMES:
        in_regime = returns[(market.true_regimes["regime"] == spec.label).to_numpy()].dropna()
        assert len(in_regime) > 1000
        assert in_regime.std() == pytest.approx(spec.volatility, rel=0.08)
        standard_error = spec.volatility / np.sqrt(len(in_regime))
        expected_mean = spec.drift - 0.5 * spec.volatility**2
        assert in_regime.mean() == pytest.approx(expected_mean, abs=4 * standard_error)


def test_regimes_persist_as_specified() -> None:
    market = generate_market(n_instruments=5, n_bars=4000, seed=4)
    labels = market.true_regimes["regime"].to_numpy()
    same_symbol = (
        market.true_regimes["symbol"].to_numpy()[1:] == market.true_regimes["symbol"].to_numpy()[:-1]
    )
    switches = (labels[1:] != labels[:-1]) & same_symbol
    mean_duration = same_symbol.sum() / switches.sum()
    assert 40 < mean_duration < 90
    matrix = transition_matrix(WELL_SEPARATED_REGIMES)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(SyntheticMarketError, match="not one of"):
        generate_market(regimes=(RegimeSpec("moon", 0.0, 0.01, 10.0), RegimeSpec("range", 0.0, 0.01, 10.0)))
    with pytest.raises(SyntheticMarketError, match="volatility > 0"):
        generate_market(
            regimes=(RegimeSpec("range", 0.0, 0.0, 10.0), RegimeSpec("bull_trend", 0.0, 0.01, 10.0))
        )
    with pytest.raises(SyntheticMarketError, match="at least 1 instrument"):
        generate_market(n_instruments=0)


def test_balanced_accuracy_weights_classes_equally() -> None:
    truth = np.array(["a"] * 90 + ["b"] * 10, dtype=object)
    always_a = np.array(["a"] * 100, dtype=object)
    assert balanced_accuracy(truth, always_a) == pytest.approx(0.5)
    assert balanced_accuracy(truth, truth) == 1.0
    with pytest.raises(SyntheticMarketError):
        balanced_accuracy(truth, always_a[:50])
