"""CsvSource: tolerant about layout, strict about content, and universe inference from a folder."""

from __future__ import annotations

import gzip
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.source import MalformedDataError, MarketDataError, NoDataError, UnknownSymbolError
from emp_pipeline.domain.bars import BAR_COLUMNS, validate_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import InstrumentTermsMissingError

YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
THREE_DAYS = [
    "2024-01-02,472.16,473.67,470.49,472.65,466.34,123623700",
    "2024-01-03,470.43,471.19,468.17,468.79,462.53,103585900",
    "2024-01-04,468.30,470.96,467.05,467.28,461.04,84232200",
]


def _write(folder: Path, name: str, *lines: str) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fetch(folder: Path, symbol: str = "SPY") -> pd.DataFrame:
    return CsvSource(folder).fetch([symbol], date(2000, 1, 1), date(2030, 1, 1))


def test_yahoo_export_reads_into_canonical_bars(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS)
    bars = _fetch(tmp_path)
    assert list(bars.columns) == list(BAR_COLUMNS)
    validate_bars(bars)
    assert bars["date"].tolist() == [
        pd.Timestamp(d, tz="UTC") for d in ("2024-01-02", "2024-01-03", "2024-01-04")
    ]
    first = bars.iloc[0]
    assert (first["symbol"], first["open"], first["close"], first["adj_close"], first["volume"]) == (
        "SPY", 472.16, 472.65, 466.34, 123623700.0,
    )  # fmt: skip


def test_round_trip_of_canonical_bars_through_gzip_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    days = trading_days("XNYS", date(2023, 1, 1), date(2023, 12, 31))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    original = pd.DataFrame(
        {
            "date": days,
            "symbol": "ABC",
            "open": close * (1 + rng.normal(0, 0.002, len(days))),
            "close": close,
            "adj_close": close * 0.98,
            "volume": rng.integers(1_000, 1_000_000, len(days)).astype("float64"),
        }
    )
    original["high"] = original[["open", "close"]].max(axis=1) * 1.003
    original["low"] = original[["open", "close"]].min(axis=1) * 0.997
    original = original[list(BAR_COLUMNS)]
    with gzip.open(tmp_path / "ABC.csv.gz", "wt", encoding="utf-8") as handle:
        written = original.drop(columns="symbol").assign(date=original["date"].dt.strftime("%Y-%m-%d"))
        written.to_csv(handle, index=False)
    read = CsvSource(tmp_path).fetch(["ABC"], date(2023, 1, 1), date(2023, 12, 31))
    pd.testing.assert_frame_equal(read, original, check_dtype=False, rtol=0, atol=1e-9)
    assert str(read["date"].dtype) == "datetime64[ns, UTC]"


def test_range_is_inclusive_and_filters_rows(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS)
    bars = CsvSource(tmp_path).fetch(["SPY"], date(2024, 1, 3), date(2024, 1, 4))
    assert [stamp.day for stamp in bars["date"]] == [3, 4]
    assert CsvSource(tmp_path).fetch(["SPY"], date(2025, 1, 1), date(2025, 2, 1)).empty


@pytest.mark.parametrize(
    "lines",
    [
        ("date,open,high,low,close,adj_close,volume", *THREE_DAYS),
        ("DATE,OPEN,HIGH,LOW,CLOSE,ADJ CLOSE,VOLUME", *THREE_DAYS),
        ("Date,Open,High,Low,Close*,Adj Close**,Volume", *THREE_DAYS),
        ("<DATE>;<OPEN>;<HIGH>;<LOW>;<CLOSE>;<ADJ_CLOSE>;<VOL>",
         *(line.replace(",", ";") for line in THREE_DAYS)),
        ("Datetime,Open,High,Low,Close,Adj Close,Volume",
         *(line.replace(",", " 00:00:00-05:00,", 1) for line in THREE_DAYS)),
        ("timestamp,open,high,low,close,adj_close,volume",
         *(line.replace(",", "T05:00:00.000Z,", 1) for line in THREE_DAYS)),
        ("Date\tOpen\tHigh\tLow\tClose\tAdj Close\tVolume",
         *(line.replace(",", "\t") for line in THREE_DAYS)),
        ('"Date","Open","High","Low","Close","Adj Close","Volume"',
         *(line.replace(",123623700", ',"123,623,700"') for line in THREE_DAYS)),
    ],
    ids=["lower", "upper", "yahoo-web-stars", "metatrader-semicolon", "datetime-tz", "iso-utc",
         "tabs", "quoted-thousands"],
)  # fmt: skip
def test_column_and_date_variants_give_the_same_bars(tmp_path: Path, lines: tuple[str, ...]) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS)
    expected = _fetch(tmp_path)
    variant = tmp_path / "variant"
    variant.mkdir()
    _write(variant, "SPY.csv", *lines)
    pd.testing.assert_frame_equal(_fetch(variant), expected)


def test_epoch_seconds_dates(tmp_path: Path) -> None:
    stamps = [int(pd.Timestamp(line[:10], tz="UTC").timestamp()) for line in THREE_DAYS]
    _write(tmp_path, "BTC-USD.csv", "timestamp,open,high,low,close,volume",
           *(f"{stamp}{line[10:].rsplit(',', 2)[0]},{line.rsplit(',', 1)[1]}"
             for stamp, line in zip(stamps, THREE_DAYS, strict=True)))  # fmt: skip
    bars = _fetch(tmp_path, "BTC-USD")
    assert [stamp.day for stamp in bars["date"]] == [2, 3, 4]


def test_missing_adj_close_and_volume_default_to_close_and_zero(tmp_path: Path) -> None:
    _write(tmp_path, "EURUSD=X.csv", "Date,Open,High,Low,Close", "2024-01-02,1.1,1.2,1.0,1.15")
    bars = _fetch(tmp_path, "EURUSD=X")
    assert bars["adj_close"].tolist() == [1.15]
    assert bars["volume"].tolist() == [0.0]


def test_yahoo_null_rows_are_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, THREE_DAYS[0], "2024-01-03,null,null,null,null,null,null",
           THREE_DAYS[2], "2024-01-05,null,null,null,null,null,null", "")  # fmt: skip
    source = CsvSource(tmp_path)
    with caplog.at_level(logging.WARNING):
        bars = source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 31))
    assert [stamp.day for stamp in bars["date"]] == [2, 4]
    assert source.last_report["SPY"].null_rows_dropped == 2
    assert "dropped 2 all-null rows" in caplog.text


def test_unsorted_rows_are_sorted(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, THREE_DAYS[2], THREE_DAYS[0], THREE_DAYS[1])
    assert [stamp.day for stamp in _fetch(tmp_path)["date"]] == [2, 3, 4]


def test_exact_duplicates_dropped_but_conflicting_duplicates_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, THREE_DAYS[0], THREE_DAYS[1], THREE_DAYS[1], THREE_DAYS[2])
    source = CsvSource(tmp_path)
    assert len(source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 31))) == 3
    assert source.last_report["SPY"].duplicate_rows_dropped == 1
    _write(tmp_path, "QQQ.csv", YAHOO_HEADER, THREE_DAYS[0], THREE_DAYS[1],
           THREE_DAYS[1].replace("468.79", "468.80"))  # fmt: skip
    with pytest.raises(MalformedDataError, match=r"QQQ\.csv: lines \[3, 4\] .* same day 2024-01-03"):
        _fetch(tmp_path, "QQQ")


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("2024-01-03,470.43,abc,468.17,468.79,462.53,103585900",
         r"SPY\.csv line 3, column 'High': 'abc' is not"),
        ("2024-01-03,470.43,471.19,468.17,468.79,462.53,lots", r"line 3, column 'Volume': 'lots'"),
        ("2024-01-03,470.43,471.19,468.17,inf,462.53,103585900", r"line 3, column 'Close': 'inf'"),
        ("2024-01-03,470.43,null,468.17,468.79,462.53,103585900", r"line 3, column 'High': missing value"),
        ("2024-13-45,470.43,471.19,468.17,468.79,462.53,103585900",
         r"line 3, column 'Date': cannot read '2024-13-45'"),
        ("2024-01-03,470.43,468.00,468.17,468.79,462.53,103585900", r"line 3 \(2024-01-03\): low above high"),
        ("2024-01-03,470.43,471.19,468.17,471.50,462.53,103585900", r"line 3 \(2024-01-03\): close outside"),
        ("2024-01-03,467.00,471.19,468.17,468.79,462.53,103585900", r"line 3 \(2024-01-03\): open outside"),
        ("2024-01-03,470.43,471.19,-1,468.79,462.53,103585900", r"line 3 \(2024-01-03\): non-positive low"),
        ("2024-01-03,470.43,471.19,468.17,468.79,462.53,-5", r"line 3 \(2024-01-03\): negative volume"),
        ("2024-01-03,470.43,471.19,468.17,468.79,462.53", r"SPY\.csv line 3: 6 fields where the header"),
        ("2024-01-03,470.43,471.19,468.17,468.79,462.53,1,2", r"SPY\.csv line 3: 8 fields where the header"),
    ],
)  # fmt: skip
def test_bad_content_is_rejected_with_file_line_and_column(
    tmp_path: Path, bad_line: str, expected: str
) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, THREE_DAYS[0], bad_line, THREE_DAYS[2])
    with pytest.raises(MalformedDataError, match=expected):
        _fetch(tmp_path)


def test_files_are_read_by_their_content_not_their_name(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv.gz", YAHOO_HEADER, *THREE_DAYS)  # named .gz but plain text
    (tmp_path / "QQQ.csv").write_bytes(
        gzip.compress(("\n".join([YAHOO_HEADER, *THREE_DAYS]) + "\n").encode())
    )
    expected = _fetch(tmp_path)
    assert len(expected) == 3
    qqq = _fetch(tmp_path, "QQQ")  # gzip named .csv: its first bytes say gzip, so it is gunzipped
    pd.testing.assert_frame_equal(qqq.drop(columns="symbol"), expected.drop(columns="symbol"))


def test_unreadable_files_are_rejected_with_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "QQQ.csv").write_bytes(b"Date,Open\n2024-01-02,1\n\xff\xfe\x00garbage")
    with pytest.raises(MalformedDataError, match=r"QQQ\.csv line 3: byte b'\\xff' at offset 23 is not UTF-8"):
        _fetch(tmp_path, "QQQ")
    (tmp_path / "ZIP.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 30)
    with pytest.raises(MalformedDataError, match=r"ZIP\.csv: this is a zip archive, not CSV text"):
        _fetch(tmp_path, "ZIP")
    (tmp_path / "CUT.csv").write_bytes(gzip.compress(b"Date,Open,High,Low,Close\n" * 50)[:30])
    with pytest.raises(MalformedDataError, match=r"CUT\.csv: gzip-compressed but unreadable"):
        _fetch(tmp_path, "CUT")


def test_partly_missing_adjusted_close_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, THREE_DAYS[0], "2024-01-03,470.43,471.19,468.17,468.79,,1")
    with pytest.raises(MalformedDataError, match=r"line 3, column 'Adj Close': missing adjusted close"):
        _fetch(tmp_path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Date,Open,High,Close,Volume", r"no column for \['low'\]"),
        ("When,Open,High,Low,Close", r"no column for \['date'\]"),
        ("Date,Open,High,Low,Close,close", r"columns \['Close', 'close'\] all read as 'close'"),
    ],
)
def test_missing_or_ambiguous_columns(tmp_path: Path, header: str, expected: str) -> None:
    _write(tmp_path, "SPY.csv", header, ",".join(["2024-01-02", *["1"] * (header.count(","))]))
    with pytest.raises(MalformedDataError, match=expected):
        _fetch(tmp_path)


def test_month_first_dates_are_recognised_from_an_unambiguous_day(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, "12/29/2023,1,2,1,1.5,1.5,1", "01/02/2024,1,2,1,1.5,1.5,1")
    assert [f"{stamp:%Y-%m-%d}" for stamp in _fetch(tmp_path)["date"]] == ["2023-12-29", "2024-01-02"]


def test_ambiguous_day_month_order_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, "01/02/2024,1,2,1,1.5,1.5,1", "02/03/2024,1,2,1,1.5,1.5,1")
    with pytest.raises(MalformedDataError, match="dates read both as %m/%d/%Y and as %d/%m/%Y"):
        _fetch(tmp_path)


def test_file_lookup_errors(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS)
    _write(tmp_path, "notes.txt", "not a csv")
    source = CsvSource(tmp_path)
    assert source.available_symbols() == ("SPY",)
    with pytest.raises(
        UnknownSymbolError, match=r"no CSV file for symbol 'QQQ'.*symbols present: SPY"
    ) as caught:
        source.fetch(["QQQ"], date(2024, 1, 1), date(2024, 1, 31))
    assert caught.value.symbol == "QQQ"
    assert len(source.fetch(["spy"], date(2024, 1, 1), date(2024, 1, 31))) == 3  # case-insensitive file match
    _write(tmp_path, "EMPTY.csv", YAHOO_HEADER)
    with pytest.raises(NoDataError, match="holds no bars for 'EMPTY'"):
        source.fetch(["EMPTY"], date(2024, 1, 1), date(2024, 1, 31))
    _write(tmp_path, "SPY.csv.gz", YAHOO_HEADER)
    with pytest.raises(MalformedDataError, match=r"both SPY\.csv and SPY\.csv\.gz hold 'SPY'"):
        source.available_symbols()
    with pytest.raises(MarketDataError, match="does not exist"):
        CsvSource(tmp_path / "absent")


def test_changed_file_is_read_again(tmp_path: Path) -> None:
    path = _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS[:2])
    source = CsvSource(tmp_path)
    assert len(source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 31))) == 2
    _write(tmp_path, "SPY.csv", YAHOO_HEADER, *THREE_DAYS)
    assert path.stat().st_size > 0
    assert len(source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 31))) == 3


def _synthetic_file(folder: Path, symbol: str, days: pd.DatetimeIndex, price: float) -> None:
    lines = [f"{day:%Y-%m-%d},{price},{price * 1.01},{price * 0.99},{price},{price},100" for day in days]
    _write(folder, f"{symbol}.csv", YAHOO_HEADER, *lines)


def test_terms_are_never_guessed_from_dates_the_run_asks_for_them_by_name(tmp_path: Path) -> None:
    start, end = date(2023, 1, 2), date(2023, 12, 29)
    weekdays = trading_days("24x5", start, end)
    _synthetic_file(
        tmp_path, "EURUSD", weekdays.append(pd.DatetimeIndex([pd.Timestamp("2023-06-10", tz="UTC")])), 1.09
    )
    _synthetic_file(tmp_path, "AAPL", trading_days("XNYS", date(2023, 3, 1), end), 180.0)
    error = CsvSource(tmp_path).terms_missing("csv-folder")
    assert isinstance(error, InstrumentTermsMissingError) and error.symbols == ("AAPL", "EURUSD")
    message = str(error)
    assert "no instrument terms for AAPL, EURUSD" in message and "EMP_UNIVERSE_FILE" in message
    assert "crypto" not in message.split("instruments:")[0]  # one Saturday bar is not an asset class
    template = yaml.safe_load(message.split("\n\n", 1)[1])
    assert (template["timeframe"], template["start_date"], template["end_date"]) == ("D1", start, end)
    assert {entry["symbol"]: entry["tick_size"] for entry in template["instruments"]} == {
        "AAPL": None,
        "EURUSD": None,
    }


def test_terms_request_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownSymbolError, match=r"holds no <SYMBOL>\.csv"):
        CsvSource(tmp_path).terms_missing("empty")


# Exactly what `yf.download(...).to_csv(path)` writes with yfinance >= 0.2.51 (MultiIndex columns).
YFINANCE_SINGLE = (
    "Price,Close,High,Low,Open,Volume",
    "Ticker,SPY,SPY,SPY,SPY,SPY",
    "Date,,,,,",
    "2024-01-02,466.34,467.84,464.70,466.36,123623700",
    "2024-01-03,462.53,465.22,462.04,464.62,103585900",
)
YFINANCE_MULTI_BY_COLUMN = (
    "Price,Adj Close,Adj Close,Close,Close,High,High,Low,Low,Open,Open,Volume,Volume",
    "Ticker,IWM,SPY,IWM,SPY,IWM,SPY,IWM,SPY,IWM,SPY,IWM,SPY",
    "Date,,,,,,,,,,,,",
    "2024-01-02,197.1,466.34,199.0,472.65,200.1,473.67,197.6,470.49,199.9,472.16,30000000,123623700",
    "2024-01-03,193.5,462.53,195.4,468.79,198.0,471.19,195.2,468.17,197.8,470.43,41000000,103585900",
)
YFINANCE_MULTI_BY_TICKER = (
    "Ticker,IWM,IWM,IWM,IWM,IWM,SPY,SPY,SPY,SPY,SPY",
    "Price,Open,High,Low,Close,Volume,Open,High,Low,Close,Volume",
    "Date,,,,,,,,,,",
    "2024-01-02 00:00:00-05:00,199.9,200.1,197.6,199.0,30000000,472.16,473.67,470.49,472.65,123623700",
    "2024-01-03 00:00:00-05:00,197.8,198.0,195.2,195.4,41000000,470.43,471.19,468.17,468.79,103585900",
)


def test_yfinance_to_csv_single_ticker_layout(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", *YFINANCE_SINGLE)
    bars = _fetch(tmp_path)
    assert bars[["open", "high", "low", "close", "adj_close", "volume"]].iloc[0].tolist() == [
        466.36, 467.84, 464.70, 466.34, 466.34, 123623700.0,
    ]  # fmt: skip
    assert [stamp.day for stamp in bars["date"]] == [2, 3]


@pytest.mark.parametrize(
    "lines", [YFINANCE_MULTI_BY_COLUMN, YFINANCE_MULTI_BY_TICKER], ids=["by-column", "by-ticker"]
)
def test_yfinance_to_csv_multi_ticker_layouts_pick_the_files_symbol(
    tmp_path: Path, lines: tuple[str, ...]
) -> None:
    _write(tmp_path, "SPY.csv", *lines)
    bars = _fetch(tmp_path)
    assert bars[["open", "high", "low", "close"]].iloc[1].tolist() == [470.43, 471.19, 468.17, 468.79]
    assert bars["volume"].tolist() == [123623700.0, 103585900.0]
    _write(tmp_path, "QQQ.csv", *lines)
    with pytest.raises(MalformedDataError, match=r"tickers \['IWM', 'SPY'\], none of them 'QQQ'"):
        _fetch(tmp_path, "QQQ")


def test_investing_and_nasdaq_website_exports(tmp_path: Path) -> None:
    _write(tmp_path, "SPY.csv", '"Date","Price","Open","High","Low","Vol.","Change %"',
           '"01/16/2024","468.79","470.43","471.19","468.17","103.59M","-0.82%"',
           '"01/12/2024","472.65","472.16","473.67","470.49","123.62M","-0.57%"')  # fmt: skip
    bars = _fetch(tmp_path)
    assert bars["close"].tolist() == [472.65, 468.79]
    assert bars["volume"].tolist() == pytest.approx([123.62e6, 103.59e6])
    _write(tmp_path, "QQQ.csv", "Date,Close/Last,Volume,Open,High,Low",
           "01/16/2024,$468.79,103585900,$470.43,$471.19,$468.17",
           "01/12/2024,$472.65,123623700,$472.16,$473.67,$470.49")  # fmt: skip
    assert _fetch(tmp_path, "QQQ")["open"].tolist() == [472.16, 470.43]


def test_unnamed_first_column_holds_the_dates_of_a_pandas_to_csv(tmp_path: Path) -> None:
    _write(tmp_path, "GOOG.csv", ",Open,High,Low,Close,Volume",
           "2004-08-19,100.0,104.06,95.96,100.34,22351900",
           "2004-08-20,101.01,109.08,100.5,108.31,11428600")  # fmt: skip
    bars = _fetch(tmp_path, "GOOG")
    assert bars["date"].dt.strftime("%Y-%m-%d").tolist() == ["2004-08-19", "2004-08-20"]


def test_a_file_holding_several_symbols_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "all_stocks.csv", "date,open,high,low,close,volume,Name",
           "2013-02-08,15.07,15.12,14.63,14.75,8407500,AAL",
           "2013-02-08,67.71,68.4,66.89,67.85,158168416,AAPL")  # fmt: skip
    with pytest.raises(MalformedDataError, match=r"column 'Name' holds 2 symbols \(AAL, AAPL\).*split it"):
        _fetch(tmp_path, "all_stocks")
    _write(
        tmp_path,
        "AAL.csv",
        "date,open,high,low,close,volume,Name",
        "2013-02-08,15.07,15.12,14.63,14.75,1,AAL",
    )
    assert _fetch(tmp_path, "AAL")["close"].tolist() == [14.75]
