"""Bars from a folder of CSV files, one file per symbol (`<SYMBOL>.csv` or `<SYMBOL>.csv.gz`).

Files come from anywhere (Yahoo exports, `yf.download(...).to_csv()`, brokers, MetaTrader, Dukascopy, Stooq,
website downloads, hand edits), so reading is tolerant about layout and strict about content. docs/data.md
is the user's guide; in short:

Tolerated: column names in any case or common variant (Date/Datetime/Timestamp/Time, "Adj Close"/adj_close,
<CLOSE>, Close/Last, ...), a separate time-of-day column (MetaTrader's <DATE> <TIME>), yfinance's three-row
(Price, Ticker, Date) header, `,` `;` or tab delimiters, gzip-compressed files whatever their name (found by
their first bytes), the time layouts of `csv_times.py`, `$` prefixes, thousands separators and K/M/B
volumes, unsorted rows, Yahoo's all-`null` rows and exact duplicate rows (both dropped and counted in
`last_report`), a missing adjusted close (= close) or volume (= 0).

Bar labels: an intraday bar is labelled by its open time in UTC. A daily bar by its day: a date as written,
or, for a timestamp, the date that instant falls on in the universe's timezone (UTC unless it says
otherwise), so one instant always gives one bar whether written as an epoch or as 09:00+09:00.

Rejected, naming the file, line and column: unreadable numbers or times, ambiguous day/month order, epochs
mixing seconds and milliseconds, local times that repeat or do not exist at a DST change, ragged rows,
partly missing prices, conflicting duplicates of one bar, a timeframe other than the universe's (detected
from the spacing of the bars), a file mixing timeframes, intraday bars in the calendar's closed time or off
its bar grid, non-positive prices, negative volume, and bars whose open/close lie outside [low, high].

Each file is parsed once per process while it is unchanged (path, size and modification time), however many
sources read it: the universe step and the bars step of one run share the parse.
"""

from __future__ import annotations

import csv as stdlib_csv
import gzip
import io
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from emp_pipeline.data.csv_times import parse_times, repeated_time_hint
from emp_pipeline.data.source import (
    MalformedDataError,
    MarketDataError,
    MarketDataSource,
    NoDataError,
    UnknownSymbolError,
    concat_bars,
)
from emp_pipeline.domain.bars import BAR_COLUMNS
from emp_pipeline.domain.instruments import InstrumentTermsMissingError, Universe, universe_template
from emp_pipeline.domain.timeframes import (
    BarSpacingError,
    Timeframe,
    describe_duration,
    detect_timeframe,
    off_bar_grid,
    outside_trading_time,
)

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv.gz", ".csv")
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
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
    "clock": ("time", "timeofday", "clock"),  # a time of day beside a date column (MetaTrader <DATE> <TIME>)
}
REQUIRED_COLUMNS = ("date", "open", "high", "low", "close")
# A column naming the instrument: one value is fine (ignored), several mean a multi-symbol file.
SYMBOL_COLUMN_KEYS = ("symbol", "ticker", "name", "code", "instrument")
# Headers pandas writes for an unnamed index (`df.to_csv()` of a frame indexed by date).
UNNAMED_INDEX_KEYS = ("", "unnamed0", "index")

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_MAGNITUDE = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*([KkMmBb])$")
_MAGNITUDES = {"k": 1e3, "m": 1e6, "b": 1e9}
_REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CsvFileReport:
    """What reading one file found and dropped, so the pipeline can surface it as metadata.

    `timeframe` is read from the spacing of the bars (None for a file of one bar); `closest_lines` are the
    two lines closest in time and `closest_spacing` how far apart they are, the evidence for it.
    """

    symbol: str
    path: Path
    rows: int
    null_rows_dropped: int
    duplicate_rows_dropped: int
    timeframe: Timeframe | None
    closest_lines: tuple[int, int] | None
    closest_spacing: timedelta | None


@dataclass(frozen=True)
class ParsedBarFile:
    """A file's bars in canonical columns plus each bar's `line` in the file, sorted by date."""

    bars: pd.DataFrame
    report: CsvFileReport


def symbol_from_path(path: Path) -> str | None:
    """'EURUSD=X.csv' -> 'EURUSD=X', '^GSPC.csv.gz' -> '^GSPC'; None for a file that is not a CSV."""
    lower = path.name.lower()
    for suffix in CSV_SUFFIXES:
        if lower.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when its first bytes say gzip (whatever its name says)."""
    data = path.read_bytes()
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise MalformedDataError(f"{path}: gzip-compressed but unreadable: {error}") from error
    elif data.startswith(ZIP_MAGIC):
        raise MalformedDataError(f"{path}: this is a zip archive, not CSV text; unzip it first")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MalformedDataError(
            f"{path} line {line}: byte {data[error.start : error.start + 1]!r} at offset {error.start} is "
            "not UTF-8 text; save the file as UTF-8 CSV"
        ) from error


def _sniff_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t")}
    return max(counts, key=lambda delimiter: counts[delimiter]) if any(counts.values()) else ","


def _check_field_counts(text: str, delimiter: str, path: Path) -> None:
    """pandas pads a short row with empty strings, which would read as a missing volume; reject it.

    Without quotes a row's fields are its delimiters plus one, counted in compiled code; quoted fields may
    hold the delimiter, so then the csv module reads every row.
    """
    if '"' not in text:
        lines = pa.array(text.split("\n"))
        fields = pc.count_substring(lines, delimiter).to_numpy() + 1
        blank = pc.match_substring_regex(lines, rf"^[\s{re.escape(delimiter)}]*$").to_numpy(
            zero_copy_only=False
        )
        ragged = (fields != fields[0]) & ~blank
        if ragged.any():
            line = int(np.argmax(ragged))
            raise MalformedDataError(
                f"{path} line {line + 1}: {fields[line]} fields where the header has {fields[0]}"
            )
        return
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
    if mapping.get("clock") == mapping.get("date"):
        mapping.pop("clock", None)
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
    try:
        values = pc.cast(pa.array(raw.to_numpy(dtype=object), type=pa.string()), pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = None
    if values is not None and np.isfinite(values).all():  # plain numbers only: no parsing by hand needed
        return pd.Series(values, index=raw.index), pd.Series(False, index=raw.index)
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
    text = _read_text(path)
    try:
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
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
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


def _lines(bars: pd.DataFrame, positions: tuple[int, ...]) -> list[int]:
    return [int(bars["line"].iloc[position]) for position in positions]


def _label(instants: pd.Series, date_only: bool, timeframe: Timeframe | None, timezone: str) -> pd.Series:
    """The bar label of each row: the open time for intraday bars, else midnight UTC of its day (or week)."""
    if timeframe is not None and timeframe.is_intraday:
        return instants
    days = instants if date_only else instants.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    days = days.dt.tz_localize(None) if days.dt.tz is not None else days
    if timeframe is Timeframe.W1:
        days = days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    return days.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


def _refuse_conflicting_duplicates(frame: pd.DataFrame, path: Path, symbol: str, intraday: bool) -> None:
    conflicting = frame.duplicated("date", keep=False)
    if not conflicting.any():
        return
    label = frame.loc[conflicting, "date"].iloc[0]
    lines = frame.loc[frame["date"] == label, "line"].tolist()
    if intraday:
        raise MalformedDataError(
            f"{path}: lines {lines} are different bars opening at {label:%Y-%m-%d %H:%M} UTC; keep one"
            + repeated_time_hint(label),
            symbol=symbol,
        )
    raise MalformedDataError(
        f"{path}: lines {lines} are different bars for the same day {label.date()}; keep one "
        "(a daily file holds one bar per day; intraday bars need an intraday timeframe in the universe)",
        symbol=symbol,
    )


def read_bar_file(path: Path, symbol: str, timezone: str = "UTC") -> ParsedBarFile:
    """One CSV file as canonical bars (sorted, de-duplicated, checked), labelled for the timeframe its bar
    spacing shows, plus what was dropped. Naive times are read in `timezone`."""
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
    clock = raw.loc[keep, mapping["clock"]] if "clock" in mapping else None
    times = parse_times(raw.loc[keep, mapping["date"]], mapping["date"], path, timezone, clock)
    frame = pd.DataFrame({"line": raw.index.to_series()}).loc[keep]
    frame["instant"] = times.instants
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

    frame = frame.sort_values(["instant", "line"], kind="mergesort")
    values = ["instant", "open", "high", "low", "close", "adj_close", "volume"]
    exact_duplicates = frame.duplicated(values)
    frame = frame.loc[~exact_duplicates].reset_index(drop=True)
    frame["date"] = frame["instant"]
    _refuse_conflicting_duplicates(frame, path, symbol, intraday=not times.date_only)
    instants = pd.DatetimeIndex(frame["instant"])
    try:
        timeframe = detect_timeframe(instants)
    except BarSpacingError as error:
        lines = _lines(frame, error.positions)
        raise MalformedDataError(f"{path} lines {lines}: {error}", symbol=symbol) from None
    frame["date"] = _label(frame["instant"], times.date_only, timeframe, timezone)
    if timeframe is not None and not timeframe.is_intraday:
        _refuse_conflicting_duplicates(frame, path, symbol, intraday=False)
    _check_ohlc(frame, path)
    steps = np.diff(instants.as_unit("ns").asi8)
    closest = int(np.argmin(steps)) if len(steps) else None
    report = CsvFileReport(
        symbol=symbol,
        path=path,
        rows=len(frame),
        null_rows_dropped=int(null_rows.sum()),
        duplicate_rows_dropped=int(exact_duplicates.sum()),
        timeframe=timeframe,
        closest_lines=None if closest is None else tuple(_lines(frame, (closest, closest + 1))),
        closest_spacing=None if closest is None else pd.Timedelta(int(steps[closest])).to_pytimedelta(),
    )
    if report.null_rows_dropped or report.duplicate_rows_dropped:
        logger.warning(
            "%s: dropped %d all-null rows and %d exact duplicate rows",
            path,
            report.null_rows_dropped,
            report.duplicate_rows_dropped,
        )
    return ParsedBarFile(frame.loc[:, ["line", *BAR_COLUMNS]], report)


class _ParsedFiles:
    """Parsed files kept per process, keyed by path, size, modification time and the timezone they were
    read in, so one unchanged file is parsed once however many sources (and steps) read it.

    Bounded by the rows held: the least recently used files are dropped first.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[tuple, ParsedBarFile] = OrderedDict()
        self._lock = threading.Lock()

    def _rows(self) -> int:
        return sum(entry.report.rows for entry in self._entries.values())

    def get(self, path: Path, symbol: str, timezone: str) -> ParsedBarFile:
        stat = path.stat()
        key = (path.resolve(), stat.st_size, stat.st_mtime_ns, timezone)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        parsed = read_bar_file(path, symbol, timezone)
        with self._lock:
            for stale in [other for other in self._entries if other[0] == key[0]]:
                del self._entries[stale]
            self._entries[key] = parsed
            while len(self._entries) > 1 and self._rows() > self.max_rows:
                self._entries.popitem(last=False)
        return parsed


PARSED_FILES = _ParsedFiles(max_rows=20_000_000)


class CsvSource(MarketDataSource):
    """A folder of per-symbol CSV files holding bars of one timeframe.

    `timezone` is how naive times in the files are read; `calendars` (symbol -> trading calendar) lets the
    source refuse intraday bars in closed time or off the bar grid. `for_universe` takes all three from a
    universe.
    """

    name = "csv"

    def __init__(
        self,
        directory: str | Path,
        *,
        timeframe: Timeframe = Timeframe.D1,
        timezone: str = "UTC",
        calendars: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise MarketDataError(
                f"CSV folder {self.directory} does not exist or is not a folder; "
                "point EMP_CSV_DIR at a folder of <SYMBOL>.csv files"
            )
        self.timeframe = timeframe
        self.timezone = timezone
        self.calendars = dict(calendars or {})
        self.last_report: dict[str, CsvFileReport] = {}

    @classmethod
    def for_universe(cls, directory: str | Path, universe: Universe) -> CsvSource:
        return cls(
            directory,
            timeframe=universe.timeframe,
            timezone=universe.timezone,
            calendars=universe.calendars,
        )

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

    def _parsed(self, symbol: str) -> ParsedBarFile:
        path = self._path_for(symbol, self._files())
        parsed = PARSED_FILES.get(path, symbol, self.timezone)
        self.last_report[symbol] = parsed.report
        if parsed.bars.empty:
            raise NoDataError(f"{path} holds no bars for {symbol!r}", symbol=symbol)
        return parsed

    def _check_timeframe(self, parsed: ParsedBarFile) -> None:
        report = parsed.report
        if report.timeframe is None or report.timeframe is self.timeframe:
            return
        evidence = (
            f"lines {report.closest_lines[0]} and {report.closest_lines[1]} are "
            f"{describe_duration(report.closest_spacing)} apart"
            if report.closest_lines
            else "its bar spacing"
        )
        raise MalformedDataError(
            f"{report.path} holds {report.timeframe} bars ({evidence}) but the universe declares "
            f"{self.timeframe}; set `timeframe: {report.timeframe}` in the universe file or use a "
            f"{self.timeframe} file",
            symbol=report.symbol,
        )

    def _check_calendar(self, parsed: ParsedBarFile) -> None:
        calendar = self.calendars.get(parsed.report.symbol)
        if calendar is None or not self.timeframe.is_intraday:
            return
        labels = pd.DatetimeIndex(parsed.bars["date"])
        for mask, reason in (
            (
                outside_trading_time(calendar, self.timeframe, labels),
                f"lies in closed time of calendar {calendar!r}; if the file is in local time, declare "
                "its zone as `timezone:` in the universe file",
            ),
            (
                off_bar_grid(calendar, self.timeframe, labels),
                f"is off the {self.timeframe} grid (bars open at whole multiples of "
                f"{describe_duration(self.timeframe.duration)} since midnight UTC)",
            ),
        ):
            if mask.any():
                row = parsed.bars.loc[mask].iloc[0]
                raise MalformedDataError(
                    f"{parsed.report.path} line {int(row['line'])}: the bar opening "
                    f"{row['date']:%a %Y-%m-%d %H:%M} UTC {reason}",
                    symbol=parsed.report.symbol,
                )

    def read_symbol(self, symbol: str) -> pd.DataFrame:
        """Every bar of one symbol's file (not range-filtered), in canonical columns, checked against
        this source's timeframe and the symbol's calendar."""
        parsed = self._parsed(symbol)
        self._check_timeframe(parsed)
        self._check_calendar(parsed)
        return parsed.bars.loc[:, list(BAR_COLUMNS)].assign(symbol=symbol)

    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        self.last_report = {}
        return concat_bars([self.read_symbol(symbol) for symbol in symbols])

    def terms_missing(self, name: str) -> InstrumentTermsMissingError:
        """The error that stops a run on this folder without a universe file, with the file to write.

        Only what the files honestly say goes into it (symbols, their timeframe and date range): asset
        class, tick size, lot size and the rest are left for a person, never guessed from prices.
        """
        symbols = self.available_symbols()
        if not symbols:
            raise UnknownSymbolError(f"{self.directory} holds no <SYMBOL>.csv or <SYMBOL>.csv.gz files")
        parsed = {symbol: self._parsed(symbol) for symbol in symbols}
        timeframes = {p.report.timeframe for p in parsed.values() if p.report.timeframe is not None}
        if len(timeframes) > 1:
            listed = ", ".join(f"{symbol}: {p.report.timeframe}" for symbol, p in parsed.items())
            raise MalformedDataError(
                f"{self.directory} mixes timeframes ({listed}); a universe has one: split the folder"
            )
        timeframe = timeframes.pop() if timeframes else Timeframe.D1
        first = min(p.bars["date"].min() for p in parsed.values()).date()
        last = max(p.bars["date"].max() for p in parsed.values()).date()
        template = universe_template(name, symbols, timeframe, first, last)
        return InstrumentTermsMissingError(
            f"no instrument terms for {', '.join(symbols)}: the bars in {self.directory} cannot say an "
            "instrument's asset class, tick size, lot size, volumes or calendar, and guessing them would "
            "mis-size every order. Write this universe file, fill in every null, and point "
            f"EMP_UNIVERSE_FILE at it:\n\n{template}",
            symbols,
        )
