"""The year-anchored perception the assets store is the computation the look-ahead and parity gates judge."""

import pandas as pd

from emp_pipeline.domain.anchored_perception import (
    classify_by_year,
    compute_features_by_year,
    window_features,
    window_regimes,
    year_blocks,
)
from emp_pipeline.domain.lookahead import default_regimes
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.parity.gates import sensory_features

DAILY = StudyWindows(252)
MARKET = generate_market(n_instruments=2, n_bars=900, seed=11, start="2004-06-01")


def _utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_year_blocks_cut_a_window_at_each_new_year() -> None:
    blocks = list(year_blocks(_utc("2005-11-01"), _utc("2007-02-01")))
    assert blocks == [
        (2005, _utc("2005-11-01"), _utc("2006-01-01")),
        (2006, _utc("2006-01-01"), _utc("2007-01-01")),
        (2007, _utc("2007-01-01"), _utc("2007-02-01")),
    ]


def test_the_gates_compute_features_as_the_asset_stores_them() -> None:
    bars = MARKET.bars
    start, end = bars["date"].min(), bars["date"].max() + pd.Timedelta(days=1)
    stored = compute_features_by_year(SensoryCortex(MARKET.instruments), bars, None, start, end)

    judged = sensory_features(MARKET.instruments)(bars)

    pd.testing.assert_frame_equal(judged, stored)
    assert window_features(SensoryCortex(MARKET.instruments))(bars.iloc[0:0]).empty


def test_the_gates_classify_regimes_as_the_asset_stores_them() -> None:
    bars = MARKET.bars
    features = sensory_features(MARKET.instruments)(bars)
    start, end = bars["date"].min(), bars["date"].max() + pd.Timedelta(days=1)
    stored = classify_by_year("rules", bars, features, start, end, windows=DAILY)

    pd.testing.assert_frame_equal(window_regimes("rules", DAILY)(bars, features), stored)
    pd.testing.assert_frame_equal(default_regimes(bars, features), stored)


def test_a_day_does_not_depend_on_how_the_window_was_split() -> None:
    bars, cortex = MARKET.bars, SensoryCortex(MARKET.instruments)
    whole = compute_features_by_year(cortex, bars, None, _utc("2006-03-01"), _utc("2007-01-01"))
    halves = pd.concat(
        [
            compute_features_by_year(cortex, bars, None, _utc("2006-03-01"), _utc("2006-08-01")),
            compute_features_by_year(cortex, bars, None, _utc("2006-08-01"), _utc("2007-01-01")),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(
        whole.sort_values(["symbol", "date"]).reset_index(drop=True),
        halves.sort_values(["symbol", "date"]).reset_index(drop=True),
    )
