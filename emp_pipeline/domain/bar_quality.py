"""Data-quality checks on canonical bar frames, as plain results the Dagster checks report.

Each check returns a `BarCheckOutcome` with the offending rows counted and the first few listed, so a failure
in the UI says exactly which symbol and day to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from emp_pipeline.domain.bars import PRICE_COLUMNS
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import InstrumentMeta

EXAMPLES_SHOWN = 5


@dataclass(frozen=True)
class BarCheckOutcome:
    name: str
    passed: bool
    description: str
    failures: int = 0
    examples: tuple[str, ...] = field(default_factory=tuple)


def _examples(frame: pd.DataFrame, mask: pd.Series) -> tuple[str, ...]:
    rows = frame.loc[mask, ["symbol", "date"]].head(EXAMPLES_SHOWN)
    return tuple(f"{row.symbol} {pd.Timestamp(row.date).date()}" for row in rows.itertuples())


def _from_mask(name: str, frame: pd.DataFrame, mask: pd.Series, what: str) -> BarCheckOutcome:
    failures = int(mask.sum())
    description = f"{failures} bars with {what}" if failures else f"no bars with {what}"
    return BarCheckOutcome(name, failures == 0, description, failures, _examples(frame, mask))


def check_ohlc_consistency(bars: pd.DataFrame) -> BarCheckOutcome:
    """low <= open, close <= high, and low <= high."""
    broken = (
        (bars["low"] > bars["open"])
        | (bars["low"] > bars["close"])
        | (bars["open"] > bars["high"])
        | (bars["close"] > bars["high"])
        | (bars["low"] > bars["high"])
    )
    return _from_mask("ohlc_consistent", bars, broken, "open/close outside [low, high]")


def check_positive_prices(bars: pd.DataFrame) -> BarCheckOutcome:
    broken = (bars[list(PRICE_COLUMNS)] <= 0).any(axis=1) | bars[list(PRICE_COLUMNS)].isna().any(axis=1)
    return _from_mask("positive_prices", bars, broken, "a missing or non-positive price")


def check_unique_bars(bars: pd.DataFrame) -> BarCheckOutcome:
    duplicated = bars.duplicated(["symbol", "date"], keep=False)
    return _from_mask("unique_symbol_date", bars, duplicated, "a duplicate (symbol, date)")


def find_calendar_gaps(
    bars: pd.DataFrame, instruments: Sequence[InstrumentMeta], start: date, end: date
) -> dict[str, list[date]]:
    """Trading days of each instrument's calendar in [start, end] that have no bar."""
    gaps: dict[str, list[date]] = {}
    for instrument in instruments:
        expected = trading_days(instrument.calendar, start, end)
        have = pd.DatetimeIndex(bars.loc[bars["symbol"] == instrument.symbol, "date"])
        missing = expected.difference(have)
        if len(missing):
            gaps[instrument.symbol] = [stamp.date() for stamp in missing]
    return gaps


def check_calendar_gaps(
    bars: pd.DataFrame, instruments: Sequence[InstrumentMeta], start: date, end: date
) -> BarCheckOutcome:
    gaps = find_calendar_gaps(bars, instruments, start, end)
    failures = sum(len(days) for days in gaps.values())
    examples = tuple(f"{symbol} {day}" for symbol, days in gaps.items() for day in days[:EXAMPLES_SHOWN])
    description = (
        f"{failures} expected trading days without a bar ({', '.join(sorted(gaps))})"
        if failures
        else "every expected trading day has a bar"
    )
    return BarCheckOutcome(
        "no_calendar_gaps", failures == 0, description, failures, examples[:EXAMPLES_SHOWN]
    )


def check_freshness(
    latest_by_symbol: dict[str, date | None],
    instruments: Sequence[InstrumentMeta],
    as_of: date,
    max_missing_sessions: int,
) -> BarCheckOutcome:
    """Each symbol's newest bar is at most ``max_missing_sessions`` trading sessions behind ``as_of``."""
    stale: list[str] = []
    for instrument in instruments:
        latest = latest_by_symbol.get(instrument.symbol)
        if latest is None:
            stale.append(f"{instrument.symbol} has no bars")
            continue
        sessions = trading_days(instrument.calendar, latest, as_of)
        behind = int((sessions > pd.Timestamp(latest, tz="UTC")).sum())
        if behind > max_missing_sessions:
            stale.append(f"{instrument.symbol} last bar {latest}, {behind} sessions behind {as_of}")
    description = "; ".join(stale) if stale else f"every symbol is current as of {as_of}"
    return BarCheckOutcome("fresh", not stale, description, len(stale), tuple(stale[:EXAMPLES_SHOWN]))


BLOCKING_CHECKS: tuple[Callable[[pd.DataFrame], BarCheckOutcome], ...] = (
    check_ohlc_consistency,
    check_positive_prices,
    check_unique_bars,
)
