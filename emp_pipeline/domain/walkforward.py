"""Walk-forward fold arithmetic: test periods, and the training window strictly before each of them.

A *period* is a calendar month (or quarter, or year) named by a key (``2018-01``, ``2018Q1``, ``2018``),
the unit of the ``evolved_strategies`` partitions. Its fold trains on trading bars that end ``embargo_bars``
bars before the period's first bar, so no training bar sits next to a test bar (labels built from a few bars
ahead, overlapping indicators, ... cannot leak across), and tests on the bars inside the period. Everything
here is date arithmetic on a sorted index of trading days, so truncating that index after a period changes
nothing about the folds before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FREQUENCIES: dict[str, str] = {"monthly": "MS", "quarterly": "QS", "yearly": "YS"}


class WalkForwardError(ValueError):
    """A fold or period cannot be built as asked; the message says which input to change."""


@dataclass(frozen=True)
class WalkForwardFold:
    """Train on ``train_start <= date < train_end``, test on ``test_start <= date < test_end``."""

    period_key: str
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    n_train_bars: int
    n_test_bars: int
    embargo_bars: int


def _check_frequency(frequency: str) -> str:
    if frequency not in FREQUENCIES:
        raise WalkForwardError(f"unknown period frequency {frequency!r}; use one of {sorted(FREQUENCIES)}")
    return FREQUENCIES[frequency]


def _utc_midnight(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.normalize()


def period_key(day: pd.Timestamp | str, frequency: str = "monthly") -> str:
    """The key of the period containing ``day``."""
    _check_frequency(frequency)
    stamp = _utc_midnight(day)
    if frequency == "monthly":
        return f"{stamp.year:04d}-{stamp.month:02d}"
    if frequency == "quarterly":
        return f"{stamp.year:04d}Q{(stamp.month - 1) // 3 + 1}"
    return f"{stamp.year:04d}"


def period_bounds(key: str, frequency: str = "monthly") -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first day, first day of the next period) of a period key, both UTC midnight."""
    offset = _check_frequency(frequency)
    try:
        if frequency == "monthly":
            year, month = key.split("-")
            start = pd.Timestamp(year=int(year), month=int(month), day=1, tz="UTC")
        elif frequency == "quarterly":
            year, quarter = key.split("Q")
            if not 1 <= int(quarter) <= 4:
                raise ValueError(quarter)
            start = pd.Timestamp(year=int(year), month=3 * int(quarter) - 2, day=1, tz="UTC")
        else:
            start = pd.Timestamp(year=int(key), month=1, day=1, tz="UTC")
    except ValueError as error:
        examples = {"monthly": "2018-01", "quarterly": "2018Q1", "yearly": "2018"}
        raise WalkForwardError(
            f"period key {key!r} is not a {frequency} key like {examples[frequency]!r}"
        ) from error
    if period_key(start, frequency) != key:
        raise WalkForwardError(
            f"period key {key!r} is not canonical; expected {period_key(start, frequency)!r}"
        )
    return start, start + pd.tseries.frequencies.to_offset(offset)


def period_keys(start: pd.Timestamp | str, end: pd.Timestamp | str, frequency: str = "monthly") -> list[str]:
    """Keys of every period that overlaps ``start <= day < end``, in order."""
    offset = _check_frequency(frequency)
    first, last = _utc_midnight(start), _utc_midnight(end)
    if last <= first:
        return []
    first_start, _ = period_bounds(period_key(first, frequency), frequency)
    starts = pd.date_range(first_start, last - pd.Timedelta(days=1), freq=offset)
    return [period_key(day, frequency) for day in starts]


def _check_window(train_bars: int | None, embargo_bars: int, min_train_bars: int) -> None:
    if embargo_bars < 0:
        raise WalkForwardError(f"embargo_bars must be >= 0, got {embargo_bars}")
    if train_bars is not None and train_bars < 1:
        raise WalkForwardError(f"train_bars must be >= 1 or None, got {train_bars}")
    if min_train_bars < 1:
        raise WalkForwardError(f"min_train_bars must be >= 1, got {min_train_bars}")


def _trading_index(trading_dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    dates = pd.DatetimeIndex(trading_dates)
    if not dates.is_monotonic_increasing or not dates.is_unique:
        raise WalkForwardError("trading_dates must be sorted and unique")
    return dates


def build_fold(
    trading_dates: pd.DatetimeIndex,
    key: str,
    frequency: str = "monthly",
    train_bars: int | None = 756,
    embargo_bars: int = 5,
    min_train_bars: int = 252,
) -> WalkForwardFold:
    """The fold of one period over a sorted, unique index of trading days (UTC midnight).

    ``train_bars=None`` trains on everything before the embargo (an expanding window).
    """
    _check_window(train_bars, embargo_bars, min_train_bars)
    dates = _trading_index(trading_dates)
    test_start, test_end = period_bounds(key, frequency)
    first_test = int(dates.searchsorted(test_start, side="left"))
    end_test = int(dates.searchsorted(test_end, side="left"))
    train_stop = first_test - embargo_bars
    train_first = 0 if train_bars is None else max(0, train_stop - train_bars)
    n_train = max(0, train_stop - train_first)
    if n_train < min_train_bars:
        raise WalkForwardError(
            f"period {key}: only {n_train} training bars before the embargo, need {min_train_bars}; "
            "start later or lower min_train_bars"
        )
    return WalkForwardFold(
        period_key=key,
        train_start=dates[train_first],
        # Exclusive end: the first embargoed bar (or the period start when there is no embargo).
        train_end=dates[train_stop] if embargo_bars > 0 else test_start,
        test_start=test_start,
        test_end=test_end,
        n_train_bars=n_train,
        n_test_bars=end_test - first_test,
        embargo_bars=embargo_bars,
    )


def inner_fold_bounds(n_bars: int, folds: int, embargo_bars: int) -> list[tuple[int, int]]:
    """[start, stop) bar indices of ``folds`` contiguous inner folds of a training window of ``n_bars``.

    ``embargo_bars`` bars before every fold but the first belong to no fold, so the last bars of one fold
    and the first of the next are never scored side by side; each fold is backtested on its own (a position
    never straddles two folds), which purges trades that would span a boundary.
    """
    if folds < 1 or embargo_bars < 0:
        raise WalkForwardError(
            f"inner folds need folds >= 1 and embargo_bars >= 0; got {folds}, {embargo_bars}"
        )
    usable = n_bars - (folds - 1) * embargo_bars
    if usable < 2 * folds:
        raise WalkForwardError(
            f"{n_bars} training bars cannot hold {folds} inner folds of at least 2 bars with "
            f"{embargo_bars}-bar embargoes; use fewer folds or a longer window"
        )
    edges = np.linspace(0, usable, folds + 1).round().astype(int)
    return [(int(edges[k]) + k * embargo_bars, int(edges[k + 1]) + k * embargo_bars) for k in range(folds)]
