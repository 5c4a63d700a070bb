"""The canonical bar frame: the one shape every source returns and every consumer reads.

Long format, one row per (symbol, date): ``date`` is the bar's label, a timezone-aware UTC timestamp:
midnight of the bar's trading day for daily (and weekly) bars, the bar's open time for intraday bars (see
`domain/timeframes.py`). Prices are float64, ``adj_close`` is the split/dividend adjusted close (equal to
``close`` where a source has no adjustment). Rows are sorted by symbol then date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emp_pipeline.domain.timeframes import Timeframe

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "adj_close")
BAR_COLUMNS: tuple[str, ...] = ("date", "symbol", *PRICE_COLUMNS, "volume")


class BarValidationError(ValueError):
    """A bar frame breaks the canonical schema; the message names the symbol, date and column."""


def empty_bars() -> pd.DataFrame:
    """A zero-row frame with the canonical columns and dtypes (a partition with no trading day)."""
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in BAR_COLUMNS})
    frame["date"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["symbol"] = pd.Series(dtype="object")
    return frame[list(BAR_COLUMNS)]


def normalise_bars(frame: pd.DataFrame, timeframe: Timeframe = Timeframe.D1) -> pd.DataFrame:
    """Coerce a frame that already has the canonical columns into canonical dtypes, order and sorting.

    Daily and weekly dates become midnight UTC (a date with a time of day or another timezone is floored to
    its calendar day in that timezone first, so an exchange's local trading day is kept). Intraday dates
    are open times, kept to the instant: converted to UTC, a naive one read as UTC.
    """
    missing = [column for column in BAR_COLUMNS if column not in frame.columns]
    if missing:
        raise BarValidationError(f"bar frame is missing columns {missing}; expected {list(BAR_COLUMNS)}")
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    dates = pd.to_datetime(out["date"])
    if timeframe.is_intraday:
        dates = dates.dt.tz_localize("UTC") if dates.dt.tz is None else dates.dt.tz_convert("UTC")
        out["date"] = dates.astype("datetime64[ns, UTC]")
    else:
        if dates.dt.tz is not None:
            dates = dates.dt.tz_localize(None)
        out["date"] = dates.dt.normalize().dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    out["symbol"] = out["symbol"].astype(str)
    for column in (*PRICE_COLUMNS, "volume"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["volume"] = out["volume"].fillna(0.0)
    out = out.sort_values(["symbol", "date"], kind="mergesort").reset_index(drop=True)
    return out


def _first_offender(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    row = frame.loc[np.asarray(mask)].iloc[0]
    return f"symbol {row['symbol']!r} on {pd.Timestamp(row['date']).date()}"


def validate_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Raise BarValidationError unless the frame is canonical and internally consistent; return it unchanged.

    Checked: columns and dtypes, UTC dates, no missing prices, positive prices, low <= open/close <= high,
    non-negative volume, unique (symbol, date), sorted order.
    """
    missing = [column for column in BAR_COLUMNS if column not in frame.columns]
    if missing:
        raise BarValidationError(f"bar frame is missing columns {missing}")
    if str(frame["date"].dtype) != "datetime64[ns, UTC]":
        raise BarValidationError(f"column 'date' must be datetime64[ns, UTC], got {frame['date'].dtype}")
    if frame.empty:
        return frame
    for column in (*PRICE_COLUMNS, "volume"):
        if not pd.api.types.is_float_dtype(frame[column]):
            raise BarValidationError(f"column {column!r} must be float64, got {frame[column].dtype}")
        nan = frame[column].isna()
        if nan.any():
            raise BarValidationError(f"missing {column} for {_first_offender(frame, nan)}")
    for column in PRICE_COLUMNS:
        bad = frame[column] <= 0
        if bad.any():
            raise BarValidationError(f"non-positive {column} for {_first_offender(frame, bad)}")
    for column in ("open", "close"):
        bad = (frame["low"] > frame[column]) | (frame[column] > frame["high"])
        if bad.any():
            raise BarValidationError(f"{column} outside [low, high] for {_first_offender(frame, bad)}")
    bad = frame["volume"] < 0
    if bad.any():
        raise BarValidationError(f"negative volume for {_first_offender(frame, bad)}")
    duplicated = frame.duplicated(["symbol", "date"])
    if duplicated.any():
        raise BarValidationError(f"duplicate bar for {_first_offender(frame, duplicated)}")
    if not frame.sort_values(["symbol", "date"], kind="mergesort").index.equals(frame.index):
        raise BarValidationError("bar frame is not sorted by (symbol, date); call normalise_bars first")
    return frame


def adjusted_ohlc(frame: pd.DataFrame) -> pd.DataFrame:
    """Open, high, low and close on the adjusted scale (each scaled by adj_close / close).

    The backtest, the sensory cortex's ATR, the paper broker and the live marks all trade this one price
    scale, so a split or dividend inside the history cannot make them disagree. On the newest bar the
    factor is 1 for back-adjusted sources, so live orders still carry today's real prices. A ``spread``
    column (price units, `financing.bar_spreads`) is scaled with them.
    """
    factor = frame["adj_close"] / frame["close"]
    spread = {"spread": frame["spread"] * factor} if "spread" in frame.columns else {}
    return frame.assign(
        **spread,
        open=frame["open"] * factor,
        high=frame["high"] * factor,
        low=frame["low"] * factor,
        close=frame["adj_close"],
    )
