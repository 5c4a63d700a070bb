"""YahooFinanceSource against frames shaped exactly like yfinance's, never the network.

`history()` builds what `yfinance.Ticker.history(interval="1d")` returns for one ticker and
`download_frame()` assembles several of them the way `yfinance.download` does (reindex to the union of
dates, concat under keys named ("Ticker", "Price"), then for group_by="column" swap to ("Price", "Ticker")
and sort). `test_fixture_layouts_match_the_installed_yfinance` proves these builders produce exactly what
the installed yfinance.download returns, by running the real download with its per-ticker fetch replaced.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yfinance
import yfinance.cache
import yfinance.data
import yfinance.multi
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from curl_cffi.requests.exceptions import DNSError as CurlDNSError
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from emp_pipeline.data.source import MalformedDataError, MarketDataError, NoDataError, SourceUnavailableError
from emp_pipeline.data.yahoo import YahooFinanceSource, normalise_ticker_frame
from emp_pipeline.domain.bars import BAR_COLUMNS, validate_bars
from emp_pipeline.domain.timeframes import Timeframe

YAHOO_FIELDS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
NOT_FOUND = "YFPricesMissingError('possibly delisted; no price data found  (1d 2024-01-01 -> 2024-01-06)')"
RATE_LIMITED = "YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')"


def history(
    days: list[str], base: float, tz: str = "America/New_York", auto_adjust: bool = False
) -> pd.DataFrame:
    """One ticker as yfinance's Ticker.history returns daily bars: exchange-tz midnight index named 'Date'."""
    n = len(days)
    close = base + np.arange(n, dtype="float64")
    frame = pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Adj Close": close * 0.99,
            "Volume": np.arange(1, n + 1, dtype="int64") * 1000,
        },
        index=pd.DatetimeIndex(pd.to_datetime(days), name="Date").tz_localize(tz),
    )
    if auto_adjust:  # yfinance scales OHLC by Adj Close / Close and drops Adj Close
        ratio = frame["Adj Close"] / frame["Close"]
        frame = pd.DataFrame(
            {
                "Open": frame["Open"] * ratio,
                "High": frame["High"] * ratio,
                "Low": frame["Low"] * ratio,
                "Close": frame["Adj Close"],
                "Volume": frame["Volume"],
            },
            index=frame.index,
        )
    return frame


def failed_history() -> pd.DataFrame:
    """What yfinance keeps for a ticker whose fetch failed: no rows, the six fields as NaN columns."""
    frame = pd.DataFrame(index=[], data={field: np.nan for field in YAHOO_FIELDS})
    frame.index.name = "Date"
    return frame


def download_frame(
    histories: dict[str, pd.DataFrame],
    group_by: str = "column",
    multi_level_index: bool = True,
    ignore_tz: bool = True,
) -> pd.DataFrame:
    frames = {ticker: frame.copy() for ticker, frame in histories.items()}
    live = [frame for frame in frames.values() if not frame.empty]
    for frame in live:
        if ignore_tz:
            frame.index = frame.index.tz_localize(None)
        else:
            frame.index = frame.index.tz_convert(str(live[0].index.tz))
    union = None
    for frame in live:
        union = frame.index if union is None else union.union(frame.index)
    union = pd.DatetimeIndex([]) if union is None else union
    frames = {ticker: frame.reindex(union) for ticker, frame in frames.items()}
    data = pd.concat(frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"])
    if group_by == "column":
        data.columns = data.columns.swaplevel(0, 1)
        data = data.sort_index(level=0, axis=1)
    if not multi_level_index and len(histories) == 1:
        data = data.droplevel(0 if group_by == "ticker" else 1, axis=1).rename_axis(None, axis=1)
    return data


JAN = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
JAN_EVERY_DAY = [f"2024-01-0{day}" for day in range(1, 7)]


class FakeDownload:
    """Stands in for yfinance.download: answers from `respond(tickers)` and logs failures like yfinance."""

    def __init__(self, respond: Callable[[list[str]], tuple[pd.DataFrame | BaseException, dict[str, str]]]):
        self.respond = respond
        self.calls: list[dict] = []

    def __call__(self, **kwargs: object) -> pd.DataFrame:
        self.calls.append(kwargs)
        result, failures = self.respond(list(kwargs["tickers"]))
        if isinstance(result, BaseException):
            raise result
        if failures:
            yf_logger = logging.getLogger("yfinance")
            yf_logger.error("\n%.f Failed download%s:", len(failures), "s" if len(failures) > 1 else "")
            by_error: dict[str, list[str]] = {}
            for ticker, error in failures.items():
                by_error.setdefault(error, []).append(ticker)
            for error, tickers in by_error.items():
                yf_logger.error(f"{tickers}: " + error)
        return result


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def _source(
    monkeypatch: pytest.MonkeyPatch, fake: FakeDownload, **options: object
) -> tuple[YahooFinanceSource, Sleeps]:
    monkeypatch.setattr(yfinance, "download", fake)
    sleeps = Sleeps()
    options.setdefault("throttle_seconds", 0.0)
    return YahooFinanceSource(sleep=sleeps, clock=lambda: 0.0, **options), sleeps


def _bars(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return frame.loc[frame["symbol"] == symbol].reset_index(drop=True)


def test_single_ticker_multiindex_layout_with_adj_close(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0)})
    assert list(raw.columns.names) == ["Price", "Ticker"]
    fake = FakeDownload(lambda tickers: (raw, {}))
    source, _ = _source(monkeypatch, fake)
    bars = source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    validate_bars(bars)
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars["date"].tolist() == [pd.Timestamp(day, tz="UTC") for day in JAN]
    first = bars.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (469.5, 471.0, 469.0, 470.0)
    assert first["adj_close"] == pytest.approx(470.0 * 0.99) and first["volume"] == 1000.0
    call = fake.calls[0]
    assert (call["tickers"], call["start"], call["end"]) == (["SPY"], "2024-01-01", "2024-01-06")
    assert (call["auto_adjust"], call["progress"], call["interval"]) == (False, False, "1d")


def test_single_ticker_flat_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0)}, multi_level_index=False)
    assert not isinstance(raw.columns, pd.MultiIndex)
    source, _ = _source(monkeypatch, FakeDownload(lambda tickers: (raw, {})))
    bars = source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert bars["close"].tolist() == [470.0, 471.0, 472.0, 473.0]


def test_auto_adjusted_download_without_adj_close(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0, auto_adjust=True)})
    assert "Adj Close" not in raw.columns.get_level_values("Price")
    fake = FakeDownload(lambda tickers: (raw, {}))
    source, _ = _source(monkeypatch, fake, auto_adjust=True)
    bars = source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert (bars["adj_close"] == bars["close"]).all()
    assert bars["close"].iloc[0] == pytest.approx(470.0 * 0.99)
    assert fake.calls[0]["auto_adjust"] is True


@pytest.mark.parametrize("group_by", ["column", "ticker"])
def test_multi_ticker_layouts_with_different_calendars(
    monkeypatch: pytest.MonkeyPatch, group_by: str
) -> None:
    raw = download_frame(
        {"SPY": history(JAN, 470.0), "BTC-USD": history(JAN_EVERY_DAY, 42_000.0, tz="UTC")}, group_by=group_by
    )
    expected_names = ["Price", "Ticker"] if group_by == "column" else ["Ticker", "Price"]
    assert list(raw.columns.names) == expected_names
    assert raw.isna().any().any()  # SPY is NaN on the weekend rows BTC-USD brings in
    source, _ = _source(monkeypatch, FakeDownload(lambda tickers: (raw, {})))
    bars = source.fetch(["SPY", "BTC-USD"], date(2024, 1, 1), date(2024, 1, 6))
    validate_bars(bars)
    assert _bars(bars, "SPY")["date"].tolist() == [pd.Timestamp(day, tz="UTC") for day in JAN]
    btc = _bars(bars, "BTC-USD")
    assert btc["date"].tolist() == [pd.Timestamp(day, tz="UTC") for day in JAN_EVERY_DAY]
    assert btc["close"].tolist() == [42_000.0 + i for i in range(6)]


def test_tz_aware_index_keeps_the_exchange_local_day(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0), "QQQ": history(JAN, 400.0)}, ignore_tz=False)
    assert str(raw.index.tz) == "America/New_York"
    source, _ = _source(monkeypatch, FakeDownload(lambda tickers: (raw, {})))
    bars = source.fetch(["SPY", "QQQ"], date(2024, 1, 2), date(2024, 1, 5))
    assert _bars(bars, "QQQ")["date"].tolist() == [pd.Timestamp(day, tz="UTC") for day in JAN]


def test_lower_case_request_matches_yfinance_upper_cased_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0), "QQQ": history(JAN, 400.0)})
    source, _ = _source(monkeypatch, FakeDownload(lambda tickers: (raw, {})))
    bars = source.fetch(["spy", "QQQ"], date(2024, 1, 1), date(2024, 1, 5))
    assert set(bars["symbol"]) == {"spy", "QQQ"}


def test_unknown_ticker_is_named_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0), "NOPE": failed_history()})
    fake = FakeDownload(lambda tickers: (raw, {"NOPE": NOT_FOUND}))
    source, sleeps = _source(monkeypatch, fake)
    with pytest.raises(
        NoDataError, match=r"no bars between 2024-01-01 and 2024-01-05 for 'NOPE'.*delisted"
    ) as caught:
        source.fetch(["SPY", "NOPE"], date(2024, 1, 1), date(2024, 1, 5))
    assert caught.value.symbol == "NOPE"
    assert len(fake.calls) == 1 and sleeps.seconds == []


def test_empty_frame_for_a_single_ticker_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"ZZZZ": failed_history()})
    assert raw.empty
    fake = FakeDownload(lambda tickers: (raw, {"ZZZZ": NOT_FOUND}))
    source, sleeps = _source(monkeypatch, fake)
    with pytest.raises(NoDataError, match="'ZZZZ'"):
        source.fetch(["ZZZZ"], date(2024, 1, 1), date(2024, 1, 5))
    assert len(fake.calls) == 1 and sleeps.seconds == []


def test_network_error_is_retried_with_backoff_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0)})
    outcomes = [
        CurlConnectionError("Failed to perform, curl: (7) Failed to connect to query2.finance.yahoo.com")
    ]

    def respond(tickers: list[str]) -> tuple[pd.DataFrame | BaseException, dict[str, str]]:
        return (outcomes.pop(0) if outcomes else raw), {}

    fake = FakeDownload(respond)
    source, sleeps = _source(monkeypatch, fake, initial_backoff_seconds=2.0)
    bars = source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert len(bars) == 4
    assert len(fake.calls) == 2 and sleeps.seconds == [2.0]
    assert source.last_report["SPY"].attempts == 2


def test_rate_limited_ticker_alone_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    histories = {"SPY": history(JAN, 470.0), "QQQ": history(JAN, 400.0)}
    rounds = iter([{"QQQ": RATE_LIMITED}, {}])

    def respond(tickers: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
        failures = next(rounds)
        return download_frame(
            {t: failed_history() if t in failures else histories[t] for t in tickers}
        ), failures

    fake = FakeDownload(respond)
    source, sleeps = _source(monkeypatch, fake)
    bars = source.fetch(["SPY", "QQQ"], date(2024, 1, 1), date(2024, 1, 5))
    assert [call["tickers"] for call in fake.calls] == [["SPY", "QQQ"], ["QQQ"]]
    assert sleeps.seconds == [2.0]
    assert len(_bars(bars, "QQQ")) == 4 and len(_bars(bars, "SPY")) == 4


def test_retries_stop_after_max_attempts_with_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDownload(lambda tickers: (YFRateLimitError(), {}))
    source, sleeps = _source(monkeypatch, fake, max_attempts=4, initial_backoff_seconds=1.5)
    with pytest.raises(
        SourceUnavailableError, match=r"still failing for \['SPY'\] after 4 attempts.*Too Many"
    ):
        source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert len(fake.calls) == 4 and sleeps.seconds == [1.5, 3.0, 6.0]
    assert source.backoff_seconds(10) == 60.0  # capped


def test_programming_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDownload(lambda tickers: (TypeError("download() got an unexpected keyword argument"), {}))
    source, sleeps = _source(monkeypatch, fake)
    with pytest.raises(MarketDataError, match=r"yfinance failed for \['SPY'\]: TypeError") as caught:
        source.fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert not isinstance(caught.value, SourceUnavailableError)
    assert len(fake.calls) == 1 and sleeps.seconds == []


def test_tickers_are_downloaded_in_chunks_with_a_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE"]
    fake = FakeDownload(
        lambda tickers: (download_frame({t: history(JAN, 10.0 + symbols.index(t)) for t in tickers}), {})
    )
    monkeypatch.setattr(yfinance, "download", fake)
    sleeps, now = Sleeps(), iter([0.0, 0.25, 5.0])
    source = YahooFinanceSource(chunk_size=2, throttle_seconds=1.0, sleep=sleeps, clock=lambda: next(now))
    bars = source.fetch(symbols, date(2024, 1, 1), date(2024, 1, 5))
    assert [call["tickers"] for call in fake.calls] == [["AAA", "BBB"], ["CCC", "DDD"], ["EEE"]]
    assert sleeps.seconds == [0.75]  # the second call came 0.25 s after the first, the third 4 s after
    assert sorted(set(bars["symbol"])) == symbols


def test_bad_yahoo_rows_are_dropped_or_widened_and_reported() -> None:
    raw = history(JAN, 100.0).tz_localize(None)
    raw.loc[pd.Timestamp("2024-01-03"), "High"] = np.nan  # incomplete row
    raw.loc[pd.Timestamp("2024-01-04"), "Open"] = 104.0  # above High 103.0, as Yahoo's FX bars do
    bars, report = normalise_ticker_frame("EURUSD=X", raw)
    assert bars["date"].dt.day.tolist() == [2, 4, 5]
    assert (report.incomplete_rows_dropped, report.ohlc_rows_widened, report.rows) == (1, 1, 3)
    assert bars.loc[bars["date"].dt.day == 4, "high"].item() == 104.0


def test_default_download_is_looked_up_on_the_yfinance_module(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = download_frame({"SPY": history(JAN, 470.0)})
    fake = FakeDownload(lambda tickers: (raw, {}))
    monkeypatch.setattr(yfinance, "download", fake)
    YahooFinanceSource(throttle_seconds=0).fetch(["SPY"], date(2024, 1, 1), date(2024, 1, 5))
    assert len(fake.calls) == 1


class _PatchedTicker:
    """Replaces yfinance's per-ticker fetch so the real yfinance.download runs offline."""

    histories: dict[str, pd.DataFrame] = {}

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self._price_history = None

    def history(self, **kwargs: object) -> pd.DataFrame:
        frame = self.histories.get(self.ticker)
        if frame is None:
            raise YFPricesMissingError(self.ticker, "(1d 2024-01-01 -> 2024-01-06)")
        if kwargs.get("auto_adjust"):
            return history(
                [f"{day:%Y-%m-%d}" for day in frame.index], frame["Close"].iloc[0], str(frame.index.tz), True
            )
        return frame


@pytest.mark.filterwarnings("ignore::Warning")
@pytest.mark.parametrize(
    ("tickers", "options", "builder_options"),
    [
        (["SPY"], {"auto_adjust": False}, {}),
        (["SPY"], {"auto_adjust": True}, {"auto_adjust": True}),
        (["SPY"], {"auto_adjust": False, "multi_level_index": False}, {"multi_level_index": False}),
        (["SPY", "BTC-USD"], {"auto_adjust": False}, {}),
        (["SPY", "BTC-USD"], {"auto_adjust": False, "group_by": "ticker"}, {"group_by": "ticker"}),
        (["SPY", "QQQ"], {"auto_adjust": False, "ignore_tz": False}, {"ignore_tz": False}),
        (["SPY", "NOPE"], {"auto_adjust": False}, {}),
    ],
)
def test_fixture_layouts_match_the_installed_yfinance(
    monkeypatch: pytest.MonkeyPatch, tickers: list[str], options: dict, builder_options: dict
) -> None:
    histories = {
        "SPY": history(JAN, 470.0),
        "QQQ": history(JAN, 400.0),
        "BTC-USD": history(JAN_EVERY_DAY, 42_000.0, tz="UTC"),
    }
    monkeypatch.setattr(_PatchedTicker, "histories", histories)
    monkeypatch.setattr(yfinance.multi, "Ticker", _PatchedTicker)
    real = yfinance.download(
        tickers, start="2024-01-01", end="2024-01-06", progress=False, threads=False, **options
    )
    adjusted = builder_options.pop("auto_adjust", False)
    inputs = {ticker: histories.get(ticker, failed_history()) for ticker in tickers}
    if adjusted:
        inputs["SPY"] = history(JAN, 470.0, auto_adjust=True)
    mine = download_frame(inputs, **builder_options)
    if "group_by" not in options:
        pd.testing.assert_frame_equal(mine, real, check_freq=False)
    else:  # group_by="ticker" keeps fetch-completion order; compare as sets of columns
        pd.testing.assert_frame_equal(mine.sort_index(axis=1), real.sort_index(axis=1), check_freq=False)


@pytest.mark.filterwarnings("ignore::Warning")
def test_failure_lines_logged_by_the_installed_yfinance_are_understood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_PatchedTicker, "histories", {"SPY": history(JAN, 470.0)})
    monkeypatch.setattr(yfinance.multi, "Ticker", _PatchedTicker)
    real_download = yfinance.download
    calls: list[list[str]] = []

    def counting(**kwargs: object) -> pd.DataFrame:
        calls.append(list(kwargs["tickers"]))
        return real_download(threads=False, **kwargs)

    source = YahooFinanceSource(download=counting, throttle_seconds=0, sleep=lambda seconds: None)
    with pytest.raises(NoDataError, match=r"'NOPE' \(YFPricesMissingError\('possibly delisted"):
        source.fetch(["SPY", "NOPE"], date(2024, 1, 1), date(2024, 1, 5))
    assert calls == [["SPY", "NOPE"]]


# ----- intraday and network failures through the installed yfinance's own request and parsing code -----


class _YahooResponse:
    """What yfinance reads from an HTTP response of Yahoo's chart endpoint."""

    def __init__(self, body: dict, url: str) -> None:
        self._body = body
        self.text = json.dumps(body)
        self.status_code = 200
        self.url = url

    def json(self) -> dict:
        return self._body


def _chart_body(symbol: str, opens: pd.DatetimeIndex, interval: str, tz: str) -> dict:
    """A constructed answer of query2.finance.yahoo.com/v8/finance/chart/<symbol>, shaped like Yahoo's."""
    stamps = [int(stamp.timestamp()) for stamp in opens]
    close = [round(1.08 + 0.0001 * step, 5) for step in range(len(stamps))]
    days = sorted({stamp.tz_convert(tz).normalize() for stamp in opens})
    offset = int(days[0].utcoffset().total_seconds()) if days else 0
    meta = {
        "currency": "USD", "symbol": symbol, "exchangeName": "CCY", "instrumentType": "CURRENCY",
        "firstTradeDate": 1070236800, "regularMarketTime": stamps[-1] if stamps else 0, "gmtoffset": offset,
        "timezone": "BST", "exchangeTimezoneName": tz, "priceHint": 4, "dataGranularity": interval,
        "range": "", "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        "tradingPeriods": [
            [{"timezone": "BST", "start": int(day.timestamp()), "end": int(day.timestamp()) + 86340,
              "gmtoffset": offset}]
            for day in days
        ],
    }  # fmt: skip
    quote = {
        "open": close, "high": [price + 0.0002 for price in close],
        "low": [price - 0.0002 for price in close], "close": close, "volume": [0] * len(close),
    }  # fmt: skip
    return {
        "chart": {
            "result": [{"meta": meta, "timestamp": stamps, "indicators": {"quote": [quote]}}],
            "error": None,
        }
    }


class RecordedYahoo:
    """Stands in for Yahoo's servers at yfinance's HTTP edge (YfData.get): chart answers built from `bars`
    (open times per ticker), or the error a machine without network gets. Everything above that edge -- the
    timezone lookup, PriceHistory's parsing, download's assembly and failure logging -- is the installed
    yfinance."""

    def __init__(
        self, bars: dict[str, pd.DatetimeIndex], tz: str = "Europe/London", network: bool = True
    ) -> None:
        self.bars = bars
        self.tz = tz
        self.network = network
        self.requests: list[dict] = []

    def get(self, url: str, params: dict | None = None) -> _YahooResponse:
        if not self.network:
            raise CurlDNSError(
                "Failed to perform, curl: (6) Could not resolve host: query2.finance.yahoo.com. "
                "See https://curl.se/libcurl/c/libcurl-errors.html first for more details.",
                6,
            )
        symbol = url.rsplit("/", 1)[1]
        params = dict(params or {})
        self.requests.append({"symbol": symbol, **params})
        opens = self.bars.get(symbol, pd.DatetimeIndex([], tz="UTC"))
        if "period1" in params:
            seconds = opens.as_unit("s").asi8
            opens = opens[(seconds >= params["period1"]) & (seconds < params["period2"])]
        else:  # the timezone lookup asks for range=1d
            opens = opens[-1:]
        return _YahooResponse(_chart_body(symbol, opens, params.get("interval", "1d"), self.tz), url)


@pytest.fixture
def recorded_yahoo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RecordedYahoo]]:
    def install(bars: dict[str, pd.DatetimeIndex], **options: object) -> RecordedYahoo:
        server = RecordedYahoo(bars, **options)
        monkeypatch.setattr(
            yfinance.data.YfData, "get", lambda data, url, params=None, timeout=30: server.get(url, params)
        )
        monkeypatch.setattr(yfinance.cache, "get_tz_cache", yfinance.cache._TzCacheDummy)
        yfinance.data.YfData.cache_get.cache_clear()
        return server

    yield install
    yfinance.data.YfData.cache_get.cache_clear()


NOW = pd.Timestamp("2025-06-10 12:34", tz="UTC")


def _hourly_source(**options: object) -> YahooFinanceSource:
    return YahooFinanceSource(timeframe=Timeframe.H1, throttle_seconds=0, sleep=lambda seconds: None,
                              now=lambda: NOW, **options)  # fmt: skip


@pytest.mark.filterwarnings("ignore::Warning")
def test_hourly_bars_through_the_installed_yfinance_are_labelled_by_open_time_in_utc(
    recorded_yahoo: Callable[..., RecordedYahoo],
) -> None:
    hours = pd.date_range("2025-06-02 00:00", "2025-06-04 00:00", freq="1h", tz="UTC", inclusive="left")
    server = recorded_yahoo({"EURUSD=X": hours})
    bars = _hourly_source().fetch(["EURUSD=X"], "2025-06-02 10:00", "2025-06-02 13:00")
    assert bars["date"].tolist() == [pd.Timestamp(f"2025-06-02 {hour}:00", tz="UTC") for hour in (10, 11, 12)]
    assert str(bars["date"].dtype) == "datetime64[ns, UTC]"
    assert bars["close"].tolist() == [1.081, 1.0811, 1.0812]  # bar 10 of the day: 1.08 + 10 pips
    [chart] = [request for request in server.requests if "period1" in request]
    day = int(pd.Timestamp("2025-06-02", tz="UTC").timestamp())
    assert (chart["interval"], chart["period1"], chart["period2"]) == ("1h", day, day + 86400)


@pytest.mark.filterwarnings("ignore::Warning")
def test_closed_time_and_forming_bars_are_dropped_and_counted(
    recorded_yahoo: Callable[..., RecordedYahoo],
) -> None:
    # Saturday 2025-06-07 has no FX market; 12:00 on 2025-06-10 is still forming at NOW (12:34).
    saturday = pd.date_range("2025-06-07 10:00", periods=2, freq="1h", tz="UTC")
    tuesday = pd.date_range("2025-06-10 10:00", periods=3, freq="1h", tz="UTC")
    recorded_yahoo({"EURUSD=X": saturday.append(tuesday)})
    source = _hourly_source(calendars={"EURUSD=X": "24x5"})
    bars = source.fetch(["EURUSD=X"], "2025-06-07", "2025-06-11")
    assert bars["date"].tolist() == [
        pd.Timestamp("2025-06-10 10:00", tz="UTC"),
        pd.Timestamp("2025-06-10 11:00", tz="UTC"),
    ]
    report = source.last_report["EURUSD=X"]
    assert (report.closed_time_rows_dropped, report.forming_rows_dropped, report.rows) == (2, 1, 2)


@pytest.mark.filterwarnings("ignore::Warning")
def test_bars_of_another_timeframe_are_refused(recorded_yahoo: Callable[..., RecordedYahoo]) -> None:
    recorded_yahoo({"EURUSD=X": pd.date_range("2025-06-02 10:00", periods=6, freq="30min", tz="UTC")})
    with pytest.raises(MalformedDataError, match="yahoo EURUSD=X: asked for H1 bars, got M30 bars"):
        _hourly_source().fetch(["EURUSD=X"], "2025-06-02", "2025-06-03")


@pytest.mark.filterwarnings("ignore::Warning")
@pytest.mark.parametrize("tickers", [["SPY"], ["SPY", "QQQ"]])
def test_no_network_is_reported_as_a_network_problem_not_an_unknown_ticker(
    recorded_yahoo: Callable[..., RecordedYahoo], tickers: list[str]
) -> None:
    recorded_yahoo({}, network=False)
    sleeps = Sleeps()
    source = YahooFinanceSource(max_attempts=3, throttle_seconds=0, sleep=sleeps)
    with pytest.raises(SourceUnavailableError) as caught:
        source.fetch(tickers, date(2024, 1, 2), date(2024, 1, 5))
    message = str(caught.value)
    assert "could not reach Yahoo Finance: a network problem" in message
    assert "Could not resolve host" in message and "after 3 attempts" in message
    assert "delisted" not in message
    assert sleeps.seconds == [2.0, 4.0]  # retried with backoff before giving up


def test_intraday_windows_older_than_yahoo_keeps_are_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeDownload(lambda tickers: (pd.DataFrame(), {}))
    monkeypatch.setattr(yfinance, "download", fake)
    with pytest.raises(
        MarketDataError, match=r"serves 1h bars for the last 730 days only \(from 2023-06-11 12:34 UTC\)"
    ):
        _hourly_source().fetch(["EURUSD=X"], "2017-01-02", "2017-01-03")
    assert fake.calls == []
    for timeframe in (Timeframe.H4, Timeframe.W1):
        with pytest.raises(
            MarketDataError, match=rf"Yahoo Finance has no {timeframe} bars; it offers M1, M5"
        ):
            YahooFinanceSource(timeframe=timeframe)


def test_minute_bars_are_asked_for_seven_days_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    minutes = pd.date_range("2025-05-26", "2025-06-09", freq="1min", tz="UTC", inclusive="left")

    def respond(tickers: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
        start, end = fake.calls[-1]["start"], fake.calls[-1]["end"]
        opens = minutes[(minutes >= start) & (minutes < end)]
        frame = pd.DataFrame({"Open": 1.1, "High": 1.2, "Low": 1.0, "Close": 1.1, "Volume": 0}, index=opens)
        return download_frame({"BTC-USD": frame.rename_axis("Datetime")}, ignore_tz=False), {}

    fake = FakeDownload(respond)
    monkeypatch.setattr(yfinance, "download", fake)
    source = YahooFinanceSource(timeframe=Timeframe.M1, throttle_seconds=0, now=lambda: NOW)
    bars = source.fetch(["BTC-USD"], "2025-05-26", "2025-06-09")
    spans = [(call["start"], call["end"]) for call in fake.calls]
    assert spans == [
        (
            pd.Timestamp("2025-05-26", tz="UTC").to_pydatetime(),
            pd.Timestamp("2025-06-02", tz="UTC").to_pydatetime(),
        ),
        (
            pd.Timestamp("2025-06-02", tz="UTC").to_pydatetime(),
            pd.Timestamp("2025-06-09", tz="UTC").to_pydatetime(),
        ),
    ]
    assert fake.calls[0]["interval"] == "1m" and len(bars) == len(minutes)
