"""Bars from Yahoo Finance through yfinance, batched, throttled and retried: daily, and intraday where Yahoo
offers it (1m for the last 30 days, 7 days per request; 5m, 15m and 30m for the last 60 days; 60m for the
last 730 days; no 4-hour or weekly bars here). A window older than that is refused before any request.

yfinance's `download` swallows per-ticker failures: it logs "['TICKER']: SomeError('...')" on the
`yfinance` logger and returns an all-NaN column for that ticker. So this source listens to that logger for
the duration of each call to tell a transient failure (rate limit, network), which is retried with
exponential backoff, from an unknown ticker or an empty range, which is reported at once without retrying.
Without a network yfinance's summary line says "possibly delisted; no timezone found"; the cause is in the
line its worker thread logged first ("Failed to get ticker 'X' reason: ... Could not resolve host ..."), so
that line is read too, and a network failure is reported as one, never as an unknown ticker.

Intraday bars are labelled by their open time in UTC and go through the checks CSV files get (the
timeframe read from their spacing must be the one asked for); bars still forming (open + length after now)
are left out, and bars in the instrument calendar's closed time or off its bar grid are dropped and counted.

Layouts handled: a single ticker with flat columns, several tickers with MultiIndex columns in either
(Price, Ticker) or (Ticker, Price) order, with or without "Adj Close" (auto_adjust False/True), and a
tz-aware or naive "Date" index. Yahoo's bars are a third-party feed we cannot fix at the origin, so rows
with a missing price are dropped and bars whose open/close poke outside [low, high] have their range
widened to include them (Yahoo's FX bars do this); both are counted in `last_report` and logged.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd

from emp_pipeline.data.source import (
    MalformedDataError,
    MarketDataError,
    MarketDataSource,
    NoDataError,
    SourceUnavailableError,
    concat_bars,
)
from emp_pipeline.domain.bars import BAR_COLUMNS
from emp_pipeline.domain.timeframes import (
    BarSpacingError,
    Timeframe,
    detect_timeframe,
    off_bar_grid,
    outside_trading_time,
)

logger = logging.getLogger(__name__)

DownloadFunction = Callable[..., "pd.DataFrame | None"]

YFINANCE_LOGGER = "yfinance"
_FIELD_BY_KEY = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adjclose": "adj_close",
    "volume": "volume",
}
_OTHER_YAHOO_FIELDS = frozenset({"dividends", "stocksplits", "capitalgains", "repaired"})
_TRANSIENT_MARKERS = (
    "ratelimit",
    "rate limit",
    "too many requests",
    "timeout",
    "timed out",
    "connection",
    "curl: (",
    "could not resolve",
    "temporarily",
    "try again",
    "try after a while",
    "network",
    "sslerror",
    "status_code = 5",
    "status code 5",
    "http error 5",
    "server error",
    "service unavailable",
    "bad gateway",
    "gateway time",
    "yahoo! finance is currently down",
)
_NETWORK_MARKERS = (
    "curl: (",
    "could not resolve",
    "connection",
    "timed out",
    "timeout",
    "network",
    "sslerror",
    "name or service not known",
)
_FAILURE_LINE = re.compile(r"^\s*(\[.*?\])\s*:\s*(.*)$", re.DOTALL)
_CAUSE_LINE = re.compile(r"^Failed to get ticker '(?P<ticker>[^']+)' reason: (?P<reason>.*)$", re.DOTALL)


@dataclass(frozen=True)
class YahooInterval:
    """How Yahoo serves one timeframe: its interval name, how far back it reaches, how much one request may
    span (None: no limit)."""

    name: str
    lookback: timedelta | None
    request_span: timedelta | None


YAHOO_INTERVALS: dict[Timeframe, YahooInterval] = {
    Timeframe.M1: YahooInterval("1m", timedelta(days=30), timedelta(days=7)),
    Timeframe.M5: YahooInterval("5m", timedelta(days=60), None),
    Timeframe.M15: YahooInterval("15m", timedelta(days=60), None),
    Timeframe.M30: YahooInterval("30m", timedelta(days=60), None),
    Timeframe.H1: YahooInterval("1h", timedelta(days=730), None),
    Timeframe.D1: YahooInterval("1d", None, None),
}


def _field_key(name: object) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def is_transient_message(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


def is_network_message(text: str) -> bool:
    """The failure is this machine not reaching Yahoo (DNS, connection, TLS, timeout), not Yahoo's answer."""
    lowered = text.lower()
    return any(marker in lowered for marker in _NETWORK_MARKERS)


def is_transient_exception(error: BaseException) -> bool:
    """Network errors (requests and curl_cffi errors are OSErrors) and Yahoo's rate limiting."""
    if isinstance(error, OSError):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return "YFRateLimitError" in names or is_transient_message(f"{type(error).__name__} {error}")


@dataclass(frozen=True)
class YahooTickerReport:
    """What normalising one ticker's download changed, for run metadata."""

    symbol: str
    rows: int
    incomplete_rows_dropped: int
    ohlc_rows_widened: int
    attempts: int
    forming_rows_dropped: int = 0
    closed_time_rows_dropped: int = 0


class _FailureCapture(logging.Handler):
    """Collects yfinance's per-ticker failure lines: the summary from the calling thread, and the cause
    each worker thread logged for the tickers of this call."""

    def __init__(self, tickers: list[str]) -> None:
        super().__init__(level=logging.ERROR)
        self.thread_id = threading.get_ident()
        self.tickers = {ticker.upper() for ticker in tickers}
        self.failures: dict[str, str] = {}
        self.causes: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        cause = _CAUSE_LINE.match(message)
        if cause and cause.group("ticker").upper() in self.tickers:
            self.causes[cause.group("ticker").upper()] = cause.group("reason").strip()
            return
        if record.thread != self.thread_id:
            return
        match = _FAILURE_LINE.match(message)
        if not match:
            return
        try:
            tickers = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return
        if isinstance(tickers, list):
            for ticker in tickers:
                self.failures[str(ticker).upper()] = match.group(2).strip()

    def reasons(self) -> dict[str, str]:
        """Per ticker, why it has no bars: a network cause outranks the summary's "possibly delisted"."""
        reasons = dict(self.failures)
        for ticker, cause in self.causes.items():
            if is_transient_message(cause) or ticker not in reasons:
                reasons[ticker] = cause
        return reasons


@contextmanager
def _capture_yfinance_failures(tickers: list[str]) -> Iterator[_FailureCapture]:
    capture = _FailureCapture(tickers)
    yf_logger = logging.getLogger(YFINANCE_LOGGER)
    yf_logger.addHandler(capture)
    try:
        yield capture
    finally:
        yf_logger.removeHandler(capture)


def _ticker_frames(frame: pd.DataFrame | None, tickers: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Split a yf.download result into one frame per requested ticker with Yahoo's field columns."""
    if frame is None or frame.empty or len(frame.columns) == 0:
        return {}
    columns = frame.columns
    if not isinstance(columns, pd.MultiIndex):
        if len(tickers) != 1:
            raise MalformedDataError(
                f"yfinance returned flat columns {list(columns)} for several tickers {list(tickers)}; "
                "expected MultiIndex (Price, Ticker) columns"
            )
        return {tickers[0]: frame}
    if columns.nlevels != 2:
        raise MalformedDataError(f"yfinance returned {columns.nlevels} column levels; expected 2")
    names = [str(name).lower() if name is not None else "" for name in columns.names]
    if "price" in names:
        price_level = names.index("price")
    elif "ticker" in names:
        price_level = 1 - names.index("ticker")
    else:
        known = set(_FIELD_BY_KEY) | _OTHER_YAHOO_FIELDS
        price_level = next(
            (level for level in (0, 1) if {_field_key(v) for v in columns.get_level_values(level)} <= known),
            -1,
        )
        if price_level < 0:
            raise MalformedDataError(
                f"cannot tell price fields from tickers in yfinance columns {list(columns)}"
            )
    ticker_level = 1 - price_level
    present = {str(value): str(value) for value in columns.get_level_values(ticker_level).unique()}
    by_upper = {key.upper(): key for key in present}
    out: dict[str, pd.DataFrame] = {}
    for ticker in tickers:
        key = present.get(ticker) or by_upper.get(ticker.upper())
        if key is not None:
            out[ticker] = frame.xs(key, axis=1, level=ticker_level)
    return out


def _bar_labels(index: pd.DatetimeIndex, timeframe: Timeframe) -> pd.DatetimeIndex:
    """Daily: the exchange-local trading day as written. Intraday: the open time, in UTC (naive = UTC)."""
    if timeframe.is_intraday:
        return (index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")).as_unit("ns")
    if index.tz is not None:
        index = index.tz_localize(None)  # keep the exchange-local trading day
    return index.normalize()


def _check_intraday(
    symbol: str, bars: pd.DataFrame, timeframe: Timeframe, calendar: str | None, now: pd.Timestamp
) -> tuple[pd.DataFrame, int, int]:
    """Closed bars of the asked timeframe only: (bars, forming bars dropped, closed-time bars dropped)."""
    forming = bars.index + pd.Timedelta(timeframe.duration) > now
    bars = bars.loc[~forming]
    try:
        detected = detect_timeframe(bars.index)
    except BarSpacingError as error:
        shown = [f"{bars.index[position]:%Y-%m-%d %H:%M}" for position in error.positions]
        raise MalformedDataError(f"yahoo {symbol}: bars at {shown} UTC: {error}", symbol=symbol) from None
    if detected is not None and detected is not timeframe:
        raise MalformedDataError(
            f"yahoo {symbol}: asked for {timeframe} bars, got {detected} bars", symbol=symbol
        )
    misplaced = np.zeros(len(bars), dtype=bool)
    if calendar is not None:
        misplaced = outside_trading_time(calendar, timeframe, bars.index) | off_bar_grid(
            calendar, timeframe, bars.index
        )
    return bars.loc[~misplaced], int(forming.sum()), int(misplaced.sum())


def normalise_ticker_frame(
    symbol: str,
    frame: pd.DataFrame,
    attempts: int = 1,
    *,
    timeframe: Timeframe = Timeframe.D1,
    calendar: str | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, YahooTickerReport]:
    """One ticker's Yahoo fields (Open, High, Low, Close[, Adj Close], Volume) as canonical bar columns.

    Intraday bars also go through `_check_intraday` (`calendar` is the instrument's, `now` the cut-off for
    bars still forming).
    """
    renamed: dict[str, pd.Series] = {}
    for column in frame.columns:
        canonical = _FIELD_BY_KEY.get(_field_key(column))
        if canonical is not None:
            renamed[canonical] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    missing = [column for column in ("open", "high", "low", "close") if column not in renamed]
    if missing:
        raise MalformedDataError(
            f"yfinance data for {symbol!r} has no {missing} column(s); got {list(frame.columns)}",
            symbol=symbol,
        )
    bars = pd.DataFrame(renamed, index=frame.index)
    bars.index = _bar_labels(pd.DatetimeIndex(frame.index), timeframe)
    ohlc = bars[["open", "high", "low", "close"]]
    all_missing = ohlc.isna().all(axis=1)  # rows another ticker's calendar added
    bars = bars.loc[~all_missing]
    ohlc = bars[["open", "high", "low", "close"]]
    unusable = ohlc.isna().any(axis=1) | (ohlc <= 0).any(axis=1)
    bars = bars.loc[~unusable]
    if "adj_close" not in bars.columns:
        bars["adj_close"] = bars["close"]
    bars["adj_close"] = bars["adj_close"].where(bars["adj_close"] > 0, bars["close"])
    bars["volume"] = bars["volume"].fillna(0.0).clip(lower=0.0) if "volume" in bars.columns else 0.0
    bars = bars.loc[~bars.index.duplicated(keep="last")]
    forming = closed_time = 0
    if timeframe.is_intraday:
        moment = now if now is not None else pd.Timestamp.now(tz="UTC")
        bars, forming, closed_time = _check_intraday(symbol, bars, timeframe, calendar, moment)
    envelope_high = bars[["open", "high", "close"]].max(axis=1)
    envelope_low = bars[["open", "low", "close"]].min(axis=1)
    widened = (envelope_high != bars["high"]) | (envelope_low != bars["low"])
    bars["high"], bars["low"] = envelope_high, envelope_low
    report = YahooTickerReport(
        symbol=symbol,
        rows=len(bars),
        incomplete_rows_dropped=int(unusable.sum()),
        ohlc_rows_widened=int(widened.sum()),
        attempts=attempts,
        forming_rows_dropped=forming,
        closed_time_rows_dropped=closed_time,
    )
    if report.incomplete_rows_dropped or report.ohlc_rows_widened or report.closed_time_rows_dropped:
        logger.warning(
            "yahoo %s: dropped %d rows with a missing/non-positive price and %d in closed time or off the "
            "bar grid, widened [low, high] on %d rows",
            symbol,
            report.incomplete_rows_dropped,
            report.closed_time_rows_dropped,
            report.ohlc_rows_widened,
        )
    out = bars.rename_axis("date").reset_index()
    out["symbol"] = symbol
    return out.loc[:, list(BAR_COLUMNS)], report


def _yfinance_download(**kwargs: object) -> pd.DataFrame | None:
    """Looked up at call time so tests (and users) can monkeypatch `yfinance.download`."""
    import yfinance

    return yfinance.download(**kwargs)


def _unavailable(tickers: list[str], attempts: int, reasons: str) -> SourceUnavailableError:
    """Retries exhausted: say whether this machine could not reach Yahoo or Yahoo kept refusing."""
    if is_network_message(reasons):
        cause = (
            "this machine could not reach Yahoo Finance: a network problem (DNS, connection or TLS), not an "
            "unknown ticker. Check the internet access or proxy of the machine running the pipeline"
        )
    else:
        cause = (
            "Yahoo Finance kept refusing (rate limit or server error). Try again later or raise max_attempts"
        )
    return SourceUnavailableError(
        f"Yahoo Finance still failing for {tickers} after {attempts} attempts ({reasons}): {cause}.",
        symbol=tickers[0] if len(tickers) == 1 else None,
    )


class YahooFinanceSource(MarketDataSource):
    """yfinance `download` in chunks of tickers, with a throttle between calls and retries with backoff.

    `timeframe` is the bar size fetched (see `YAHOO_INTERVALS`); `calendars` (symbol -> trading calendar)
    lets intraday bars in closed time be dropped; `now` is the clock that decides which bars are closed and
    how far back Yahoo reaches.
    """

    name = "yahoo"

    def __init__(
        self,
        *,
        timeframe: Timeframe = Timeframe.D1,
        calendars: Mapping[str, str] | None = None,
        chunk_size: int = 20,
        max_attempts: int = 4,
        initial_backoff_seconds: float = 2.0,
        backoff_multiplier: float = 2.0,
        max_backoff_seconds: float = 60.0,
        throttle_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        auto_adjust: bool = False,
        download: DownloadFunction | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    ) -> None:
        if timeframe not in YAHOO_INTERVALS:
            offered = ", ".join(str(tf) for tf in YAHOO_INTERVALS)
            raise MarketDataError(f"Yahoo Finance has no {timeframe} bars; it offers {offered}")
        if chunk_size < 1 or max_attempts < 1:
            raise ValueError(f"chunk_size and max_attempts must be >= 1, got {chunk_size}, {max_attempts}")
        if min(initial_backoff_seconds, throttle_seconds, timeout_seconds) < 0 or backoff_multiplier < 1:
            raise ValueError("backoff, throttle and timeout must be >= 0 and backoff_multiplier >= 1")
        self.timeframe = timeframe
        self.calendars = dict(calendars or {})
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.initial_backoff_seconds = initial_backoff_seconds
        self.backoff_multiplier = backoff_multiplier
        self.max_backoff_seconds = max_backoff_seconds
        self.throttle_seconds = throttle_seconds
        self.timeout_seconds = timeout_seconds
        self.auto_adjust = auto_adjust
        self._download = download or _yfinance_download
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._last_call: float | None = None
        self.last_report: dict[str, YahooTickerReport] = {}

    def backoff_seconds(self, failed_attempt: int) -> float:
        """Delay after the n-th failed attempt (1-based): initial * multiplier^(n-1), capped."""
        delay = self.initial_backoff_seconds * self.backoff_multiplier ** (failed_attempt - 1)
        return min(delay, self.max_backoff_seconds)

    def _throttle(self) -> None:
        """Keep at least `throttle_seconds` between the starts of consecutive download calls."""
        now = self._clock()
        wait = 0.0 if self._last_call is None else self.throttle_seconds - (now - self._last_call)
        if wait > 0:
            self._sleep(wait)
        self._last_call = now + max(wait, 0.0)

    def _requests(self, start: date, end: date) -> list[tuple[str | datetime, str | datetime]]:
        """The (start, end) pairs to ask yfinance for, end exclusive: whole days for daily bars; for
        intraday bars UTC instants covering the days, cut to Yahoo's span per request, refused when
        older than Yahoo keeps."""
        if not self.timeframe.is_intraday:
            return [(start.isoformat(), (end + timedelta(days=1)).isoformat())]  # yfinance's end is exclusive
        interval = YAHOO_INTERVALS[self.timeframe]
        first = pd.Timestamp(start, tz="UTC")
        last = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
        earliest = self._now() - pd.Timedelta(interval.lookback)
        if first < earliest:
            raise MarketDataError(
                f"Yahoo Finance serves {interval.name} bars for the last {interval.lookback.days} days only "
                f"(from {earliest:%Y-%m-%d %H:%M} UTC); the requested range starts {start}. Older "
                f"{self.timeframe} history: a CSV folder or the cTrader source"
            )
        span = pd.Timedelta(interval.request_span) if interval.request_span else last - first
        edges = [*pd.date_range(first, last, freq=span, inclusive="left"), last]
        return [(a.to_pydatetime(), b.to_pydatetime()) for a, b in pairwise(edges)]

    def _call(
        self, tickers: list[str], start: str | datetime, end: str | datetime
    ) -> tuple[pd.DataFrame | None, dict[str, str]]:
        self._throttle()
        with _capture_yfinance_failures(tickers) as capture:
            frame = self._download(
                tickers=tickers,
                start=start,
                end=end,
                interval=YAHOO_INTERVALS[self.timeframe].name,
                auto_adjust=self.auto_adjust,
                actions=False,
                group_by="column",
                progress=False,
                timeout=self.timeout_seconds,
            )
        return frame, capture.reasons()

    def _normalise(
        self, ticker: str, raw: pd.DataFrame, attempt: int
    ) -> tuple[pd.DataFrame, YahooTickerReport]:
        return normalise_ticker_frame(
            ticker,
            raw,
            attempt,
            timeframe=self.timeframe,
            calendar=self.calendars.get(ticker),
            now=self._now(),
        )

    def _fetch_chunk(
        self, tickers: list[str], start: str | datetime, end: str | datetime
    ) -> tuple[list[pd.DataFrame], dict[str, str]]:
        """Bars of one chunk and {ticker: reason} for tickers that have none (not retried)."""
        pending = list(tickers)
        frames: list[pd.DataFrame] = []
        empty: dict[str, str] = {}
        attempt = 0
        while pending:
            attempt += 1
            try:
                frame, failures = self._call(pending, start, end)
            except Exception as error:
                if not is_transient_exception(error):
                    raise MarketDataError(
                        f"yfinance failed for {pending}: {type(error).__name__}: {error}",
                        symbol=pending[0] if len(pending) == 1 else None,
                    ) from error
                if attempt >= self.max_attempts:
                    raise _unavailable(pending, attempt, f"{type(error).__name__}: {error}") from error
                logger.warning("yahoo attempt %d for %s failed (%s); retrying", attempt, pending, error)
                self._sleep(self.backoff_seconds(attempt))
                continue
            per_ticker = _ticker_frames(frame, pending)
            retry: list[str] = []
            for ticker in pending:
                reason = failures.get(ticker.upper(), "")
                raw = per_ticker.get(ticker)
                bars, report = (None, None) if raw is None else self._normalise(ticker, raw, attempt)
                if bars is not None and not bars.empty:
                    frames.append(bars)
                    self.last_report[ticker] = report
                elif reason and is_transient_message(reason):
                    retry.append(ticker)
                else:
                    empty[ticker] = reason
            if retry and attempt >= self.max_attempts:
                raise _unavailable(
                    retry, attempt, "; ".join(f"{t}: {failures.get(t.upper(), '')}" for t in retry)
                )
            if retry:
                logger.warning("yahoo attempt %d: transient failure for %s; retrying", attempt, retry)
                self._sleep(self.backoff_seconds(attempt))
            pending = retry
        return frames, empty

    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        self.last_report = {}
        frames: list[pd.DataFrame] = []
        empty: dict[str, str] = {}
        for request_start, request_end in self._requests(start, end):
            for offset in range(0, len(symbols), self.chunk_size):
                chunk_frames, chunk_empty = self._fetch_chunk(
                    symbols[offset : offset + self.chunk_size], request_start, request_end
                )
                frames.extend(chunk_frames)
                empty.update(chunk_empty)
        returned = {str(frame["symbol"].iloc[0]) for frame in frames}
        empty = {ticker: reason for ticker, reason in empty.items() if ticker not in returned}
        if empty:
            details = "; ".join(
                f"{ticker!r} ({reason or 'no rows, no reason given'})" for ticker, reason in empty.items()
            )
            raise NoDataError(
                f"Yahoo Finance returned no bars between {start} and {end} for {details}. The ticker is "
                "unknown or delisted (check the spelling on finance.yahoo.com), or the range holds no "
                "trading day.",
                symbol=next(iter(empty)),
            )
        return concat_bars(frames)
