"""Overnight swaps of the paper account, booked as the backtest kernel charges its sleeves.

The kernel finances, at the start of each bar, the position held since the previous bar for the rollovers
in ``(previous open, this open]`` (`financing.swap_nights`, `sleeve.overnight_swap`). The paper account does
the same one rollover at a time: a rollover is owed once the symbol's latest bar opens at or after it, on
the net position held just before it (the fills before the rollover's time: an order filled at a 17:00 open
pays no night, a position closed at it pays one; a stop inside the previous bar is already out), with the
instrument's swap terms and its triple weekday (`financing.rollover_nights`, `financing.swap_terms`). Each
rollover goes to the registry's ledger (`registry.financing`) keyed by (account, symbol, rollover time),
which moves the account's cash in the catch-up's transaction, so the live job's equity and risk checks see
it and a retried or concurrent catch-up books it once.

Percent swaps are a share of the close before the rollover's bar, the kernel's ``last_close`` (the price
source's `close_before`: the close of the last bar opening before the rollover); a source without that close
stops the catch-up with a `BrokerError` naming it rather than leaving the account unfinanced silently.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import BrokerError
from emp_pipeline.domain.financing import NO_SWAP, rollover_nights, swap_terms
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.sleeve import SwapTerms, overnight_swap
from emp_pipeline.registry.financing import book_financing, last_rollovers_booked, signed_fills_since
from emp_pipeline.registry.position_accounting import FLAT_TOLERANCE
from emp_pipeline.registry.positions import positions_for_account
from emp_pipeline.registry.records import FinancingEntry

# The rollovers are computed for a year at a time per symbol and sliced (the replay asks on every bar); a
# slice reaches at most this far past the bar asked about (the next rollover, over weekends and holidays).
_ROLLOVER_SPAN = pd.Timedelta(days=366)
_NEXT_ROLLOVER_HORIZON = pd.Timedelta(days=15)


class FinancedPrices(Protocol):
    """What booking swaps reads of the paper exchange's prices (`paper.NextOpenSource` has it)."""

    def latest_bar_time(self, symbol: str) -> dt.datetime | None: ...

    def close_before(self, symbol: str, at: dt.datetime) -> float | None: ...


class PaperFinancing:
    """Books the rollovers an account's positions were held across (module docstring).

    After a full check up to each symbol's latest bar it remembers the symbol's next rollover: until a bar
    reaches one, nothing new can be owed (a fill another process records before the check's bar books its
    own rollovers), so the catch-ups of the bars between two rollovers read nothing.
    """

    def __init__(self, instruments: Mapping[str, InstrumentMeta]) -> None:
        self._meta = dict(instruments)
        self._terms: dict[str, SwapTerms] = {
            symbol: terms for symbol, meta in instruments.items() if (terms := swap_terms(meta)) != NO_SWAP
        }
        self._calendar: dict[str, tuple[pd.Timestamp, pd.Timestamp, np.ndarray, np.ndarray]] = {}
        self._quiet_until: dict[str, int] = {}  # symbol -> its next rollover after the last full check (ns)

    def book(self, session: Session, account_id: int, prices: FinancedPrices) -> int:
        """Book every rollover owed up to each symbol's latest bar; returns how many were new."""
        latest: dict[str, pd.Timestamp] = {}
        for symbol in self._terms:
            at = prices.latest_bar_time(symbol)
            if at is not None:
                latest[symbol] = pd.Timestamp(at).tz_convert("UTC")
        if all(self._quiet_until.get(s, _UNCHECKED) > at.value for s, at in latest.items()):
            return 0
        booked = self._book(session, account_id, latest, prices)
        for symbol, at in latest.items():
            self._quiet_until[symbol] = self._next_rollover(symbol, at)
        return booked

    def _book(
        self,
        session: Session,
        account_id: int,
        latest: Mapping[str, pd.Timestamp],
        prices: FinancedPrices,
    ) -> int:
        held = {
            p.symbol: p.quantity
            for p in positions_for_account(session, account_id, include_flat=True)
            if p.symbol in latest
        }
        last = {s: pd.Timestamp(at) for s, at in last_rollovers_booked(session, account_id).items()}
        through = {
            symbol: latest[symbol]
            for symbol in held
            if symbol not in last or self._next_rollover(symbol, last[symbol]) <= latest[symbol].value
        }
        if not through:
            return 0
        since = None if any(s not in last for s in through) else min(last[s] for s in through)
        fills: dict[str, list[tuple[pd.Timestamp, float]]] = {s: [] for s in through}
        for symbol, at, quantity in signed_fills_since(session, account_id, list(through), since):
            stamp = pd.Timestamp(at)
            if symbol not in last or stamp > last[symbol]:
                fills[symbol].append((stamp, quantity))
        entries = [
            entry
            for symbol, at in through.items()
            for entry in self._owed(
                account_id, symbol, held[symbol], fills[symbol], last.get(symbol), at, prices
            )
        ]
        return book_financing(session, entries)

    def _owed(
        self,
        account_id: int,
        symbol: str,
        now: float,
        fills: list[tuple[pd.Timestamp, float]],
        booked: pd.Timestamp | None,
        latest: pd.Timestamp,
        prices: FinancedPrices,
    ) -> list[FinancingEntry]:
        """The rollovers after the last booked one (or the first fill after a flat spell) up to ``latest``,
        each on the position held just before it: the position now less the fills at or after it."""
        scale = max([abs(now), *(abs(q) for _, q in fills), 1.0])
        if fills and (booked is None or _flat(now - sum(q for _, q in fills), scale)):
            after = fills[0][0]  # flat before this spell: no earlier rollover is owed
        elif booked is not None:
            after = booked
        else:
            return []  # never filled here: nothing held
        terms = self._terms[symbol]
        rollovers, nights = self._rollovers(symbol, after, latest)
        entries = []
        for rollover_ns, count in zip(rollovers, nights, strict=True):
            rollover = pd.Timestamp(int(rollover_ns), tz="UTC")
            units = now - sum(q for at, q in fills if at >= rollover)
            if _flat(units, scale):
                continue
            last_close = 0.0  # pips swaps have no part proportional to the price
            if terms.long_per_value or terms.short_per_value:
                close = prices.close_before(symbol, rollover.to_pydatetime())
                if close is None or not math.isfinite(close):
                    raise BrokerError(
                        f"{symbol} has percent swaps, a share of the close before the rollover at "
                        f"{rollover}, and the paper exchange has no close there: store its bars' closes"
                    )
                last_close = close
            entries.append(
                FinancingEntry(
                    account_id,
                    symbol,
                    rollover.to_pydatetime(),
                    float(units),
                    float(count),
                    float(overnight_swap(float(units), last_close, float(count), terms)),
                )
            )
        return entries

    def _rollovers(
        self, symbol: str, after: pd.Timestamp, through: pd.Timestamp
    ) -> tuple[np.ndarray, np.ndarray]:
        """`financing.rollover_nights` in ``(after, through]`` (UTC nanoseconds), sliced from the symbol's
        cached span, which is recomputed when the range leaves it."""
        span = self._calendar.get(symbol)
        reach = through + _NEXT_ROLLOVER_HORIZON
        if span is None or after < span[0] or reach > span[1]:
            end = max(reach, after + _ROLLOVER_SPAN)
            times, nights = rollover_nights(self._meta[symbol], after, end)
            span = (after, end, times.as_unit("ns").asi8, nights)
            self._calendar[symbol] = span
        times, nights = span[2], span[3]
        first, last = np.searchsorted(times, [after.value, through.value], side="right")
        return times[first:last], nights[first:last]

    def _next_rollover(self, symbol: str, at: pd.Timestamp) -> int:
        """The symbol's first rollover after ``at`` in nanoseconds (the horizon's end when there is none
        before it, so the symbol is checked again then)."""
        horizon = at + _NEXT_ROLLOVER_HORIZON
        times, _ = self._rollovers(symbol, at, horizon)
        return int(times[0]) if len(times) else horizon.value


_UNCHECKED = np.iinfo(np.int64).min


def _flat(units: float, scale: float) -> bool:
    return abs(units) <= FLAT_TOLERANCE * scale
