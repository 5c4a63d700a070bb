"""The paper account's financing ledger: each rollover's overnight swap, booked once, moving the cash.

A row per (account, symbol, rollover time) is inserted with ``ON CONFLICT DO NOTHING`` and only the rows
actually inserted move the account's cash, in the caller's transaction: a retried, repeated or concurrent
catch-up books each rollover once (`broker.paper_financing` decides what is owed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import OrderSide
from emp_pipeline.registry.models import Account, Fill, Order, PaperFinancing, utc_now
from emp_pipeline.registry.records import FinancingEntry
from emp_pipeline.registry.statements import dialect_insert, record_from_row


def book_financing(session: Session, entries: Sequence[FinancingEntry]) -> int:
    """Insert the entries not booked yet and move their accounts' cash by their amounts; returns how many
    were new (an entry already booked, by anyone, is skipped and moves nothing)."""
    booked = 0
    ledger, accounts = PaperFinancing.__table__, Account.__table__
    now = utc_now()
    for entry in entries:
        row = {
            "account_id": entry.account_id,
            "symbol": entry.symbol,
            "rollover_at": entry.rollover_at,
            "units": float(entry.units),
            "nights": float(entry.nights),
            "amount": float(entry.amount),
            "booked_at": now,
        }
        inserted = session.execute(
            dialect_insert(session, PaperFinancing)
            .values(row)
            .on_conflict_do_nothing(index_elements=["account_id", "symbol", "rollover_at"])
            .returning(ledger.c.rollover_at)
        ).first()
        if inserted is None:
            continue
        session.execute(
            update(accounts)
            .where(accounts.c.id == entry.account_id)
            .values(cash=accounts.c.cash + float(entry.amount))
        )
        booked += 1
    return booked


def last_rollovers_booked(session: Session, account_id: int) -> dict[str, dt.datetime]:
    """symbol -> the newest rollover booked to the account in it."""
    rows = session.execute(_last_rollovers_query(), {"account_id": account_id})
    return {symbol: _utc(at) for symbol, at in rows}


@cache
def _last_rollovers_query() -> Select[Any]:
    ledger = PaperFinancing.__table__.c
    return (
        select(ledger.symbol, func.max(ledger.rollover_at))
        .where(ledger.account_id == bindparam("account_id"))
        .group_by(ledger.symbol)
    )


def signed_fills_since(
    session: Session, account_id: int, symbols: Collection[str], since: dt.datetime | None
) -> list[tuple[str, dt.datetime, float]]:
    """(symbol, filled at, signed quantity) of the account's fills in ``symbols`` after ``since`` (all when
    None), oldest first."""
    if not symbols:
        return []
    query = _signed_fills_query()
    parameters: dict[str, Any] = {"account_id": account_id, "symbols": list(symbols)}
    if since is not None:
        query = query.where(Fill.__table__.c.filled_at > bindparam("since"))
        parameters["since"] = since
    return [(symbol, _utc(at), float(q)) for symbol, at, q in session.execute(query, parameters)]


@cache
def _signed_fills_query() -> Select[Any]:
    orders, fills = Order.__table__.c, Fill.__table__.c
    signed = case((orders.side == OrderSide.BUY.value, fills.quantity), else_=-fills.quantity)
    return (
        select(orders.symbol, fills.filled_at, signed)
        .join_from(Order.__table__, Fill.__table__, fills.order_id == orders.id)
        .where(
            orders.account_id == bindparam("account_id"),
            orders.symbol.in_(bindparam("symbols", expanding=True)),
        )
        .order_by(fills.filled_at, fills.id)
    )


def financing_entries(session: Session, account_id: int) -> list[FinancingEntry]:
    """The account's ledger, oldest rollover first."""
    ledger = PaperFinancing.__table__.c
    rows = session.execute(
        select(
            ledger.account_id, ledger.symbol, ledger.rollover_at, ledger.units, ledger.nights, ledger.amount
        )
        .where(ledger.account_id == account_id)
        .order_by(ledger.rollover_at, ledger.symbol)
    )
    return [record_from_row(FinancingEntry, row) for row in rows]


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
