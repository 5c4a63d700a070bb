"""Research on hourly FX bars: no look-ahead, annualisation per timeframe, the FX calendar in bar checks.

The bars are the bundled EURUSD H1 sample (2017), computed exactly as the perception assets compute them
(year-anchored, with the H1 windows of domain/study_windows.py).
"""

from datetime import date
from functools import cache

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.domain.anchored_perception import classify_by_year, compute_features_by_year
from emp_pipeline.domain.bar_quality import check_calendar_gaps, check_on_calendar
from emp_pipeline.domain.evolution import EvolutionConfig, feature_space, random_genome
from emp_pipeline.domain.genome import feature_panel, panel_signals
from emp_pipeline.domain.metrics import performance_metrics, sharpe_ratios
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.sensory import FEATURE_COLUMNS, SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.timeframes import Timeframe, bar_open_times
from emp_pipeline.settings import UNIVERSES_DIR, load_universe

UNIVERSE = load_universe(UNIVERSES_DIR / "sample_fx_h1.yaml")
H1 = StudyWindows.for_universe(UNIVERSE.timeframe, UNIVERSE.calendars.values(), train_months=3)
# A short ranking window so the test sees settled regimes inside the sample's single year.
SHORT = StudyWindows(periods_per_year=H1.periods_per_year // 12)
CUT = pd.Timestamp("2017-03-15 13:00", tz="UTC")


def _utc(stamp: str) -> pd.Timestamp:
    return pd.Timestamp(stamp, tz="UTC")


@cache
def _bars() -> pd.DataFrame:
    source = SampleSource.for_universe(SAMPLE_DIR, UNIVERSE)
    return source.fetch(UNIVERSE.symbols, _utc("2017-01-01"), _utc("2017-05-01"))


def _perceive(bars: pd.DataFrame, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    cortex = SensoryCortex(UNIVERSE.instruments)
    features = compute_features_by_year(cortex, bars, None, _utc("2017-01-01"), end)
    regimes = classify_by_year("rules", bars, features, _utc("2017-01-01"), end, windows=SHORT)
    return features, regimes


def test_hourly_features_regimes_and_signals_do_not_change_when_later_bars_are_removed():
    bars = _bars()
    full_features, full_regimes = _perceive(bars, _utc("2017-05-01"))
    truncated = bars.loc[bars["date"] <= CUT]
    cut_features, cut_regimes = _perceive(truncated, _utc("2017-05-01"))

    before = full_features["date"] <= CUT
    assert before.sum() == len(cut_features) > 1200
    pd.testing.assert_frame_equal(full_features.loc[before].reset_index(drop=True), cut_features)
    pd.testing.assert_frame_equal(
        full_regimes.loc[full_regimes["date"] <= CUT].reset_index(drop=True), cut_regimes
    )
    assert (~cut_regimes["warmup"]).sum() > 500  # settled labels are compared, not only warm-up rows

    full_panel, cut_panel = (
        feature_panel(full_features, full_regimes),
        feature_panel(cut_features, cut_regimes),
    )
    space = feature_space(cut_panel, EvolutionConfig().excluded_features)
    stream = RandomStream(5)
    for genome in [random_genome(stream, space, 4) for _ in range(20)]:
        full_signals = panel_signals(genome, full_panel)[: len(cut_panel.dates)]
        np.testing.assert_array_equal(full_signals, panel_signals(genome, cut_panel))


def test_hourly_features_are_complete_after_warmup_and_keep_every_hour():
    features, _ = _perceive(_bars(), _utc("2017-05-01"))
    # The longest look-back is 252 bars, counted in hours here: the first 251 hours are warm-up, no more.
    assert features["warmup"].iloc[:251].all() and not features["warmup"].iloc[251:].any()
    settled = features.loc[~features["warmup"]]
    assert not settled.loc[:, list(FEATURE_COLUMNS)].isna().any().any()
    assert pd.DatetimeIndex(features["date"]).hour.nunique() == 24


def test_metrics_annualise_with_the_universe_timeframe():
    rng = np.random.default_rng(3)
    returns = rng.normal(2e-5, 1e-3, 2000)
    per_bar = float(sharpe_ratios(returns, periods_per_year=1))
    assert H1.periods_per_year == 6240
    assert float(sharpe_ratios(returns, H1.periods_per_year)) == pytest.approx(per_bar * np.sqrt(6240))
    daily = StudyWindows.for_universe(Timeframe.D1, ["24x5"])
    assert float(sharpe_ratios(returns, daily.periods_per_year)) == pytest.approx(per_bar * np.sqrt(260))
    metrics = performance_metrics(returns, periods_per_year=H1.periods_per_year)
    assert metrics.annualised_volatility == pytest.approx(returns.std(ddof=1) * np.sqrt(6240))
    assert metrics.cagr == pytest.approx(np.prod(1 + returns) ** (6240 / 2000) - 1)


def _fx_week(start: str, end: str) -> pd.DataFrame:
    opens = bar_open_times("24x5", Timeframe.H1, _utc(start), _utc(end))
    return pd.DataFrame({"symbol": "EURUSD", "date": opens})


@pytest.mark.parametrize(
    ("first", "last", "opens_at"),
    [
        # Winter: the FX week opens Sunday 22:00 UTC (17:00 New York).
        ("2017-03-05", "2017-03-10", "2017-03-05 22:00"),
        # New York moved to summer time on Sunday 12 March 2017: that week opens at 21:00 UTC.
        ("2017-03-12", "2017-03-17", "2017-03-12 21:00"),
        # Back to winter time on Sunday 5 November 2017.
        ("2017-11-05", "2017-11-10", "2017-11-05 22:00"),
    ],
)
def test_a_complete_fx_week_has_no_gap_and_no_bar_off_calendar_across_dst(first, last, opens_at):
    week = _fx_week(f"{first} 00:00", f"{last} 23:59")
    assert week["date"].iloc[0] == _utc(opens_at)
    instruments = UNIVERSE.instruments
    gaps = check_calendar_gaps(
        week, instruments, date.fromisoformat(first), date.fromisoformat(last), Timeframe.H1
    )
    assert gaps.passed, gaps.description
    assert check_on_calendar(week, instruments, Timeframe.H1).passed


def test_weekends_are_not_gaps_but_a_missing_hour_is_and_a_saturday_bar_is_off_calendar():
    instruments = UNIVERSE.instruments
    fortnight = _fx_week("2017-03-01 00:00", "2017-03-15 00:00")
    window = (date(2017, 3, 1), date(2017, 3, 14))
    assert check_calendar_gaps(fortnight, instruments, *window, Timeframe.H1).passed

    missing = fortnight.loc[fortnight["date"] != _utc("2017-03-08 14:00")]
    outcome = check_calendar_gaps(missing, instruments, *window, Timeframe.H1)
    assert not outcome.passed and outcome.failures == 1
    assert outcome.examples == ("EURUSD 2017-03-08 14:00 UTC",)

    # The summer week's first hour read in the winter week: Sunday 21:00 UTC is before the 22:00 open.
    early = pd.concat(
        [
            fortnight,
            pd.DataFrame(
                {"symbol": ["EURUSD"] * 2, "date": [_utc("2017-03-04 12:00"), _utc("2017-03-05 21:00")]}
            ),
        ],
        ignore_index=True,
    )
    off = check_on_calendar(early, instruments, Timeframe.H1)
    assert off.failures == 2
    assert off.examples[0] == "EURUSD 2017-03-04 12:00 UTC (Saturday) is not a 24x5 trading time"
