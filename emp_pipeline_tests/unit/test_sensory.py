"""The sensory cortex: schema, warm-up marking, known values, and release-date alignment of macro."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.sensory import (
    FEATURE_COLUMNS,
    MACRO_ROLES,
    PRICE_FEATURES,
    SensoryCortex,
    SensoryError,
    _days_since_extreme,
    macro_coverage,
)
from emp_pipeline.domain.synthetic import generate_market, synthetic_instrument


def _meta(symbol: str, calendar: str = "24x5", asset_class: AssetClass = AssetClass.INDEX) -> InstrumentMeta:
    return synthetic_instrument(symbol, name=symbol, asset_class=asset_class, calendar=calendar)


def _bars(symbol: str, close: np.ndarray, dates: pd.DatetimeIndex, spread: float = 1.0, volume: float = 0.0):
    return normalise_bars(
        pd.DataFrame(
            {
                "date": dates,
                "symbol": symbol,
                "open": close,
                "high": close + spread,
                "low": close - spread,
                "close": close,
                "adj_close": close,
                "volume": volume,
            }
        )
    )


@pytest.fixture(scope="module")
def market_features() -> tuple[pd.DataFrame, pd.DataFrame]:
    market = generate_market(n_instruments=3, n_bars=600, seed=2)
    return market.bars, SensoryCortex(market.instruments).compute(market.bars)


def test_feature_frame_contract(market_features: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bars, features = market_features
    assert list(features.columns) == ["date", "symbol", *FEATURE_COLUMNS, "warmup"]
    assert str(features["date"].dtype) == "datetime64[ns, UTC]"
    assert features["warmup"].dtype == bool
    assert all(features[column].dtype == np.float64 for column in FEATURE_COLUMNS)
    assert features[["date", "symbol"]].equals(bars[["date", "symbol"]])
    for column in FEATURE_COLUMNS:
        assert column.split("_", 1)[0] in ("what", "how", "when", "why", "anomaly")


def test_warmup_is_marked_not_filled(market_features: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, features = market_features
    position = features.groupby("symbol").cumcount()
    # The longest look-back is the 52-week (252-bar) high/low window.
    assert (features["warmup"] == (position < 251)).all()
    settled = features.loc[~features["warmup"], list(PRICE_FEATURES)]
    assert not settled.isna().any().any()
    assert features.loc[position < 19, "what_volatility_20"].isna().all()
    assert features.loc[position == 20, "what_volatility_20"].notna().all()


def test_known_values_on_a_steady_uptrend() -> None:
    dates = pd.bdate_range("2020-01-01", periods=300, tz="UTC")
    close = 100.0 * np.exp(0.001 * np.arange(300))
    features = SensoryCortex([_meta("UP")]).compute(_bars("UP", close, dates))
    last = features.iloc[-1]
    assert last["what_log_return_1"] == pytest.approx(0.001)
    assert last["what_log_return_20"] == pytest.approx(0.02)
    assert last["what_trend_slope_20"] == pytest.approx(0.001)
    assert last["what_trend_slope_50"] == pytest.approx(0.001)
    assert last["what_rsi_14"] == pytest.approx(100.0)
    assert last["when_days_since_high_252"] == 0.0
    assert last["when_days_since_low_252"] == 251.0
    assert last["what_ma_distance_200"] > last["what_ma_distance_50"] > last["what_ma_distance_20"] > 0
    # Constant high-low spread of 2 with tiny closes-to-close moves: ATR converges to the spread.
    assert last["what_atr_14"] == pytest.approx(2.0, rel=0.02)
    assert last["how_close_location"] == pytest.approx(0.0)
    assert last["how_volume_z_20"] == 0.0  # no volume (index/FX): neutral


def test_anomaly_flags_fire_on_a_shock() -> None:
    dates = pd.bdate_range("2020-01-01", periods=120, tz="UTC")
    rng = np.random.default_rng(0)
    log_close = np.cumsum(rng.normal(0.0, 0.01, 120))
    log_close[100:] -= 0.15  # a crash of 15 sigma on bar 100
    close = 100.0 * np.exp(log_close)
    features = SensoryCortex([_meta("X")]).compute(_bars("X", close, dates, spread=0.1))
    crash = features.iloc[100]
    assert crash["anomaly_return_z"] < -10
    assert crash["anomaly_return_flag"] == -1.0
    assert crash["anomaly_gap_flag"] == -1.0  # open == close here, so the crash is a gap too
    assert features.iloc[101]["anomaly_vol_shock"] > features.iloc[99]["anomaly_vol_shock"]
    assert (features.iloc[60:100]["anomaly_return_flag"].abs() <= 1).all()


def test_when_uses_the_instruments_calendar() -> None:
    weekdays = pd.bdate_range("2024-03-04", periods=30, tz="UTC")
    every_day = pd.date_range("2024-03-04", periods=30, tz="UTC")
    bars = pd.concat(
        [
            _bars("BTCUSD", np.linspace(100, 110, 30), every_day),
            _bars("EURUSD", np.linspace(1.0, 1.1, 30), weekdays, spread=0.001),
        ]
    )
    cortex = SensoryCortex(
        [_meta("BTCUSD", "24x7", AssetClass.CRYPTO), _meta("EURUSD", "24x5", AssetClass.FX)]
    )
    features = cortex.compute(normalise_bars(bars)).set_index(["symbol", "date"])
    friday = pd.Timestamp("2024-03-08", tz="UTC")
    assert features.loc[("EURUSD", friday), "when_days_to_next_session"] == 3.0
    assert features.loc[("BTCUSD", friday), "when_days_to_next_session"] == 1.0
    assert features.loc[("EURUSD", pd.Timestamp("2024-03-11", tz="UTC")), "when_days_since_prev_bar"] == 3.0
    assert features.loc[("EURUSD", friday), "when_day_of_week"] == 4.0
    assert features.loc[("BTCUSD", friday), "when_weekend_session"] == 1.0
    assert features.loc[("EURUSD", friday), "when_weekend_session"] == 0.0
    assert features.loc[("EURUSD", friday), "when_days_to_month_end"] == 23.0


def test_unknown_symbol_is_refused() -> None:
    dates = pd.bdate_range("2020-01-01", periods=5, tz="UTC")
    with pytest.raises(SensoryError, match="no InstrumentMeta"):
        SensoryCortex([_meta("A")]).compute(_bars("B", np.full(5, 10.0), dates))


def test_why_is_neutral_and_flagged_without_macro(market_features: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, features = market_features
    why = [column for column in FEATURE_COLUMNS if column.startswith("why_")]
    assert (features[why] == 0.0).all().all()
    assert macro_coverage(features) == dict.fromkeys(MACRO_ROLES, 0.0)


def test_macro_is_used_only_from_its_release_date() -> None:
    dates = pd.bdate_range("2021-01-04", periods=400, tz="UTC")
    bars = _bars("A", np.linspace(100, 120, 400), dates)
    observed = pd.Timestamp("2022-03-01", tz="UTC")
    released = pd.Timestamp("2022-03-08", tz="UTC")
    history = pd.bdate_range("2019-01-01", "2022-02-28", tz="UTC")
    macro = pd.concat(
        [
            pd.DataFrame({"series": "DGS10", "date": history, "available_from": history, "value": 1.0}),
            pd.DataFrame(
                {"series": "DGS10", "date": [observed], "available_from": [released], "value": [3.0]}
            ),
        ]
    )
    features = SensoryCortex([_meta("A")]).compute(bars, macro).set_index("date")
    level = features["why_yield_10y_level"]
    assert level.loc[pd.Timestamp("2022-03-07", tz="UTC")] == 1.0  # observed, not yet released
    assert level.loc[released] == 3.0
    assert features.loc[released, "why_yield_10y_change_20"] == pytest.approx(2.0)
    assert (features["why_yield_10y_available"] == 1.0).all()
    assert (features["why_vix_available"] == 0.0).all() and (features["why_vix_level"] == 0.0).all()
    coverage = macro_coverage(features.reset_index())
    assert coverage["yield_10y"] == 1.0 and coverage["vix"] == 0.0


def test_wide_macro_and_credit_spread() -> None:
    dates = pd.bdate_range("2021-01-04", periods=300, tz="UTC")
    bars = _bars("A", np.linspace(100, 120, 300), dates)
    months = pd.date_range("2019-01-01", "2022-12-01", freq="MS", tz="UTC")
    wide = pd.DataFrame(
        {
            "date": months,
            "available_from": months + pd.Timedelta(days=35),
            "AAA": 3.0,
            "BAA": np.linspace(4.0, 5.0, len(months)),
        }
    )
    features = SensoryCortex([_meta("A")]).compute(bars, wide)
    spread = features["why_credit_spread_level"]
    assert features["why_credit_spread_available"].iloc[-1] == 1.0
    assert 1.0 < spread.iloc[-1] < 2.0
    assert spread.is_monotonic_increasing


def test_macro_released_before_observed_is_refused() -> None:
    dates = pd.bdate_range("2021-01-04", periods=30, tz="UTC")
    macro = pd.DataFrame(
        {"series": ["DGS10"], "date": ["2021-02-01"], "available_from": ["2021-01-01"], "value": [1.0]}
    )
    with pytest.raises(SensoryError, match="before their observation date"):
        SensoryCortex([_meta("A")]).compute(_bars("A", np.full(30, 10.0), dates), macro)


def test_bundled_sample_macro_feeds_why() -> None:
    """The offline sample (VIX, WTI daily; AAA, BAA monthly, usable from the next month) reaches WHY."""
    from emp_pipeline.data.sample import SampleSource, load_sample_macro_frame

    bars = SampleSource().fetch(["^GSPC"], "2014-06-01", "2016-12-30")
    macro = load_sample_macro_frame()
    features = SensoryCortex([_meta("^GSPC", "XNYS")]).compute(bars, macro).set_index("date")
    coverage = macro_coverage(features.reset_index())
    assert coverage["vix"] > 0.5 and coverage["oil"] == 1.0 and coverage["credit_spread"] == 1.0
    assert coverage["policy_rate"] == 0.0 and coverage["yield_10y"] == 0.0
    monthly = macro.loc[macro["series"].isin(["AAA", "BAA"])].pivot(
        index="date", columns="series", values="value"
    )
    may = monthly.loc[pd.Timestamp("2015-05-01", tz="UTC")]
    mid_june = features.loc[pd.Timestamp("2015-06-15", tz="UTC")]
    assert mid_june["why_credit_spread_level"] == pytest.approx(may["BAA"] - may["AAA"])
    vix = macro.loc[macro["series"] == "VIX"].set_index("date")["value"]
    day = pd.Timestamp("2015-08-24", tz="UTC")
    assert features.loc[day, "why_vix_level"] == vix.loc[day]
    assert features.loc[day, "why_vix_rank_252"] == pytest.approx(0.5, abs=0.01)  # the year's highest close


def test_no_bars_give_an_empty_frame_with_the_contract_columns() -> None:
    from emp_pipeline.domain.bars import empty_bars

    features = SensoryCortex([]).compute(empty_bars())
    assert features.empty
    assert list(features.columns) == ["date", "symbol", *FEATURE_COLUMNS, "warmup"]
    assert str(features["date"].dtype) == "datetime64[ns, UTC]" and features["warmup"].dtype == bool


@pytest.mark.parametrize(
    ("day", "scheduled", "closure"),
    [
        ("2001-09-10", 1.0, "the 9/11 closure (reopened 2001-09-17) was not known on the 10th"),
        ("2012-10-26", 3.0, "hurricane Sandy's closure (29-30 October) was announced on the 28th"),
        ("2012-11-21", 2.0, "Thanksgiving is a regular holiday rule, known years ahead"),
    ],
)
def test_days_to_next_session_know_the_regular_schedule_and_no_ad_hoc_closure(
    day: str, scheduled: float, closure: str
) -> None:
    # The bars are the exchange's real sessions: the closure shows in the bars that follow, not the feature.
    sessions = trading_days(
        "XNYS", pd.Timestamp(day) - pd.Timedelta(days=400), pd.Timestamp(day) + pd.Timedelta(days=20)
    )
    bars = _bars("SPX", np.linspace(1000.0, 1100.0, len(sessions)), sessions)
    features = SensoryCortex([_meta("SPX", "XNYS")]).compute(normalise_bars(bars)).set_index("date")
    assert features.loc[pd.Timestamp(day, tz="UTC"), "when_days_to_next_session"] == scheduled, closure


@pytest.mark.parametrize("highest", [True, False])
def test_days_since_extreme_is_argmax_of_the_reversed_window_with_ties_and_gaps(highest):
    rng = np.random.default_rng(11)
    values = np.round(rng.normal(0.0, 1.0, 3000).cumsum(), 0)  # coarse steps: many tied extremes
    values[rng.choice(3000, 40, replace=False)] = np.nan
    window = 50
    reversed_windows = sliding_window_view(values, window)[:, ::-1]
    expected = np.full(len(values), np.nan)
    expected[window - 1 :] = reversed_windows.argmax(axis=1) if highest else reversed_windows.argmin(axis=1)
    np.testing.assert_array_equal(_days_since_extreme(values, window, highest), expected)
    assert np.isnan(_days_since_extreme(values[: window - 1], window, highest)).all()
