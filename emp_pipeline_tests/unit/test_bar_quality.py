from datetime import date

import pandas as pd

from emp_pipeline.domain.bar_quality import (
    check_calendar_gaps,
    check_freshness,
    check_ohlc_consistency,
    check_positive_prices,
    check_unique_bars,
)
from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.synthetic import synthetic_instrument


def _meta(symbol: str, calendar: str) -> InstrumentMeta:
    asset_class = AssetClass.EQUITY if calendar == "XNYS" else AssetClass.CRYPTO
    return synthetic_instrument(symbol, name=symbol, asset_class=asset_class, calendar=calendar)


def _bars(rows: list[tuple[str, str, float, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["symbol", "date", "open", "high", "low", "close"])
    frame["adj_close"] = frame["close"]
    frame["volume"] = 100.0
    return normalise_bars(frame)


def test_ohlc_inconsistency_names_the_bar():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 9, 10.5), ("AAA", "2021-01-05", 10, 11, 9, 11.5)])
    outcome = check_ohlc_consistency(bars)
    assert not outcome.passed
    assert outcome.failures == 1
    assert outcome.examples == ("AAA 2021-01-05",)


def test_non_positive_prices_and_duplicates_are_found():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 0.0, 10.5), ("AAA", "2021-01-04", 10, 11, 9, 10.5)])
    assert check_positive_prices(bars).failures == 1
    duplicates = check_unique_bars(bars)
    assert not duplicates.passed and duplicates.failures == 2


def test_clean_bars_pass():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 9, 10.5)])
    assert all(
        check(bars).passed for check in (check_ohlc_consistency, check_positive_prices, check_unique_bars)
    )


def test_gaps_follow_each_instruments_calendar():
    # 2021-01-01 is a NYSE holiday and 01-02/03 a weekend: only 01-05 is a real gap for the equity;
    # the 24x7 instrument misses the weekend days it should trade.
    bars = _bars(
        [
            ("AAA", "2021-01-04", 10, 11, 9, 10),
            ("AAA", "2021-01-06", 10, 11, 9, 10),
            ("BTC", "2021-01-01", 10, 11, 9, 10),
            ("BTC", "2021-01-04", 10, 11, 9, 10),
            ("BTC", "2021-01-05", 10, 11, 9, 10),
            ("BTC", "2021-01-06", 10, 11, 9, 10),
        ]
    )
    outcome = check_calendar_gaps(
        bars, [_meta("AAA", "XNYS"), _meta("BTC", "24x7")], date(2021, 1, 1), date(2021, 1, 6)
    )
    assert not outcome.passed
    assert outcome.failures == 3
    assert "AAA 2021-01-05" in outcome.examples
    assert "BTC 2021-01-02" in outcome.examples and "BTC 2021-01-03" in outcome.examples


def test_freshness_counts_sessions_not_calendar_days():
    instruments = [_meta("AAA", "XNYS")]
    # Friday's bar is current on the following Monday morning before the close... one session behind.
    assert check_freshness({"AAA": date(2021, 1, 8)}, instruments, date(2021, 1, 11), 1).passed
    stale = check_freshness({"AAA": date(2021, 1, 4)}, instruments, date(2021, 1, 11), 1)
    assert not stale.passed and "AAA" in stale.description
    assert not check_freshness({}, instruments, date(2021, 1, 11), 3).passed
