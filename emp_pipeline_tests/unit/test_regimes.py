"""Regime classifiers: the frame contract, the rules' logic, the HMM's filter, accuracy and determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.regimes import (
    PROBABILITY_COLUMNS,
    REGIME_COLUMNS,
    REGIME_LABELS,
    HmmConfig,
    HmmRegimeClassifier,
    RegimeConfig,
    RegimeError,
    RuleConfig,
    RuleRegimeClassifier,
    _forward,
    _log_emission,
    label_order,
    make_classifier,
)
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import SyntheticMarket, balanced_accuracy, generate_market

TRAIN_BARS = 1500


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(n_instruments=3, n_bars=3000, seed=21)


@pytest.fixture(scope="module")
def features(market: SyntheticMarket) -> pd.DataFrame:
    return SensoryCortex(market.instruments).compute(market.bars)


@pytest.fixture(scope="module")
def fitted_hmm(market: SyntheticMarket) -> HmmRegimeClassifier:
    train = market.bars.groupby("symbol").head(TRAIN_BARS)
    return HmmRegimeClassifier().fit(train)


def _assert_regime_contract(frame: pd.DataFrame, rows: int) -> None:
    assert list(frame.columns) == list(REGIME_COLUMNS)
    assert len(frame) == rows
    assert str(frame["date"].dtype) == "datetime64[ns, UTC]"
    assert frame["warmup"].dtype == bool
    assert set(frame["regime"]) <= set(REGIME_LABELS)
    np.testing.assert_allclose(frame[list(PROBABILITY_COLUMNS)].sum(axis=1), 1.0)
    probabilities = frame[list(PROBABILITY_COLUMNS)].to_numpy()
    assert (probabilities >= 0).all()
    winners = np.asarray(REGIME_LABELS, dtype=object)[probabilities.argmax(axis=1)]
    settled = ~frame["warmup"].to_numpy()
    assert (winners[settled] == frame["regime"].to_numpy()[settled]).all()
    assert (frame.loc[frame["warmup"], "regime"] == "range").all()


def test_rule_frame_contract(market: SyntheticMarket, features: pd.DataFrame) -> None:
    regimes = make_classifier().classify(market.bars, features)
    _assert_regime_contract(regimes, len(market.bars))
    assert regimes[["date", "symbol"]].equals(market.bars[["date", "symbol"]])
    # Warm-up lasts until the volatility percentile has `min_history` bars of that symbol.
    first_settled = regimes.loc[~regimes["warmup"]].groupby("symbol").head(1).index
    positions = regimes.groupby("symbol").cumcount()
    assert (positions[first_settled] == RuleConfig().min_history - 1 + 20).all()


def _rule_features(momentum: list[float], volatility: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=len(momentum), tz="UTC"),
            "symbol": "X",
            "what_momentum_60": momentum,
            "what_volatility_20": volatility,
        }
    )


def test_rules_follow_their_thresholds() -> None:
    # Volatility rising each bar is always at its own 100th percentile; falling bars rank low.
    calm = _rule_features([0.0, 2.0, -2.0, 0.5, 2.0], [0.05, 0.04, 0.03, 0.02, 0.01])
    classifier = RuleRegimeClassifier(RuleConfig(min_history=1, trend_threshold=1.0, volatility_quantile=0.9))
    labels = classifier.classify(pd.DataFrame(), calm)["regime"].tolist()
    assert labels == ["high_volatility", "bull_trend", "bear_trend", "range", "bull_trend"]
    rising = _rule_features([0.0, 2.0, -2.0], [0.01, 0.02, 0.03])
    assert classifier.classify(pd.DataFrame(), rising)["regime"].tolist() == ["high_volatility"] * 3


def test_rules_do_not_depend_on_where_history_starts(market: SyntheticMarket, features: pd.DataFrame) -> None:
    """With `volatility_lookback` bars of look-back, a partitioned run labels bars like a full run."""
    classifier = RuleRegimeClassifier()
    full = classifier.classify(market.bars, features)
    position = features.groupby("symbol").cumcount()
    late = features.loc[position >= 100].reset_index(drop=True)
    partial = classifier.classify(market.bars, late)
    settled = (position[position >= 100] >= 100 + 20 + RuleConfig().volatility_lookback).to_numpy()
    assert settled.sum() > 1000
    pd.testing.assert_frame_equal(
        partial.loc[settled].reset_index(drop=True),
        full.loc[position >= 100].loc[settled].reset_index(drop=True),
        check_exact=True,
    )


def test_hmm_reaches_the_accuracy_line_out_of_sample(
    market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier
) -> None:
    regimes = fitted_hmm.classify(market.bars)
    _assert_regime_contract(regimes, len(market.bars))
    out_of_sample = (market.bars.groupby("symbol").cumcount() >= TRAIN_BARS).to_numpy()
    accuracy = balanced_accuracy(
        market.true_regimes["regime"].to_numpy()[out_of_sample], regimes["regime"].to_numpy()[out_of_sample]
    )
    assert accuracy >= 0.80


def test_hmm_is_deterministic(market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier) -> None:
    train = market.bars.groupby("symbol").head(TRAIN_BARS)
    again = HmmRegimeClassifier().fit(train)
    pd.testing.assert_frame_equal(
        again.classify(market.bars), fitted_hmm.classify(market.bars), check_exact=True
    )


def test_label_order_uses_variance_then_mean() -> None:
    means = np.array([[0.5], [-0.1], [0.0], [-0.6]])
    covariances = np.array([[[1.0]], [[9.0]], [[0.5]], [[2.0]]])
    # bull = highest mean among non-max-variance states, bear = lowest, range = the other.
    assert label_order(means, covariances).tolist() == [0, 3, 2, 1]


def test_forward_filter_matches_brute_force_bayes() -> None:
    rng = np.random.default_rng(3)
    k, n = 3, 6
    transition = rng.dirichlet(np.ones(k) * 2, size=k)
    start = rng.dirichlet(np.ones(k))
    means = np.array([[-1.0], [0.0], [1.5]])
    covariances = np.array([[[0.5]], [[1.0]], [[2.0]]])
    observations = rng.normal(size=(n, 1))
    emission = np.exp(_log_emission(observations, means, covariances))
    filtered, _ = _forward(emission, start, transition)
    for t in range(n):
        joint = np.zeros(k)
        for path in itertools.product(range(k), repeat=t + 1):
            weight = start[path[0]] * emission[0, path[0]]
            for step in range(1, t + 1):
                weight *= transition[path[step - 1], path[step]] * emission[step, path[step]]
            joint[path[-1]] += weight
        np.testing.assert_allclose(filtered[t], joint / joint.sum(), rtol=1e-10)


def test_hmm_filter_is_stable_on_extreme_moves(
    market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier
) -> None:
    bars = market.bars.copy()
    crash = bars.index[(bars["symbol"] == "SYN00")][2000]
    bars.loc[crash:, ["open", "high", "low", "close", "adj_close"]] *= np.where(
        bars.loc[crash:, "symbol"].to_numpy()[:, None] == "SYN00", 1e-6, 1.0
    )
    regimes = fitted_hmm.classify(bars)
    assert not regimes[list(PROBABILITY_COLUMNS)].isna().any().any()
    assert regimes.loc[crash, "regime"] == "high_volatility"


def test_hmm_usage_errors(market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier) -> None:
    with pytest.raises(RegimeError, match="not fitted"):
        HmmRegimeClassifier().classify(market.bars)
    other = generate_market(n_instruments=5, n_bars=50, seed=1).bars
    with pytest.raises(RegimeError, match="no HMM fitted for symbol 'SYN03'"):
        fitted_hmm.classify(other)
    with pytest.raises(RegimeError, match="training window"):
        HmmRegimeClassifier().fit(other.groupby("symbol").head(30))


def test_make_classifier_from_config() -> None:
    assert isinstance(make_classifier(), RuleRegimeClassifier)
    hmm = make_classifier({"kind": "hmm", "hmm": {"seed": 4, "use_log_volatility": True}})
    assert isinstance(hmm, HmmRegimeClassifier)
    assert hmm.config.seed == 4 and hmm.config.use_log_volatility
    rules = make_classifier(RegimeConfig(rules=RuleConfig(trend_threshold=2.0)))
    assert isinstance(rules, RuleRegimeClassifier) and rules.config.trend_threshold == 2.0
    with pytest.raises(RegimeError, match="unknown regime classifier kind"):
        make_classifier({"kind": "oracle"})
    with pytest.raises(RegimeError, match="unknown hmm settings"):
        make_classifier({"kind": "hmm", "hmm": {"states": 5}})


def test_hmm_with_log_volatility_observations(market: SyntheticMarket) -> None:
    train = market.bars.groupby("symbol").head(TRAIN_BARS)
    classifier = HmmRegimeClassifier(HmmConfig(use_log_volatility=True, max_iterations=40)).fit(train)
    regimes = classifier.classify(market.bars)
    _assert_regime_contract(regimes, len(market.bars))
    assert classifier.params["SYN00"].means.shape == (4, 2)


def test_both_classifiers_call_october_2008_high_volatility() -> None:
    """On real S&P 500 bars (bundled sample): the crash month is high volatility for both classifiers."""
    from emp_pipeline.data.sample import SampleSource
    from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta

    bars = SampleSource().fetch(["^GSPC"], "1999-01-01", "2010-12-31")
    instrument = InstrumentMeta("^GSPC", "S&P 500", AssetClass.INDEX, "USD", 0.01, 2, 1.0, 1.0, 1.0, "XNYS")
    features = SensoryCortex([instrument]).compute(bars)
    rules = make_classifier().classify(bars, features).set_index("date")
    hmm = make_classifier({"kind": "hmm"}).fit(bars.loc[bars["date"] < "2007-01-01"], features)
    filtered = hmm.classify(bars, features).set_index("date")
    october = slice(pd.Timestamp("2008-10-01", tz="UTC"), pd.Timestamp("2008-10-31", tz="UTC"))
    assert (rules.loc[october, "regime"] == "high_volatility").all()
    assert (filtered.loc[october, "regime"] == "high_volatility").mean() > 0.9


def test_no_bars_give_an_empty_regime_frame(fitted_hmm: HmmRegimeClassifier) -> None:
    from emp_pipeline.domain.bars import empty_bars

    bars = empty_bars()
    features = SensoryCortex([]).compute(bars)
    for regimes in (make_classifier().classify(bars, features), fitted_hmm.classify(bars)):
        assert regimes.empty and list(regimes.columns) == list(REGIME_COLUMNS)
