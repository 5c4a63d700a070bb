"""No look-ahead, proven by property: outputs for bars up to t do not change when later bars are removed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emp_pipeline.domain.regimes import HmmConfig, HmmRegimeClassifier, RuleConfig, RuleRegimeClassifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import SyntheticMarket, generate_market

N_BARS = 700
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(n_instruments=2, n_bars=N_BARS, seed=11)


@pytest.fixture(scope="module")
def macro(market: SyntheticMarket) -> pd.DataFrame:
    """Macro released with a lag, plus one late revision-like row, to exercise the release-date alignment."""
    dates = pd.date_range(
        market.bars["date"].min() - pd.Timedelta(days=400), periods=1500, freq="D", tz="UTC"
    )
    rng = np.random.default_rng(5)
    frames = [
        pd.DataFrame(
            {
                "series": name,
                "date": dates,
                "available_from": dates + pd.Timedelta(days=lag),
                "value": level + np.cumsum(rng.normal(0, 0.05, len(dates))),
            }
        )
        for name, lag, level in (("DGS10", 1, 4.0), ("VIXCLS", 1, 18.0), ("DFF", 1, 2.0), ("WTI", 7, 60.0))
    ]
    return pd.concat(frames, ignore_index=True)


def _truncate(frame: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    return frame.loc[frame["date"] <= cutoff].reset_index(drop=True)


def _cutoff(market: SyntheticMarket, position: int) -> pd.Timestamp:
    return pd.Timestamp(np.sort(market.bars["date"].unique())[position])


def _assert_prefix_equal(full: pd.DataFrame, truncated: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    expected = _truncate(full, cutoff)
    assert len(expected) == len(truncated) > 0
    pd.testing.assert_frame_equal(truncated, expected, check_exact=True)


@given(position=st.integers(min_value=1, max_value=N_BARS - 2))
@PROPERTY
def test_features_ignore_later_bars(market: SyntheticMarket, macro: pd.DataFrame, position: int) -> None:
    cortex = SensoryCortex(market.instruments)
    cutoff = _cutoff(market, position)
    full = cortex.compute(market.bars, macro)
    truncated = cortex.compute(_truncate(market.bars, cutoff), macro)
    _assert_prefix_equal(full, truncated, cutoff)


@given(position=st.integers(min_value=1, max_value=N_BARS - 2))
@PROPERTY
def test_rule_regimes_ignore_later_bars(market: SyntheticMarket, position: int) -> None:
    cortex = SensoryCortex(market.instruments)
    classifier = RuleRegimeClassifier(RuleConfig(min_history=60, volatility_lookback=200))
    cutoff = _cutoff(market, position)
    full = classifier.classify(market.bars, cortex.compute(market.bars))
    short_bars = _truncate(market.bars, cutoff)
    truncated = classifier.classify(short_bars, cortex.compute(short_bars))
    _assert_prefix_equal(full, truncated, cutoff)


@pytest.fixture(scope="module")
def fitted_hmm(market: SyntheticMarket) -> HmmRegimeClassifier:
    train = market.bars.groupby("symbol").head(300)
    return HmmRegimeClassifier(HmmConfig(max_iterations=30)).fit(train)


@given(position=st.integers(min_value=1, max_value=N_BARS - 2))
@PROPERTY
def test_hmm_regimes_ignore_later_bars(
    market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier, position: int
) -> None:
    cutoff = _cutoff(market, position)
    full = fitted_hmm.classify(market.bars)
    truncated = fitted_hmm.classify(_truncate(market.bars, cutoff))
    _assert_prefix_equal(full, truncated, cutoff)


def test_property_has_teeth(market: SyntheticMarket) -> None:
    """A centred (look-ahead) moving average fails the same comparison, so the tests can fail."""
    close = market.bars.loc[market.bars["symbol"] == "SYN00", "close"].reset_index(drop=True)
    centred = close.rolling(21, center=True).mean()
    truncated = close.iloc[:300].rolling(21, center=True).mean()
    assert not np.allclose(centred.iloc[290:300], truncated.iloc[290:300], equal_nan=True)


def test_smoothed_posteriors_would_fail_where_the_filter_passes(
    market: SyntheticMarket, fitted_hmm: HmmRegimeClassifier
) -> None:
    """Why the classifier uses the forward filter: smoothing (forward-backward) changes with later bars."""
    from emp_pipeline.domain.regimes import _backward_statistics, _forward, _log_emission, _scaled_emission

    params = fitted_hmm.params["SYN00"]
    bars = market.bars.loc[market.bars["symbol"] == "SYN00"]
    observations = (
        bars["adj_close"].pipe(np.log).diff().to_numpy()[20:, None] - params.centre
    ) / params.scale

    def filtered_and_smoothed(rows: int) -> tuple[np.ndarray, np.ndarray]:
        emission, _ = _scaled_emission(_log_emission(observations[:rows], params.means, params.covariances))
        alpha, norm = _forward(emission, params.start, params.transition)
        gamma, _ = _backward_statistics(emission, params.transition, alpha, norm)
        return alpha, gamma

    # Cut two bars after a true regime switch, where later bars tell the smoother most.
    labels = market.true_regimes.loc[bars.index, "regime"].to_numpy()
    switches = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    cut = int(switches[switches > 150][0]) - 20 + 2
    alpha_full, gamma_full = filtered_and_smoothed(len(observations))
    alpha_short, gamma_short = filtered_and_smoothed(cut)
    np.testing.assert_array_equal(alpha_short, alpha_full[:cut])
    assert np.abs(gamma_short - gamma_full[:cut]).max() > 0.05
