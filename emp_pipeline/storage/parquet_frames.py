"""Long, dated frames stored as Parquet: one file per calendar year, written atomically under a lock.

Both the Dagster IO manager and code outside Dagster (the live job, the parity replay) read through this
store, so every consumer sees the same bytes. Writing a window replaces the rows whose ``date`` falls in it:
re-materialising a partition never duplicates, and a range of partitions is one read-modify-write per year
touched instead of one file per day.

Three guarantees a trading lake needs, and how they are kept:

- **Stored rows never vanish because a writer supplied fewer.** A row is identified by its ``date`` (and
  ``symbol`` when the frame has one). A window write whose frame lacks a stored row of that window is
  refused with `HistoryLossError` (dataset, window, per-symbol stored vs supplied counts) and writes nothing;
  a short CSV or an empty answer from a vendor cannot erase history. Replacing history is an explicit act:
  ``replace_history=True``, which logs every symbol whose rows it removes.
- **Readers never see half a file.** Writers write a temporary file and ``os.replace`` it over the old one;
  readers read through ONE open handle, so a replace between opening and reading cannot mix the footer of
  one file with the bytes of another (``pd.read_parquet(path)`` opens the path twice and does).
- **A killed writer leaves nothing behind.** Its temporary file is an orphan by construction (only the lock
  holder writes one), so the next writer removes it under the lock.

Files get the mode an ordinary ``open`` gives (0666 minus the process umask), so another uid of the compose
stack can read them when the umask allows it; ``mkstemp`` used to make every file 0600.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DATE_COLUMN = "date"
SYMBOL_COLUMN = "symbol"
NEW_FILE_MODE = 0o666  # as open(2) is asked by Python's open(): the umask then takes its bits away
TEMPORARY_SUFFIX = ".tmp"
_AFTER_A_BAR = pd.Timedelta(microseconds=1)  # finer than any timeframe, and than the year arithmetic below

log = logging.getLogger(__name__)


class FrameStoreError(ValueError):
    """A frame cannot be stored as asked; the message says which rows or columns are wrong."""


@dataclass(frozen=True)
class RowShortfall:
    """Stored rows of one symbol (None for symbol-less datasets) that a new frame for the window lacks."""

    symbol: str | None
    stored: int
    supplied: int
    missing: int
    first_missing: pd.Timestamp
    last_missing: pd.Timestamp

    def describe(self) -> str:
        who = self.symbol if self.symbol is not None else "rows"
        span = str(self.first_missing.date())
        if self.last_missing != self.first_missing:
            span += f" .. {self.last_missing.date()}"
        return (
            f"{who}: {self.stored} stored, {self.supplied} supplied, {self.missing} stored rows missing "
            f"({span})"
        )


def describe_shortfalls(shortfalls: tuple[RowShortfall, ...]) -> str:
    return "; ".join(shortfall.describe() for shortfall in shortfalls)


def through(bar_time: pd.Timestamp | dt.datetime) -> pd.Timestamp:
    """The exclusive end of a window that holds ``bar_time`` and no later bar, on every timeframe (an
    H1 bar's window must not reach the next hour, as ``bar + 1 day`` did for daily bars)."""
    return pd.Timestamp(bar_time) + _AFTER_A_BAR


class HistoryLossError(FrameStoreError):
    """A window write would delete stored rows the new frame does not carry; nothing was written."""

    def __init__(
        self, dataset: str, start: pd.Timestamp, end: pd.Timestamp, shortfalls: tuple[RowShortfall, ...]
    ) -> None:
        self.dataset = dataset
        self.start = start
        self.end = end
        self.shortfalls = shortfalls
        super().__init__(
            f"{dataset}: the new frame for [{start.date()}, {end.date()}) lacks "
            f"{sum(s.missing for s in shortfalls)} stored rows ({describe_shortfalls(shortfalls)}); nothing "
            "was written. Stored history is never replaced by a shorter frame: fix the source, or replace "
            "the history explicitly (replace_history, see docs/operations.md)."
        )


def _as_utc(timestamp: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(timestamp)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def read_parquet_file(path: Path) -> pd.DataFrame:
    """The frame in ``path``, read through one open handle (see the module doc: no torn reads)."""
    with open(path, "rb") as handle:
        return pd.read_parquet(handle)


def _key_columns(frame: pd.DataFrame) -> list[str]:
    return [DATE_COLUMN, SYMBOL_COLUMN] if SYMBOL_COLUMN in frame.columns else [DATE_COLUMN]


def _row_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The identifying columns with one date unit and plain strings, so equal keys compare equal."""
    rows = pd.DataFrame(
        {DATE_COLUMN: pd.to_datetime(frame[DATE_COLUMN], utc=True).astype("datetime64[ns, UTC]")}
    )
    if SYMBOL_COLUMN in keys:
        rows[SYMBOL_COLUMN] = frame[SYMBOL_COLUMN].astype(str).to_numpy()
    return rows


def find_shortfalls(stored: pd.DataFrame, new: pd.DataFrame) -> tuple[RowShortfall, ...]:
    """Per symbol, the rows of ``stored`` whose (date[, symbol]) key ``new`` does not carry."""
    if stored.empty:
        return ()
    keys = _key_columns(stored)
    stored_keys = _row_keys(stored, keys)
    if all(key in new.columns for key in keys):
        supplied = _row_keys(new, keys).drop_duplicates()
        joined = stored_keys.merge(supplied, on=keys, how="left", indicator=True)
        missing = stored_keys.loc[(joined["_merge"] == "left_only").to_numpy()]
    else:
        missing = stored_keys
    if missing.empty:
        return ()
    if SYMBOL_COLUMN not in keys:
        dates = missing[DATE_COLUMN]
        return (RowShortfall(None, len(stored), len(new), len(missing), dates.min(), dates.max()),)
    stored_counts = stored_keys[SYMBOL_COLUMN].value_counts()
    supplied_counts = (
        new[SYMBOL_COLUMN].astype(str).value_counts() if SYMBOL_COLUMN in new.columns else pd.Series()
    )
    return tuple(
        RowShortfall(
            symbol=str(symbol),
            stored=int(stored_counts[symbol]),
            supplied=int(supplied_counts.get(symbol, 0)),
            missing=len(rows),
            first_missing=rows[DATE_COLUMN].min(),
            last_missing=rows[DATE_COLUMN].max(),
        )
        for symbol, rows in missing.groupby(SYMBOL_COLUMN, sort=True)
    )


class DatedFrameStore:
    """A dataset of rows keyed by a UTC ``date`` column (plus any other columns) under ``root/name``."""

    def __init__(self, root: Path | str, name: str) -> None:
        self.directory = Path(root) / name
        self.name = name

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._remove_orphans()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_orphans(self) -> None:
        """Delete temporary files of writers that died mid-write (only the lock holder writes one)."""
        for orphan in self.directory.glob(f".*{TEMPORARY_SUFFIX}"):
            orphan.unlink(missing_ok=True)
            log.warning("%s: removed %s, left by a writer that was interrupted", self.name, orphan.name)

    def _year_file(self, year: int) -> Path:
        return self.directory / f"{year}.parquet"

    def _years(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(path.stem) for path in self.directory.glob("*.parquet") if path.stem.isdigit())

    def _write_atomically(self, frame: pd.DataFrame, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                frame.to_parquet(handle, index=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._sync_directory()

    def _sync_directory(self) -> None:
        """Make the rename itself durable, so a power cut cannot bring back the replaced file."""
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _check_window(self, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        if DATE_COLUMN not in frame.columns:
            raise FrameStoreError(
                f"{self.name}: frame has no {DATE_COLUMN!r} column; columns are {list(frame.columns)}"
            )
        dates = pd.to_datetime(frame[DATE_COLUMN], utc=True)
        outside = (dates < start) | (dates >= end)
        if outside.any():
            first = dates[outside].iloc[0]
            raise FrameStoreError(
                f"{self.name}: {int(outside.sum())} rows fall outside the window [{start}, {end}), "
                f"first on {first}; an asset may only write its own partitions"
            )
        return dates

    def shortfalls(
        self, frame: pd.DataFrame, start: pd.Timestamp | str, end: pd.Timestamp | str
    ) -> tuple[RowShortfall, ...]:
        """What writing ``frame`` over [start, end) would delete: callers check (and say) this first."""
        start_utc, end_utc = _as_utc(start), _as_utc(end)
        dates = self._check_window(frame, start_utc, end_utc)
        return find_shortfalls(self.read_window(start_utc, end_utc), frame.assign(**{DATE_COLUMN: dates}))

    def write_window(
        self,
        frame: pd.DataFrame,
        start: pd.Timestamp | str,
        end: pd.Timestamp | str,
        *,
        replace_history: bool = False,
    ) -> int:
        """Store ``frame`` as the rows with start <= date < end; return the rows written.

        All rows of ``frame`` must lie inside the window: an asset that writes outside its partitions would
        silently overwrite another partition's data. Stored rows of the window that ``frame`` lacks make the
        write fail with `HistoryLossError` (nothing written) unless ``replace_history`` is set, in which
        case they are deleted and the deletion is logged.
        """
        start_utc, end_utc = _as_utc(start), _as_utc(end)
        dates = self._check_window(frame, start_utc, end_utc)
        frame = frame.assign(**{DATE_COLUMN: dates})
        with self._locked():
            merged_years: dict[int, pd.DataFrame] = {}
            stored_parts = []
            for year in range(start_utc.year, (end_utc - pd.Timedelta(microseconds=1)).year + 1):
                path = self._year_file(year)
                new_rows = frame.loc[dates.dt.year == year]
                if not path.exists():
                    if not new_rows.empty:
                        merged_years[year] = new_rows
                    continue
                stored = read_parquet_file(path)
                inside = (stored[DATE_COLUMN] >= start_utc) & (stored[DATE_COLUMN] < end_utc)
                stored_parts.append(stored.loc[inside])
                parts = [part for part in (stored.loc[~inside], new_rows) if not part.empty]
                merged_years[year] = pd.concat(parts, ignore_index=True) if parts else stored.loc[~inside]
            stored_window = pd.concat(stored_parts, ignore_index=True) if stored_parts else frame.iloc[0:0]
            shortfalls = find_shortfalls(stored_window, frame)
            if shortfalls and not replace_history:
                raise HistoryLossError(self.name, start_utc, end_utc, shortfalls)
            if shortfalls:
                log.warning(
                    "%s: replace_history removes %d stored rows of [%s, %s): %s",
                    self.name,
                    sum(s.missing for s in shortfalls),
                    start_utc.date(),
                    end_utc.date(),
                    describe_shortfalls(shortfalls),
                )
            for year, merged in merged_years.items():
                sort_keys = [DATE_COLUMN] + ([SYMBOL_COLUMN] if SYMBOL_COLUMN in merged.columns else [])
                merged = merged.sort_values(sort_keys, kind="mergesort").reset_index(drop=True)
                self._write_atomically(merged, self._year_file(year))
        return len(frame)

    def read_window(
        self, start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None
    ) -> pd.DataFrame:
        """Rows with start <= date < end (either bound optional), sorted by symbol then date if present."""
        start_utc = _as_utc(start) if start is not None else None
        end_utc = _as_utc(end) if end is not None else None
        years = self._years()
        if start_utc is not None:
            years = [year for year in years if year >= start_utc.year]
        if end_utc is not None:
            years = [year for year in years if year <= (end_utc - pd.Timedelta(microseconds=1)).year]
        parts = []
        for year in years:
            frame = read_parquet_file(self._year_file(year))
            mask = pd.Series(True, index=frame.index)
            if start_utc is not None:
                mask &= frame[DATE_COLUMN] >= start_utc
            if end_utc is not None:
                mask &= frame[DATE_COLUMN] < end_utc
            parts.append(frame.loc[mask])
        parts = [part for part in parts if not part.empty] or parts[:1]
        if not parts:
            return pd.DataFrame({DATE_COLUMN: pd.Series(dtype="datetime64[ns, UTC]")})
        frame = pd.concat(parts, ignore_index=True)
        sort_keys = ([SYMBOL_COLUMN] if SYMBOL_COLUMN in frame.columns else []) + [DATE_COLUMN]
        return frame.sort_values(sort_keys, kind="mergesort").reset_index(drop=True)

    def write_all(self, frame: pd.DataFrame) -> int:
        """Replace the whole dataset (for unpartitioned, derived assets): one file, written atomically.

        The new file lands before the year files go, so a reader finds either the old years or the new file.
        """
        with self._locked():
            self._write_atomically(frame, self.directory / "all.parquet")
            for year in self._years():
                self._year_file(year).unlink()
        return len(frame)

    def read_all(self) -> pd.DataFrame:
        path = self.directory / "all.parquet"
        if path.exists():
            return read_parquet_file(path)
        return self.read_window()
