"""The one interface every market-data source implements, and the errors they raise.

`fetch` is a template method: argument checks, date-range filtering, canonical normalisation and
validation live here once, so every source returns the same canonical bar frame and reports bad data the
same way. Sources implement only `_fetch_raw`.

A source delivers one timeframe (`timeframe`, D1 unless the source was built for another): daily bars are
fetched by inclusive day range, intraday bars by the half-open window [start, end) of their open times,
the way Dagster time partitions are windows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date

import pandas as pd

from emp_pipeline.domain.bars import (
    BAR_COLUMNS,
    BarValidationError,
    empty_bars,
    normalise_bars,
    validate_bars,
)
from emp_pipeline.domain.calendars import as_utc
from emp_pipeline.domain.timeframes import Timeframe


class MarketDataError(RuntimeError):
    """A source could not deliver bars; the message names the symbol (and file/row where there is one)."""

    def __init__(self, message: str, symbol: str | None = None) -> None:
        super().__init__(message)
        self.symbol = symbol


class UnknownSymbolError(MarketDataError):
    """The source has nothing under this symbol (no file, unknown or delisted ticker)."""


class NoDataError(MarketDataError):
    """The source knows the symbol but returned no bars for the requested range."""


class MalformedDataError(MarketDataError):
    """The data cannot be read or breaks OHLC rules; fix the data, retrying won't help."""


class SourceUnavailableError(MarketDataError):
    """The source kept failing with transient errors (network, rate limit) after all retries."""


def _as_date(value: date | str | pd.Timestamp, what: str) -> date:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a date, got {value!r}") from error
    return stamp.date()


def _as_instant(value: date | str | pd.Timestamp, what: str) -> pd.Timestamp:
    try:
        return as_utc(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a date or a time, got {value!r}") from error


class MarketDataSource(ABC):
    """Bars of one timeframe for a set of symbols over a range, as a canonical bar frame."""

    name: str = "source"
    timeframe: Timeframe = Timeframe.D1

    def fetch(
        self, symbols: Sequence[str], start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
    ) -> pd.DataFrame:
        """Bars of `symbols` in the range, normalised and validated (see domain/bars.py).

        Daily and weekly: bars dated start..end, inclusive days. Intraday: bars opening in [start, end),
        instants in UTC (a date or a naive time means UTC; 2024-01-02 is its midnight).
        """
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of symbols, got the string {symbols!r}")
        wanted = list(dict.fromkeys(symbols))
        if self.timeframe.is_intraday:
            window_start, window_end = _as_instant(start, "start"), _as_instant(end, "end")
            if window_end <= window_start:
                raise ValueError(f"end {window_end} is not after start {window_start}")
            first, last = window_start.date(), (window_end - pd.Timedelta(1)).date()
        else:
            first, last = _as_date(start, "start"), _as_date(end, "end")
            if last < first:
                raise ValueError(f"end {last} is before start {first}")
            window_start = pd.Timestamp(first, tz="UTC")
            window_end = pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1)
        if not wanted:
            return empty_bars()
        raw = self._fetch_raw(wanted, first, last)
        if raw.empty:
            return empty_bars()
        try:
            bars = normalise_bars(raw, self.timeframe)
        except BarValidationError as error:
            raise MalformedDataError(f"{self.name}: {error}") from error
        in_range = (bars["date"] >= window_start) & (bars["date"] < window_end)
        bars = bars.loc[in_range].reset_index(drop=True)
        if bars.empty:
            return empty_bars()
        try:
            return validate_bars(bars)
        except BarValidationError as error:
            raise MalformedDataError(f"{self.name}: {error}", symbol=None) from error

    @abstractmethod
    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        """A long frame with the canonical columns (any dtypes, any order) covering at least the UTC days
        start..end (inclusive); `fetch` cuts it to the exact range."""


def concat_bars(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-symbol frames that carry the canonical columns (empty input gives empty bars)."""
    non_empty = [frame.loc[:, list(BAR_COLUMNS)] for frame in frames if not frame.empty]
    if not non_empty:
        return empty_bars()
    return pd.concat(non_empty, ignore_index=True)
