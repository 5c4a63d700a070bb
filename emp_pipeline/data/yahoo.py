"""Daily bars from Yahoo Finance through yfinance, batched, throttled and retried.

yfinance's `download` swallows per-ticker failures: it logs "['TICKER']: SomeError('...')" on the
`yfinance` logger and returns an all-NaN column for that ticker. So this source listens to that logger for
the duration of each call to tell a transient failure (rate limit, network), which is retried with
exponential backoff, from an unknown ticker or an empty range, which is reported at once without retrying.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

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
_FAILURE_LINE = re.compile(r"^\s*(\[.*?\])\s*:\s*(.*)$", re.DOTALL)


def _field_key(name: object) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def is_transient_message(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


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


class _FailureCapture(logging.Handler):
    """Collects yfinance's per-ticker failure lines logged from the calling thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.thread_id = threading.get_ident()
        self.failures: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id:
            return
        match = _FAILURE_LINE.match(record.getMessage())
        if not match:
            return
        try:
            tickers = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return
        if isinstance(tickers, list):
            for ticker in tickers:
                self.failures[str(ticker).upper()] = match.group(2).strip()


@contextmanager
def _capture_yfinance_failures() -> Iterator[_FailureCapture]:
    capture = _FailureCapture()
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


def normalise_ticker_frame(
    symbol: str, frame: pd.DataFrame, attempts: int = 1
) -> tuple[pd.DataFrame, YahooTickerReport]:
    """One ticker's Yahoo fields (Open, High, Low, Close[, Adj Close], Volume) as canonical bar columns."""
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
    index = pd.DatetimeIndex(frame.index)
    if index.tz is not None:
        index = index.tz_localize(None)  # keep the exchange-local trading day
    bars.index = index.normalize()
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
    )
    if report.incomplete_rows_dropped or report.ohlc_rows_widened:
        logger.warning(
            "yahoo %s: dropped %d rows with a missing/non-positive price, widened [low, high] on %d rows",
            symbol,
            report.incomplete_rows_dropped,
            report.ohlc_rows_widened,
        )
    out = bars.rename_axis("date").reset_index()
    out["symbol"] = symbol
    return out.loc[:, list(BAR_COLUMNS)], report


def _yfinance_download(**kwargs: object) -> pd.DataFrame | None:
    """Looked up at call time so tests (and users) can monkeypatch `yfinance.download`."""
    import yfinance

    return yfinance.download(**kwargs)


class YahooFinanceSource(MarketDataSource):
    """yfinance `download` in chunks of tickers, with a throttle between calls and retries with backoff."""

    name = "yahoo"

    def __init__(
        self,
        *,
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
    ) -> None:
        if chunk_size < 1 or max_attempts < 1:
            raise ValueError(f"chunk_size and max_attempts must be >= 1, got {chunk_size}, {max_attempts}")
        if min(initial_backoff_seconds, throttle_seconds, timeout_seconds) < 0 or backoff_multiplier < 1:
            raise ValueError("backoff, throttle and timeout must be >= 0 and backoff_multiplier >= 1")
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

    def _call(self, tickers: list[str], start: date, end: date) -> tuple[pd.DataFrame | None, dict[str, str]]:
        self._throttle()
        with _capture_yfinance_failures() as capture:
            frame = self._download(
                tickers=tickers,
                start=start.isoformat(),
                end=(end + timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                interval="1d",
                auto_adjust=self.auto_adjust,
                actions=False,
                group_by="column",
                progress=False,
                timeout=self.timeout_seconds,
            )
        return frame, capture.failures

    def _fetch_chunk(
        self, tickers: list[str], start: date, end: date
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
                    raise SourceUnavailableError(
                        f"Yahoo Finance still failing for {pending} after {attempt} attempts: "
                        f"{type(error).__name__}: {error}. Try again later or raise max_attempts.",
                        symbol=pending[0] if len(pending) == 1 else None,
                    ) from error
                logger.warning("yahoo attempt %d for %s failed (%s); retrying", attempt, pending, error)
                self._sleep(self.backoff_seconds(attempt))
                continue
            per_ticker = _ticker_frames(frame, pending)
            retry: list[str] = []
            for ticker in pending:
                reason = failures.get(ticker.upper(), "")
                raw = per_ticker.get(ticker)
                bars, report = (None, None) if raw is None else normalise_ticker_frame(ticker, raw, attempt)
                if bars is not None and not bars.empty:
                    frames.append(bars)
                    self.last_report[ticker] = report
                elif reason and is_transient_message(reason):
                    retry.append(ticker)
                else:
                    empty[ticker] = reason
            if retry and attempt >= self.max_attempts:
                reasons = "; ".join(f"{t}: {failures.get(t.upper(), '')}" for t in retry)
                raise SourceUnavailableError(
                    f"Yahoo Finance still failing for {retry} after {attempt} attempts ({reasons}). "
                    "Try again later or raise max_attempts.",
                    symbol=retry[0] if len(retry) == 1 else None,
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
        for offset in range(0, len(symbols), self.chunk_size):
            chunk_frames, chunk_empty = self._fetch_chunk(
                symbols[offset : offset + self.chunk_size], start, end
            )
            frames.extend(chunk_frames)
            empty.update(chunk_empty)
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
