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

Percent swaps (a yearly rate on the previous close) are not booked: the paper exchange's price source
carries no closes, so a position held over a rollover in such an instrument stops the catch-up with a
`BrokerError` naming it rather than leaving the account unfinanced silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Protocol

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

# Far enough to hold the next rollover after any instant (FX weekends, exchange holidays).
_NEXT_ROLLOVER_HORIZON = pd.Timedelta(days=15)


class LatestBars(Protocol):
    def latest_bar_time(self, symbol: str) -> dt.datetime | None: ...


class PaperFinancing:
    """Books the rollovers an account's positions were held across (module docstring)."""

    def __init__(self, instruments: Mapping[str, InstrumentMeta]) -> None:
        self._meta = dict(instruments)
        self._terms: dict[str, SwapTerms] = {
            symbol: terms for symbol, meta in instruments.items() if (terms := swap_terms(meta)) != NO_SWAP
        }
        self._next: dict[tuple[str, pd.Timestamp], pd.Timestamp | None] = {}

    def book(self, session: Session, account_id: int, prices: LatestBars) -> int:
        """Book every rollover owed up to each symbol's latest bar; returns how many were new."""
        if not self._terms:
            return 0
        held = {
            p.symbol: p.quantity
            for p in positions_for_account(session, account_id, include_flat=True)
            if p.symbol in self._terms
        }
        last = {s: pd.Timestamp(at) for s, at in last_rollovers_booked(session, account_id).items()}
        through: dict[str, pd.Timestamp] = {}
        for symbol in held:
            latest = prices.latest_bar_time(symbol)
            if latest is None:
                continue
            latest = pd.Timestamp(latest).tz_convert("UTC")
            booked = last.get(symbol)
            if booked is not None and not self._rollover_due(symbol, booked, latest):
                continue  # nothing owed whatever the fills since (cheap: no read)
            through[symbol] = latest
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
            for symbol, latest in through.items()
            for entry in self._owed(account_id, symbol, held[symbol], fills[symbol], last.get(symbol), latest)
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
        if not self._rollover_due(symbol, after, latest):
            return []
        meta, terms = self._meta[symbol], self._terms[symbol]
        rollovers, nights = rollover_nights(meta, after, latest)
        entries = []
        for rollover, count in zip(rollovers, nights, strict=True):
            units = now - sum(q for at, q in fills if at >= rollover)
            if _flat(units, scale):
                continue
            if terms.long_per_value or terms.short_per_value:
                raise BrokerError(
                    f"{symbol} has percent swaps: the paper account books swaps in pips only (a percent "
                    "swap is a share of the previous close, which its price source does not carry); give "
                    f"{symbol} its swaps in pips in the universe file"
                )
            entries.append(
                FinancingEntry(
                    account_id,
                    symbol,
                    rollover.to_pydatetime(),
                    float(units),
                    float(count),
                    float(overnight_swap(float(units), 0.0, float(count), terms)),
                )
            )
        return entries

    def _rollover_due(self, symbol: str, after: pd.Timestamp, latest: pd.Timestamp) -> bool:
        """Whether a rollover of the symbol falls in ``(after, latest]`` (the next one after ``after`` is
        remembered: the live job and the replay ask on every bar)."""
        key = (symbol, after)
        if key not in self._next:
            upcoming, _ = rollover_nights(self._meta[symbol], after, after + _NEXT_ROLLOVER_HORIZON)
            self._next[key] = upcoming[0] if len(upcoming) else None
        upcoming_at = self._next[key]
        return upcoming_at is None or upcoming_at <= latest


def _flat(units: float, scale: float) -> bool:
    return abs(units) <= FLAT_TOLERANCE * scale
