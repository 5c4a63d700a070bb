"""The bundled offline sample: real bars and macro series, consistent with the sample universe."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from emp_pipeline.data.sample import (
    MACRO_COLUMNS,
    SAMPLE_DIR,
    SampleSource,
    load_sample_macro,
    load_sample_macro_frame,
)
from emp_pipeline.data.source import UnknownSymbolError
from emp_pipeline.domain.bars import BAR_COLUMNS, validate_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import load_universe
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE


@pytest.fixture(scope="module")
def sample_universe_bars() -> pd.DataFrame:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    return SampleSource().fetch(universe.symbols, universe.start_date, universe.end_date)


def test_sample_holds_three_daily_instruments_and_hourly_eurusd() -> None:
    assert set(SampleSource().available_symbols()) == {"^GSPC", "^IXIC", "GOOG", "EURUSD"}


def test_known_real_prices_come_back() -> None:
    bars = SampleSource().fetch(["^GSPC", "GOOG", "^IXIC"], date(1999, 1, 4), date(2004, 8, 19))
    validate_bars(bars)
    assert list(bars.columns) == list(BAR_COLUMNS)
    first_gspc = bars.loc[bars["symbol"] == "^GSPC"].iloc[0]
    assert first_gspc["date"] == pd.Timestamp("1999-01-04", tz="UTC")
    assert (first_gspc["open"], first_gspc["close"], first_gspc["volume"]) == (1229.22998, 1228.099976, 877e6)
    goog = bars.loc[bars["symbol"] == "GOOG"]
    assert len(goog) == 1  # Alphabet listed on 2004-08-19
    assert (goog.iloc[0]["open"], goog.iloc[0]["close"], goog.iloc[0]["adj_close"]) == (100.0, 100.34, 100.34)
    first_ixic = bars.loc[bars["symbol"] == "^IXIC"].iloc[0]
    assert first_ixic["close"] == pytest.approx(2208.05, abs=0.01)


def test_every_sample_universe_session_has_one_bar_per_symbol(sample_universe_bars: pd.DataFrame) -> None:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    for instrument in universe.instruments:
        expected = trading_days(instrument.calendar, universe.start_date, universe.end_date)
        got = pd.DatetimeIndex(
            sample_universe_bars.loc[sample_universe_bars["symbol"] == instrument.symbol, "date"]
        )
        assert got.equals(expected.rename(got.name)), instrument.symbol
    assert len(sample_universe_bars) == 3 * 2148


def test_adjusted_close_differs_from_close_only_where_the_origin_had_one(
    sample_universe_bars: pd.DataFrame,
) -> None:
    goog = sample_universe_bars.loc[sample_universe_bars["symbol"] == "GOOG"]
    assert (goog["adj_close"] == goog["close"]).all()
    assert sample_universe_bars["volume"].gt(0).mean() > 0.99


def test_unknown_symbol_names_what_the_sample_holds() -> None:
    with pytest.raises(UnknownSymbolError, match=r"no 'SPY'.*holds .*\^GSPC") as caught:
        SampleSource().fetch(["^GSPC", "SPY"], date(2010, 1, 1), date(2010, 1, 31))
    assert caught.value.symbol == "SPY"


def test_bundle_is_small_and_every_file_has_its_origin_recorded() -> None:
    files = sorted(SAMPLE_DIR.rglob("*.csv.gz"))
    assert sum(path.stat().st_size for path in files) < 550_000  # daily ~310 KB + hourly EURUSD ~110 KB
    origin = (SAMPLE_DIR / "ORIGIN.md").read_text(encoding="utf-8")
    for path in files:
        assert f"`{path.relative_to(SAMPLE_DIR).as_posix()}`" in origin
    assert "arch.data.sp500.load()" in origin and "backtesting.test.GOOG" in origin
    assert "`gym-anytrading` 2.0.0 (MIT license)" in origin and "ASK prices" in origin


def test_macro_series_and_their_release_dates() -> None:
    macro = load_sample_macro()
    assert set(macro) == {"VIX", "WTI", "AAA", "BAA"}
    for series, frame in macro.items():
        assert list(frame.columns) == list(MACRO_COLUMNS)
        assert (frame["series"] == series).all()
        assert frame["value"].notna().all() and frame["date"].is_monotonic_increasing
        assert str(frame["available_from"].dtype) == "datetime64[ns, UTC]"
    aaa = macro["AAA"].iloc[0]
    assert (aaa["date"], aaa["available_from"], aaa["value"]) == (
        pd.Timestamp("1919-01-01", tz="UTC"), pd.Timestamp("1919-02-01", tz="UTC"), 5.35,
    )  # fmt: skip
    december = macro["BAA"].iloc[-1]
    assert (december["date"], december["available_from"]) == (
        pd.Timestamp("2018-12-01", tz="UTC"), pd.Timestamp("2019-01-01", tz="UTC"),
    )  # fmt: skip
    vix = macro["VIX"].iloc[0]
    assert (vix["date"], vix["available_from"], vix["value"]) == (
        pd.Timestamp("2014-01-03", tz="UTC"), pd.Timestamp("2014-01-03", tz="UTC"), 13.76,
    )  # fmt: skip
    assert macro["WTI"]["date"].iloc[0] == pd.Timestamp("1986-01-02", tz="UTC")


def test_macro_long_frame_is_what_the_sensory_cortex_reads() -> None:
    from emp_pipeline.domain.sensory import normalise_macro

    long = load_sample_macro_frame()
    assert set(long["series"]) == {"VIX", "WTI", "AAA", "BAA"}
    assert len(normalise_macro(long)) == len(long)
