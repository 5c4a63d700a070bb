"""Daily bars from a folder of CSV files, one file per symbol (`<SYMBOL>.csv` or `<SYMBOL>.csv.gz`).

Files come from anywhere (Yahoo exports, `yf.download(...).to_csv()`, brokers, MetaTrader, Stooq, website
downloads, hand edits), so reading is tolerant about layout and strict about content.

Tolerated: column names in any case or common variant (Date/Datetime/Timestamp, "Adj Close"/adj_close,
<CLOSE>, Close/Last, ...), yfinance's three-row (Price, Ticker, Date) header, `,` `;` or tab delimiters,
dates with or without a time or timezone (the calendar day as written is the bar's day), `$` prefixes,
thousands separators and K/M/B volumes, unsorted rows, Yahoo's all-`null` rows and exact duplicate rows
(both dropped and counted in `last_report`), a missing adjusted close (= close) or volume (= 0).

Rejected, naming the file, line and column: unreadable numbers or dates, ambiguous day/month order,
ragged rows, partly missing prices, conflicting duplicates of one day, non-positive prices, negative
volume, and bars whose open/close lie outside [low, high].
"""

from __future__ import annotations

import csv as stdlib_csv
import gzip
import io
import logging
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from emp_pipeline.data.source import (
    MalformedDataError,
    MarketDataError,
    MarketDataSource,
    NoDataError,
    UnknownSymbolError,
    concat_bars,
)
from emp_pipeline.domain.bars import BAR_COLUMNS
from emp_pipeline.domain.calendars import CALENDAR_24X5, CALENDAR_24X7, trading_days
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, Universe

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv.gz", ".csv")
NULL_TOKENS = frozenset({"", "null", "nan", "na", "n/a", "#n/a", "none", "-"})

# Header variants per canonical column, in priority order; headers are compared lower-cased with every
# non-alphanumeric character removed ("Adj Close**" -> "adjclose", "<DATE>" -> "date").
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "date": (
        "date",
        "datetime",
        "timestamp",
        "time",
        "day",
        "tradedate",
        "tradingday",
        "gmttime",
        "utctime",
        "localtime",
        "opentime",
        "dt",
    ),
    "open": ("open", "openprice", "o"),
    "high": ("high", "highprice", "h"),
    "low": ("low", "lowprice", "l"),
    "close": ("close", "closeprice", "closelast", "last", "c", "price"),
    "adj_close": ("adjclose", "adjustedclose", "adjclosing", "closeadj"),
    "volume": ("volume", "vol", "tickvol", "tickvolume", "v"),
}
REQUIRED_COLUMNS = ("date", "open", "high", "low", "close")
# A column naming the instrument: one value is fine (ignored), several mean a multi-symbol file.
SYMBOL_COLUMN_KEYS = ("symbol", "ticker", "name", "code", "instrument")
# Headers pandas writes for an unnamed index (`df.to_csv()` of a frame indexed by date).
UNNAMED_INDEX_KEYS = ("", "unnamed0", "index")

# A time of day, optionally followed by a timezone ("T05:00:00Z", " 00:00:00-05:00", " 4:00 PM UTC").
_TIME_SUFFIX = re.compile(
    r"[T ]\s*\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[AaPp][Mm])?\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})?$"
)
_ZONE_SUFFIX = re.compile(r"\s+(?:UTC|GMT)$")
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y.%m.%d",
    "%Y%m%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%b %d, %Y",
    "%d %b %Y",
    "%d-%b-%Y",
    "%d-%b-%y",
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_MAGNITUDE = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*([KkMmBb])$")
_MAGNITUDES = {"k": 1e3, "m": 1e6, "b": 1e9}
_EPOCH = re.compile(r"^\d{10}(?:\d{3})?$")
_FX_SYMBOL = re.compile(r"^([A-Z]{3})([A-Z]{3})(?:=X)?$")
_REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CsvFileReport:
    """What reading one file dropped, so the pipeline can surface it as metadata."""

    symbol: str
    path: Path
    rows: int
    null_rows_dropped: int
    duplicate_rows_dropped: int


def symbol_from_path(path: Path) -> str | None:
    """'EURUSD=X.csv' -> 'EURUSD=X', '^GSPC.csv.gz' -> '^GSPC'; None for a file that is not a CSV."""
    lower = path.name.lower()
    for suffix in CSV_SUFFIXES:
        if lower.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _open_text(path: Path) -> TextIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _sniff_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t")}
    return max(counts, key=lambda delimiter: counts[delimiter]) if any(counts.values()) else ","


def _check_field_counts(text: str, delimiter: str, path: Path) -> None:
    """pandas pads a short row with empty strings, which would read as a missing volume; reject it."""
    reader = stdlib_csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    header = next(reader, [])
    for row in reader:
        if row and any(cell.strip() for cell in row) and len(row) != len(header):
            raise MalformedDataError(
                f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(header)}"
            )


def _header_key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(header).lower())


def _map_columns(headers: list[str], path: Path) -> dict[str, str]:
    """canonical column -> header in the file."""
    by_key: dict[str, list[str]] = {}
    for header in headers:
        by_key.setdefault(_header_key(header), []).append(header)
    mapping: dict[str, str] = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            candidates = by_key.get(alias, [])
            if len(candidates) > 1:
                raise MalformedDataError(
                    f"{path}: columns {candidates} all read as {canonical!r}; keep one of them"
                )
            if candidates:
                mapping[canonical] = candidates[0]
                break
    if "date" not in mapping and headers and _header_key(headers[0]) in UNNAMED_INDEX_KEYS:
        mapping["date"] = headers[0]
    missing = [column for column in REQUIRED_COLUMNS if column not in mapping]
    if missing:
        raise MalformedDataError(
            f"{path}: no column for {missing}; found columns {list(headers)}. Expected a header such as "
            "Date,Open,High,Low,Close,Adj Close,Volume"
        )
    return mapping


def _parse_numbers(
    raw: pd.Series, header: str, path: Path, magnitudes: bool = False
) -> tuple[pd.Series, pd.Series]:
    """(values, null mask); a value that is neither a number nor a null token raises with its line.

    Accepted besides plain numbers: a leading '$', thousands separators ("1,234.5") and, for volumes,
    K/M/B suffixes ("12.3M", as investing.com writes them).
    """
    text = raw.str.strip().str.removeprefix("$")
    null = text.str.lower().isin(NULL_TOKENS)
    thousands = text.str.match(_THOUSANDS)
    text = text.where(~thousands, text.str.replace(",", "", regex=False))
    scale = pd.Series(1.0, index=text.index)
    if magnitudes:
        parts = text.str.extract(_MAGNITUDE)
        suffixed = parts[0].notna()
        text = text.where(~suffixed, parts[0])
        scale = scale.where(~suffixed, parts[1].str.lower().map(_MAGNITUDES))
    values = (pd.to_numeric(text.where(~null), errors="coerce") * scale).astype("float64")
    garbage = ~null & (values.isna() | ~np.isfinite(values.fillna(0.0)))
    if garbage.any():
        index = garbage.idxmax()
        raise MalformedDataError(f"{path} line {index}, column {header!r}: {raw[index]!r} is not a number")
    return values, null


def _parse_days(raw: pd.Series, header: str, path: Path) -> pd.Series:
    """Calendar days (naive midnight timestamps) of every row; the time and timezone, if any, are ignored."""
    text = raw.str.strip()
    if len(text) and text.str.match(_EPOCH).all():
        numbers = pd.to_numeric(text)
        unit = "ms" if text.str.len().iloc[0] == 13 else "s"
        return pd.to_datetime(numbers, unit=unit).dt.normalize()
    day_text = text.str.replace(_TIME_SUFFIX, "", regex=True).str.replace(_ZONE_SUFFIX, "", regex=True)
    best: pd.Series | None = None
    complete: list[tuple[str, pd.Series]] = []
    for date_format in _DATE_FORMATS:
        parsed = pd.to_datetime(day_text, format=date_format, errors="coerce")
        if parsed.notna().all():
            complete.append((date_format, parsed))
            if date_format == "%Y-%m-%d":
                break
        elif best is None or parsed.notna().sum() > best.notna().sum():
            best = parsed
    if complete:
        first_format, first = complete[0]
        for other_format, other in complete[1:]:
            if not other.equals(first):
                raise MalformedDataError(
                    f"{path}, column {header!r}: dates read both as {first_format} and as {other_format}; "
                    "rewrite them as YYYY-MM-DD"
                )
        return first
    failed = best.isna() if best is not None else pd.Series(True, index=text.index)
    index = failed.idxmax()
    raise MalformedDataError(
        f"{path} line {index}, column {header!r}: cannot read {raw[index]!r} as a date "
        "(expected e.g. 2024-01-31, 2024-01-31 00:00:00-05:00 or 01/31/2024)"
    )


def _check_ohlc(frame: pd.DataFrame, path: Path) -> None:
    def fail(mask: pd.Series, what: str) -> None:
        if mask.any():
            row = frame.loc[mask].iloc[0]
            raise MalformedDataError(
                f"{path} line {int(row['line'])} ({row['date'].date()}): {what} "
                f"(open={row['open']}, high={row['high']}, low={row['low']}, close={row['close']}, "
                f"adj_close={row['adj_close']}, volume={row['volume']})"
            )

    for column in ("open", "high", "low", "close", "adj_close"):
        fail(frame[column] <= 0, f"non-positive {column}")
    fail(frame["volume"] < 0, "negative volume")
    slack = frame["high"].abs() * _REL_TOLERANCE
    fail(frame["low"] > frame["high"] + slack, "low above high")
    for column in ("open", "close"):
        outside = (frame[column] < frame["low"] - slack) | (frame[column] > frame["high"] + slack)
        fail(outside, f"{column} outside [low, high]")


def _yfinance_header(cells: pd.DataFrame, symbol: str, path: Path) -> pd.DataFrame | None:
    """The three header rows `yf.download(...).to_csv()` writes: Price/Ticker (either order), then Date.

    Returns the data rows under single-level names, keeping only `symbol`'s columns when the file holds
    several tickers; None when the file does not have this layout.
    """
    if len(cells) < 3:
        return None
    rows = [cells.iloc[position].str.strip() for position in range(3)]
    kinds = [_header_key(row.iloc[0]) for row in rows[:2]]
    if sorted(kinds) != ["price", "ticker"] or (rows[2].iloc[1:] != "").any():
        return None
    fields, tickers = (rows[0], rows[1]) if kinds[0] == "price" else (rows[1], rows[0])
    positions = list(range(1, len(tickers)))
    distinct = sorted(set(tickers.iloc[1:]))
    if len(distinct) > 1:
        positions = [position for position in positions if tickers.iloc[position].upper() == symbol.upper()]
        if not positions:
            raise MalformedDataError(
                f"{path}: yfinance columns for tickers {distinct}, none of them {symbol!r}"
            )
    table = cells.iloc[3:, [0, *positions]]
    table.columns = [rows[2].iloc[0] or "Date", *fields.iloc[positions]]
    return table


def _read_table(path: Path, symbol: str) -> pd.DataFrame:
    """The file's data rows as strings under their header names, indexed by file line number."""
    try:
        with _open_text(path) as handle:
            text = handle.read()
        delimiter = _sniff_delimiter(text.split("\n", 1)[0])
        _check_field_counts(text, delimiter, path)
        cells = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise MalformedDataError(f"{path}: cannot read as CSV: {error}", symbol=symbol) from error
    cells.index = cells.index + 1
    table = _yfinance_header(cells, symbol, path)
    if table is None:
        table = cells.iloc[1:]
        table.columns = [str(name).strip() for name in cells.iloc[0]]
    return table


def _reject_several_symbols(raw: pd.DataFrame, path: Path) -> None:
    for header in raw.columns:
        if _header_key(header) in SYMBOL_COLUMN_KEYS:
            values = [value for value in raw[header].str.strip().unique() if value]
            if len(values) > 1:
                shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
                raise MalformedDataError(
                    f"{path}: column {header!r} holds {len(values)} symbols ({shown}); this source reads one "
                    "symbol per file, so split it into <SYMBOL>.csv files"
                )


def read_bar_file(path: Path, symbol: str) -> tuple[pd.DataFrame, CsvFileReport]:
    """One CSV file as canonical bars (sorted, de-duplicated, checked) plus what was dropped."""
    raw = _read_table(path, symbol)
    mapping = _map_columns(list(raw.columns), path)
    _reject_several_symbols(raw, path)

    blank = raw.apply(lambda column: column.str.strip() == "").all(axis=1)
    raw = raw.loc[~blank]
    prices: dict[str, pd.Series] = {}
    nulls: dict[str, pd.Series] = {}
    for column in ("open", "high", "low", "close", "adj_close", "volume"):
        if column in mapping:
            prices[column], nulls[column] = _parse_numbers(
                raw[mapping[column]], mapping[column], path, magnitudes=column == "volume"
            )
    ohlc_null = pd.concat([nulls[column] for column in ("open", "high", "low", "close")], axis=1)
    null_rows = ohlc_null.all(axis=1)
    partial = ohlc_null.any(axis=1) & ~null_rows
    if partial.any():
        index = partial.idxmax()
        column = next(c for c in ("open", "high", "low", "close") if nulls[c][index])
        raise MalformedDataError(
            f"{path} line {index}, column {mapping[column]!r}: missing value while the row's other "
            "prices are present; fill or delete the row",
            symbol=symbol,
        )
    keep = ~null_rows
    frame = pd.DataFrame({"line": raw.index.to_series()}).loc[keep]
    frame["date"] = _parse_days(raw.loc[keep, mapping["date"]], mapping["date"], path)
    for column in ("open", "high", "low", "close"):
        frame[column] = prices[column].loc[keep]
    if "adj_close" in prices and not nulls["adj_close"].loc[keep].all():
        missing_adj = nulls["adj_close"].loc[keep]
        if missing_adj.any():
            index = missing_adj.idxmax()
            raise MalformedDataError(
                f"{path} line {index}, column {mapping['adj_close']!r}: missing adjusted close "
                "while other rows have one",
                symbol=symbol,
            )
        frame["adj_close"] = prices["adj_close"].loc[keep]
    else:
        frame["adj_close"] = frame["close"]
    frame["volume"] = prices["volume"].loc[keep].fillna(0.0) if "volume" in prices else 0.0
    frame["symbol"] = symbol

    frame = frame.sort_values(["date", "line"], kind="mergesort")
    values = ["date", "open", "high", "low", "close", "adj_close", "volume"]
    exact_duplicates = frame.duplicated(values)
    frame = frame.loc[~exact_duplicates]
    conflicting = frame.duplicated("date", keep=False)
    if conflicting.any():
        day = frame.loc[conflicting, "date"].iloc[0]
        lines = frame.loc[frame["date"] == day, "line"].tolist()
        raise MalformedDataError(
            f"{path}: lines {lines} are different bars for the same day {day.date()}; keep one "
            "(this source expects one daily bar per day, not intraday bars)",
            symbol=symbol,
        )
    _check_ohlc(frame, path)
    report = CsvFileReport(
        symbol=symbol,
        path=path,
        rows=len(frame),
        null_rows_dropped=int(null_rows.sum()),
        duplicate_rows_dropped=int(exact_duplicates.sum()),
    )
    return frame.loc[:, list(BAR_COLUMNS)].reset_index(drop=True), report


def _decimal_tick(reference_price: float, significant_digits: int) -> float:
    exponent = math.floor(math.log10(reference_price)) - (significant_digits - 1)
    return 10.0**exponent


def infer_instrument(symbol: str, bars: pd.DataFrame) -> InstrumentMeta:
    """Best-guess metadata from the bars alone: calendar from which days trade, tick size from price level.

    A guess is all that is possible without a universe file; write one for exact tick and lot sizes.
    """
    days = pd.DatetimeIndex(bars["date"])
    if days.tz is not None:
        days = days.tz_localize(None)
    median_price = float(bars["close"].median())
    fx_match = _FX_SYMBOL.match(symbol.upper())
    upper = symbol.upper()
    if (days.dayofweek >= 5).any():
        asset_class, calendar = AssetClass.CRYPTO, CALENDAR_24X7
    else:
        sessions = trading_days("XNYS", days.min(), days.max()).tz_localize(None)
        holidays = pd.bdate_range(days.min(), days.max()).difference(sessions)
        on_holidays = days.isin(holidays).sum()
        if len(holidays) and on_holidays >= 0.5 * len(holidays):
            asset_class = AssetClass.FX if fx_match else AssetClass.INDEX
            calendar = CALENDAR_24X5
        else:
            asset_class = AssetClass.INDEX if upper.startswith("^") else AssetClass.EQUITY
            calendar = "XNYS"
    if asset_class is AssetClass.FX:
        tick = _decimal_tick(median_price, 6)
        pip_position = round(-math.log10(tick)) - 1
        lot_size, min_volume, step_volume = 100_000.0, 1_000.0, 1_000.0
        quote_currency = fx_match.group(2) if fx_match else "USD"
    else:
        tick = 0.01 if median_price >= 1 else _decimal_tick(median_price, 4)
        pip_position = round(-math.log10(tick))
        fractional = asset_class in (AssetClass.CRYPTO, AssetClass.INDEX)
        lot_size, min_volume, step_volume = (1.0, 0.01, 0.01) if fractional else (1.0, 1.0, 1.0)
        currency_suffix = re.search(r"[-/]([A-Z]{3})$", upper)
        quote_currency = currency_suffix.group(1) if currency_suffix else "USD"
    return InstrumentMeta(
        symbol=symbol,
        name=symbol,
        asset_class=asset_class,
        quote_currency=quote_currency,
        tick_size=tick,
        pip_position=pip_position,
        lot_size=lot_size,
        min_volume=min_volume,
        step_volume=step_volume,
        calendar=calendar,
    )


class CsvSource(MarketDataSource):
    """A folder of per-symbol CSV files; parsed files are cached until they change on disk."""

    name = "csv"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise MarketDataError(
                f"CSV folder {self.directory} does not exist or is not a folder; "
                "point EMP_CSV_DIR at a folder of <SYMBOL>.csv files"
            )
        self.last_report: dict[str, CsvFileReport] = {}
        self._cache: dict[Path, tuple[tuple[int, int], pd.DataFrame, CsvFileReport]] = {}

    def _files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in sorted(self.directory.iterdir()):
            symbol = symbol_from_path(path)
            if symbol is None or not path.is_file():
                continue
            if symbol in files:
                raise MalformedDataError(
                    f"{self.directory}: both {files[symbol].name} and {path.name} hold {symbol!r}; keep one",
                    symbol=symbol,
                )
            files[symbol] = path
        return files

    def available_symbols(self) -> tuple[str, ...]:
        return tuple(self._files())

    def _path_for(self, symbol: str, files: dict[str, Path]) -> Path:
        if symbol in files:
            return files[symbol]
        folded = [path for name, path in files.items() if name.lower() == symbol.lower()]
        if len(folded) == 1:
            return folded[0]
        listed = ", ".join(files) or "none"
        raise UnknownSymbolError(
            f"no CSV file for symbol {symbol!r} in {self.directory} (expected {symbol}.csv or "
            f"{symbol}.csv.gz; symbols present: {listed})",
            symbol=symbol,
        )

    def read_symbol(self, symbol: str) -> pd.DataFrame:
        """Every bar of one symbol's file (not range-filtered), in canonical columns."""
        path = self._path_for(symbol, self._files())
        stat = path.stat()
        signature = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != signature:
            frame, report = read_bar_file(path, symbol)
            if report.null_rows_dropped or report.duplicate_rows_dropped:
                logger.warning(
                    "%s: dropped %d all-null rows and %d exact duplicate rows",
                    path,
                    report.null_rows_dropped,
                    report.duplicate_rows_dropped,
                )
            cached = (signature, frame, report)
            self._cache[path] = cached
        _, frame, report = cached
        self.last_report[symbol] = report
        if frame.empty:
            raise NoDataError(f"{path} holds no bars for {symbol!r}", symbol=symbol)
        return frame.assign(symbol=symbol)

    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        self.last_report = {}
        return concat_bars([self.read_symbol(symbol) for symbol in symbols])

    def infer_universe(self, name: str) -> Universe:
        """A universe of every file in the folder, metadata guessed from the data (see infer_instrument)."""
        symbols = self.available_symbols()
        if not symbols:
            raise UnknownSymbolError(f"{self.directory} holds no <SYMBOL>.csv or <SYMBOL>.csv.gz files")
        instruments = []
        first_days: list[pd.Timestamp] = []
        last_days: list[pd.Timestamp] = []
        for symbol in symbols:
            bars = self.read_symbol(symbol)
            instruments.append(infer_instrument(symbol, bars))
            first_days.append(bars["date"].min())
            last_days.append(bars["date"].max())
        return Universe(
            name=name,
            instruments=tuple(instruments),
            start_date=min(first_days).date(),
            end_date=max(last_days).date(),
        )
