"""Long, dated frames stored as Parquet: one file per calendar year, written atomically under a lock.

Both the Dagster IO manager and code outside Dagster (the live job, the parity replay) read through this
store, so every consumer sees the same bytes. Writing a window replaces exactly the rows whose ``date`` falls
in it: re-materialising a partition never duplicates, and a range of partitions is one read-modify-write per
year touched instead of one file per day.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

DATE_COLUMN = "date"


class FrameStoreError(ValueError):
    """A frame cannot be stored as asked; the message says which rows or columns are wrong."""


def _as_utc(timestamp: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(timestamp)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


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
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _year_file(self, year: int) -> Path:
        return self.directory / f"{year}.parquet"

    def _years(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(path.stem) for path in self.directory.glob("*.parquet") if path.stem.isdigit())

    def _write_atomically(self, frame: pd.DataFrame, path: Path) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            frame.to_parquet(temporary, index=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def write_window(self, frame: pd.DataFrame, start: pd.Timestamp | str, end: pd.Timestamp | str) -> int:
        """Replace every stored row with start <= date < end by ``frame``; return the rows written.

        All rows of ``frame`` must lie inside the window: an asset that writes outside its partitions would
        silently overwrite another partition's data.
        """
        start_utc, end_utc = _as_utc(start), _as_utc(end)
        if DATE_COLUMN not in frame.columns:
            raise FrameStoreError(
                f"{self.name}: frame has no {DATE_COLUMN!r} column; columns are {list(frame.columns)}"
            )
        dates = pd.to_datetime(frame[DATE_COLUMN], utc=True)
        outside = (dates < start_utc) | (dates >= end_utc)
        if outside.any():
            first = dates[outside].iloc[0]
            raise FrameStoreError(
                f"{self.name}: {int(outside.sum())} rows fall outside the window [{start_utc}, {end_utc}), "
                f"first on {first}; an asset may only write its own partitions"
            )
        frame = frame.assign(**{DATE_COLUMN: dates})
        with self._locked():
            for year in range(start_utc.year, (end_utc - pd.Timedelta(microseconds=1)).year + 1):
                path = self._year_file(year)
                new_rows = frame.loc[dates.dt.year == year]
                if path.exists():
                    stored = pd.read_parquet(path)
                    keep = (stored[DATE_COLUMN] < start_utc) | (stored[DATE_COLUMN] >= end_utc)
                    stored = stored.loc[keep]
                    parts = [part for part in (stored, new_rows) if not part.empty]
                    merged = pd.concat(parts, ignore_index=True) if parts else stored
                elif new_rows.empty:
                    continue
                else:
                    merged = new_rows
                sort_keys = [DATE_COLUMN] + (["symbol"] if "symbol" in merged.columns else [])
                merged = merged.sort_values(sort_keys, kind="mergesort").reset_index(drop=True)
                self._write_atomically(merged, path)
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
            frame = pd.read_parquet(self._year_file(year))
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
        sort_keys = (["symbol"] if "symbol" in frame.columns else []) + [DATE_COLUMN]
        return frame.sort_values(sort_keys, kind="mergesort").reset_index(drop=True)

    def write_all(self, frame: pd.DataFrame) -> int:
        """Replace the whole dataset (for unpartitioned assets): one file, written atomically."""
        with self._locked():
            for year in self._years():
                self._year_file(year).unlink()
            self._write_atomically(frame, self.directory / "all.parquet")
        return len(frame)

    def read_all(self) -> pd.DataFrame:
        path = self.directory / "all.parquet"
        if path.exists():
            return pd.read_parquet(path)
        return self.read_window()
