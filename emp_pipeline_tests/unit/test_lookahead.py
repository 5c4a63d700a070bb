"""Look-ahead analysis: a feature normalised over the whole frame and a rule over the next bar's return are
named with the bar where they part; a genome on the causal cortex passes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes, RuleGroup
from emp_pipeline.domain.lookahead import (
    LookaheadInputError,
    analyse_lookahead,
    cut_points,
    rule_leaves,
)
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import SyntheticMarket, generate_market, synthetic_instrument

RISK = RiskGenes(stop_atr=3.0, take_profit_atr=6.0, position_fraction=0.5, max_holding_bars=30)


def correct_genome() -> Genome:
    return Genome(
        direction="long",
        long_entry=Condition("what_rsi_14", "crosses_above", 50.0),
        short_entry=None,
        exit=Condition("what_rsi_14", "<", 45.0),
        regimes=REGIME_LABELS,
        risk=RISK,
    )


def biased_feature_genome() -> Genome:
    """Reads a z-score of the close computed with the whole frame's mean and deviation."""
    return Genome(
        direction="long",
        long_entry=RuleGroup(
            "all", (Condition("what_rsi_14", ">", 45.0), Condition("what_close_z", ">", 0.0))
        ),
        short_entry=None,
        exit=Condition("what_rsi_14", "<", 40.0),
        regimes=REGIME_LABELS,
        risk=RISK,
    )


def biased_rule_genome() -> Genome:
    """Its second entry leaf compares the next bar's return: the rule peeks at tomorrow."""
    return Genome(
        direction="long",
        long_entry=RuleGroup(
            "all", (Condition("what_rsi_14", ">", 40.0), Condition("what_future_return", ">", 0.0))
        ),
        short_entry=None,
        exit=Condition("what_rsi_14", "<", 35.0),
        regimes=REGIME_LABELS,
        risk=RISK,
    )


def biased_cortex(market: SyntheticMarket):
    """The real cortex plus two columns that look ahead, the way such bugs are written."""
    cortex = SensoryCortex(market.instruments)

    def compute(bars: pd.DataFrame) -> pd.DataFrame:
        features = cortex.compute(bars)
        close = bars["adj_close"].to_numpy()
        by_symbol = bars.groupby("symbol")["adj_close"]
        features["what_close_z"] = (close - by_symbol.transform("mean")) / by_symbol.transform("std")
        log_close = np.log(bars["adj_close"])
        features["what_future_return"] = log_close.groupby(bars["symbol"]).shift(-1) - log_close
        return features

    return compute


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(n_instruments=2, n_bars=420, seed=7)


def test_correct_genome_passes(market: SyntheticMarket) -> None:
    report = analyse_lookahead(correct_genome(), market.bars, biased_cortex(market), n_cuts=5, seed=1)
    assert report.passed, report.describe()
    assert len(report.cuts) == 5
    assert set(report.features_checked) == {"what_rsi_14", "what_atr_14"}


def test_whole_frame_normalisation_is_named(market: SyntheticMarket) -> None:
    report = analyse_lookahead(biased_feature_genome(), market.bars, biased_cortex(market), n_cuts=5, seed=1)
    assert not report.passed
    features = [f for f in report.findings if f.kind == "feature"]
    assert [f.name for f in features] == ["what_close_z"]
    finding = features[0]
    # The mean over a shorter frame moves every z-score: the first bar already differs.
    assert finding.date == market.bars["date"].min()
    assert finding.full_value != finding.cut_value
    assert "long_entry.all[1]" in report.culprits
    assert "long_entry.all[0]" not in report.culprits
    assert "what_close_z" in report.describe()


def test_rule_over_next_bar_is_named_at_the_cut(market: SyntheticMarket) -> None:
    report = analyse_lookahead(biased_rule_genome(), market.bars, biased_cortex(market), n_cuts=4, seed=3)
    by_name = {f.name: f for f in report.findings}
    feature = by_name["what_future_return"]
    # Only the last bar before a cut lacks its future: that bar is where the two computations part.
    assert feature.date == feature.cut
    assert np.isnan(feature.cut_value) and np.isfinite(feature.full_value)
    rule = by_name["long_entry.all[1]"]
    assert rule.kind == "rule" and rule.reads == ("what_future_return",)
    assert "long_entry.all[0]" not in by_name


def test_window_limits_where_cuts_fall(market: SyntheticMarket) -> None:
    dates = pd.DatetimeIndex(sorted(market.bars["date"].unique()))
    start, end = dates[300], dates[350]
    cuts = cut_points(dates, 10, seed=4, start=start, end=end)
    assert len(cuts) == 10 and all(start <= cut < end for cut in cuts)
    assert cuts == cut_points(dates, 10, seed=4, start=start, end=end)
    with pytest.raises(LookaheadInputError, match="no bar to cut"):
        cut_points(dates, 3, seed=0, start=dates[-1])


def test_rule_leaf_paths() -> None:
    genome = biased_rule_genome()
    assert [path for path, _ in rule_leaves(genome)] == ["long_entry.all[0]", "long_entry.all[1]", "exit"]


def _exchange_bars(symbol: str, around: str) -> pd.DataFrame:
    """A smooth walk on the exchange's real sessions, 400 days before ``around`` to 20 after."""
    day = pd.Timestamp(around)
    sessions = trading_days("XNYS", day - pd.Timedelta(days=400), day + pd.Timedelta(days=20))
    close = np.linspace(1000.0, 1100.0, len(sessions))
    frame = pd.DataFrame({"date": sessions, "symbol": symbol, "open": close, "close": close})
    return normalise_bars(frame.assign(high=close + 1.0, low=close - 1.0, adj_close=close, volume=0.0))


def calendar_leaking_cortex(cortex: SensoryCortex):
    """The real cortex with days-to-next-session read from the exchange's actual sessions, closures
    included: the leak issue 13 found (2001-09-10 showed 7 days, 2012-10-26 showed 5)."""

    def compute(bars: pd.DataFrame) -> pd.DataFrame:
        features = cortex.compute(bars)
        dates = pd.DatetimeIndex(features["date"])
        sessions = trading_days("XNYS", dates[0], dates[-1] + pd.Timedelta(days=14))
        following = sessions.searchsorted(dates, side="right")
        features["when_days_to_next_session"] = (sessions[following] - dates).days.astype(float)
        return features

    return compute


@pytest.mark.parametrize(("cut_day", "leaked_days"), [("2001-09-10", 7.0), ("2012-10-26", 5.0)])
def test_a_feature_reading_unannounced_closures_is_named_and_the_scheduled_one_passes(
    cut_day: str, leaked_days: float
) -> None:
    bars = _exchange_bars("SPX", cut_day)
    cortex = SensoryCortex([synthetic_instrument("SPX", calendar="XNYS")])
    genome = Genome(
        direction="long",
        long_entry=Condition("when_days_to_next_session", ">", 4.0),
        short_entry=None,
        exit=None,
        regimes=REGIME_LABELS,
        risk=RISK,
    )
    day = pd.Timestamp(cut_day, tz="UTC")
    window = {"start": day, "end": day + pd.Timedelta(days=1)}  # the one cut: the close before the closure
    leaky = analyse_lookahead(genome, bars, calendar_leaking_cortex(cortex), **window)
    assert not leaky.passed
    finding = next(f for f in leaky.findings if f.kind == "feature")
    assert finding.name == "when_days_to_next_session" and finding.date == day
    assert (finding.full_value, finding.cut_value) == (leaked_days, 1.0 if cut_day == "2001-09-10" else 3.0)
    assert "long_entry" in leaky.culprits
    assert analyse_lookahead(genome, bars, cortex.compute, **window).passed
