"""An instrument's spread and overnight financing as the compiled step reads them, on a grid of bars.

Bars are **bid** prices (cTrader's trendbars are; the bundled FX sample is treated so). A buy pays the ask,
``bid + spread``, a sell receives the bid: the step adds the bar's spread to the price of every buy leg
(a long's entry, a short's exit at the open, a short's stop or take profit, which trigger on the ask).

How the spread is known:

* research, the paper broker and the live fold: a ``spread`` column of the bar frame (price units) when the
  data has one, otherwise the instrument's typical spread, `InstrumentMeta.spread_pips` (universe file or
  venue terms), on every bar. Zero charges nothing, so equities and daily ETF data are unchanged.
* the cTrader broker: the venue's own fills (its prices already are the ask for a buy).

Overnight financing: a position held across a rollover of the instrument's calendar
(`calendars.rollover_times`: 17:00 New York for FX, daylight saving included) is credited the instrument's
swap (negative: charged), three times on the rollover that falls on `swap_triple_weekday` (its New York
weekday). On a grid of bar open times, the rollovers in ``(previous priced open, this open]`` are booked at
this bar's start on the position held since the previous bar, before this open's fills: a position opened
16:59 and closed 17:01 New York pays one night, one opened at the 17:00 open itself pays none, one closed at
that open pays it. A rollover inside a bar that a stop closed (H4 bars) is not booked: the stop's time within
the bar is unknown.

Swap units (`SwapType`): ``pips`` are pips per lot per night, so per unit ``swap x pip size``; ``percent``
is a yearly rate on the position's value at the previous close, per night ``swap / 100 / 360`` (the money
market's 360-day year, as the bundled sample's terms are computed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emp_pipeline.domain.calendars import NEW_YORK, rollover_times
from emp_pipeline.domain.instruments import InstrumentMeta, SwapType
from emp_pipeline.domain.sleeve import SwapTerms

DAYS_PER_YEAR_FOR_SWAPS = 360.0
NO_SWAP = SwapTerms(0.0, 0.0, 0.0, 0.0)


class FinancingInputError(ValueError):
    """A spread column or a bar grid the financing terms cannot be put on; the message says which."""


def swap_terms(meta: InstrumentMeta | None) -> SwapTerms:
    """The instrument's swaps per unit and night as the step reads them (none without terms)."""
    if meta is None or (meta.swap_long == 0.0 and meta.swap_short == 0.0):
        return NO_SWAP
    if meta.swap_type is SwapType.PIPS:
        return SwapTerms(meta.swap_long * meta.pip_size, meta.swap_short * meta.pip_size, 0.0, 0.0)
    per_night = 1.0 / 100.0 / DAYS_PER_YEAR_FOR_SWAPS
    return SwapTerms(0.0, 0.0, meta.swap_long * per_night, meta.swap_short * per_night)


def swap_nights(meta: InstrumentMeta | None, opens: pd.DatetimeIndex) -> np.ndarray:
    """Nights to finance at the start of each bar opening at ``opens`` (sorted UTC open times).

    Entry k counts the rollovers in ``(opens[k-1], opens[k]]``, the triple weekday's three times; the first
    bar counts none. All zero when the instrument has no swaps, so unfinanced data does no calendar work.
    """
    nights = np.zeros(len(opens), dtype=np.float64)
    if len(opens) < 2 or swap_terms(meta) == NO_SWAP:
        return nights
    assert meta is not None
    times = _utc(opens)
    if not times.is_monotonic_increasing:
        raise FinancingInputError("bar open times must be increasing to count the rollovers between them")
    rollovers, weight = rollover_nights(meta, times[0], times[-1])
    cumulative = np.concatenate(([0.0], np.cumsum(weight)))
    # rollovers r <= open_k, counted over (opens[0], opens[k]]
    through = cumulative[
        np.searchsorted(rollovers.as_unit("ns").asi8, times.as_unit("ns").asi8, side="right")
    ]
    nights[1:] = np.diff(through)
    return nights


def rollover_nights(
    meta: InstrumentMeta, after: pd.Timestamp, through: pd.Timestamp
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The instrument's rollovers in ``(after, through]`` (UTC) and the nights each finances: three on the
    rollover that falls on `swap_triple_weekday` (its New York weekday), one on the others.

    `swap_nights` sums them per bar; the paper account books them one by one (`broker.paper_financing`).
    """
    rollovers = rollover_times(meta.calendar, after + pd.Timedelta(1, "ns"), through + pd.Timedelta(1, "ns"))
    triple = rollovers.tz_convert(NEW_YORK).day_of_week == int(meta.swap_triple_weekday)
    return rollovers, np.where(triple, 3.0, 1.0)


def bar_spreads(bars: pd.DataFrame, instruments: Mapping[str, InstrumentMeta]) -> pd.Series:
    """Each bar's spread in price units: its ``spread`` column where given, else its instrument's typical one.

    One answer for the kernel's grid (`backtest.market_arrays`) and the paper broker's bars.
    """
    typical = {s: meta.spread_pips * meta.pip_size for s, meta in instruments.items()}
    fallback = bars["symbol"].map(typical).astype("float64").fillna(0.0)
    if "spread" not in bars.columns:
        return fallback.rename("spread")
    given = bars["spread"].astype("float64")
    negative = given < 0
    if negative.any():
        row = bars.loc[negative].iloc[0]
        raise FinancingInputError(
            f"bar {row['date']} of {row['symbol']} has spread {float(row['spread'])!r}: a spread is "
            "ask - bid in price units and cannot be negative"
        )
    return given.where(np.isfinite(given), fallback).rename("spread")


def nights_grid(
    opens: np.ndarray,
    dates: pd.DatetimeIndex,
    symbols: Sequence[str],
    instruments: Mapping[str, InstrumentMeta],
) -> np.ndarray:
    """`swap_nights` per symbol over its own priced bars (a bar without an open carries its nights on)."""
    nights = np.zeros((len(dates), len(symbols)), dtype=np.float64)
    for i, symbol in enumerate(symbols):
        priced = np.flatnonzero(np.isfinite(opens[:, i]))
        nights[priced, i] = swap_nights(instruments.get(symbol), dates[priced])
    return nights


def _utc(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
