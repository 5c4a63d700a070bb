"""The one interface every market-data source implements, and the errors they raise.

`fetch` is a template method: argument checks, date-range filtering, canonical normalisation and
validation live here once, so every source returns the same canonical bar frame and reports bad data the
same way. Sources implement only `_fetch_raw`.
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


class MarketDataSource(ABC):
    """Daily bars for a set of symbols over an inclusive date range, as a canonical bar frame."""

    name: str = "source"

    def fetch(
        self, symbols: Sequence[str], start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
    ) -> pd.DataFrame:
        """Bars of `symbols` dated start..end inclusive, normalised and validated (see domain/bars.py)."""
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of symbols, got the string {symbols!r}")
        wanted = list(dict.fromkeys(symbols))
        first, last = _as_date(start, "start"), _as_date(end, "end")
        if last < first:
            raise ValueError(f"end {last} is before start {first}")
        if not wanted:
            return empty_bars()
        raw = self._fetch_raw(wanted, first, last)
        if raw.empty:
            return empty_bars()
        try:
            bars = normalise_bars(raw)
        except BarValidationError as error:
            raise MalformedDataError(f"{self.name}: {error}") from error
        in_range = (bars["date"] >= pd.Timestamp(first, tz="UTC")) & (
            bars["date"] <= pd.Timestamp(last, tz="UTC")
        )
        bars = bars.loc[in_range].reset_index(drop=True)
        if bars.empty:
            return empty_bars()
        try:
            return validate_bars(bars)
        except BarValidationError as error:
            raise MalformedDataError(f"{self.name}: {error}", symbol=None) from error

    @abstractmethod
    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        """A long frame with the canonical columns (any dtypes, any order) covering at least start..end."""


def concat_bars(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-symbol frames that carry the canonical columns (empty input gives empty bars)."""
    non_empty = [frame.loc[:, list(BAR_COLUMNS)] for frame in frames if not frame.empty]
    if not non_empty:
        return empty_bars()
    return pd.concat(non_empty, ignore_index=True)
