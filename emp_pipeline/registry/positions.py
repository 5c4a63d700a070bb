"""The positions aggregate: broker accounts (cash), their net positions by symbol, and the books in them
(each strategy's own position in a symbol, rebuilt from its orders and fills)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import OPEN_STATUSES, BrokerKind, OrderSide
from emp_pipeline.domain.costs import DEFAULT_CAPITAL
from emp_pipeline.registry.errors import UnknownAccountError
from emp_pipeline.registry.input_checks import check_member
from emp_pipeline.registry.models import Account, Fill, Order, Position, utc_now
from emp_pipeline.registry.position_accounting import PositionState, apply_fill
from emp_pipeline.registry.records import AccountRecord, PositionRecord
from emp_pipeline.registry.statements import dialect_insert, record_from_row


def get_or_create_account(
    session: Session, *, broker: str, name: str, currency: str, initial_cash: float
) -> AccountRecord:
    """The account (broker, name), created with `initial_cash` if absent; concurrent callers get one row."""
    check_member("broker", broker, BrokerKind)
    row = {
        "broker": str(broker),
        "name": name,
        "currency": currency,
        "initial_cash": float(initial_cash),
        "cash": float(initial_cash),
        "created_at": utc_now(),
    }
    session.execute(
        dialect_insert(session, Account).on_conflict_do_nothing(index_elements=["broker", "name"]), [row]
    )
    account = session.scalars(select(Account).where(Account.broker == broker, Account.name == name)).one()
    return record_from_row(AccountRecord, account)


def get_or_create_paper_account(
    session: Session, name: str = "paper", currency: str = "USD", initial_cash: float = DEFAULT_CAPITAL
) -> AccountRecord:
    """The paper broker's account; an existing one keeps its cash (currency, initial cash not reset)."""
    return get_or_create_account(
        session, broker=BrokerKind.PAPER, name=name, currency=currency, initial_cash=initial_cash
    )


def get_account(session: Session, account_id: int) -> AccountRecord:
    row = session.execute(_account_query(), {"account_id": account_id}).one_or_none()
    if row is None:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    return record_from_row(AccountRecord, row)


@cache
def _account_query() -> Select[Any]:
    """`get_account`'s statement, built once (a live or replayed account is read on every bar)."""
    accounts = Account.__table__.c
    return select(*accounts).where(accounts.id == bindparam("account_id"))


def apply_fill_to_position(
    session: Session, account_id: int, symbol: str, signed_quantity: float, price: float, fee: float
) -> None:
    locked, store = _position_statements()
    key = {"position_account": account_id, "position_symbol": symbol}
    position = session.execute(locked, key).one_or_none()
    if (
        position is None
    ):  # the symbol's first fill: a flat row to lock (a concurrent first fill makes one too)
        blank = {
            "account_id": account_id,
            "symbol": symbol,
            "quantity": 0.0,
            "avg_price": 0.0,
            "realised_pnl": 0.0,
            "updated_at": utc_now(),
        }
        session.execute(
            dialect_insert(session, Position)
            .values(blank)
            .on_conflict_do_nothing(index_elements=["account_id", "symbol"])
        )
        position = session.execute(locked, key).one()
    state = apply_fill(
        PositionState(position.quantity, position.avg_price, position.realised_pnl),
        signed_quantity,
        price,
        fee,
    )
    values = {
        "quantity": state.quantity,
        "avg_price": state.avg_price,
        "realised_pnl": state.realised_pnl,
        "updated_at": utc_now(),
    }
    session.execute(store, {**key, **values})


@cache
def _position_statements() -> tuple[Any, Any]:
    """`apply_fill_to_position`'s locking read and its update of one (account, symbol) row, built once: the
    paper broker applies a fill on every bar it trades."""
    positions = Position.__table__
    key = (positions.c.account_id == bindparam("position_account")) & (
        positions.c.symbol == bindparam("position_symbol")
    )
    return select(positions).where(key).with_for_update(), update(positions).where(key)


def positions_for_account(
    session: Session, account_id: int, *, include_flat: bool = False
) -> list[PositionRecord]:
    """The account's net positions by symbol (flat ones only if asked: they still carry realised PnL)."""
    rows = session.execute(_account_positions_query(include_flat), {"account_id": account_id})
    return [record_from_row(PositionRecord, row) for row in rows]


@cache
def _account_positions_query(include_flat: bool) -> Select[Any]:
    positions = Position.__table__.c
    query = select(*positions).where(positions.account_id == bindparam("account_id"))
    if not include_flat:
        query = query.where(positions.quantity != 0.0)
    return query.order_by(positions.symbol)


def account_and_positions(session: Session, account_id: int) -> tuple[AccountRecord, list[PositionRecord]]:
    """`get_account` and `positions_for_account` (non-flat) in one read: what a risk check marks each bar."""
    rows = session.execute(_account_and_positions_query(), {"account_id": account_id}).all()
    if not rows:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    positions = [
        PositionRecord(account_id, row.position_symbol, *row[-4:]) for row in rows if row.position_symbol
    ]
    return record_from_row(AccountRecord, rows[0]), positions


@cache
def _account_and_positions_query() -> Select[Any]:
    accounts, positions = Account.__table__, Position.__table__
    held = (positions.c.account_id == accounts.c.id) & (positions.c.quantity != 0.0)
    return (
        select(
            *accounts.c,
            positions.c.symbol.label("position_symbol"),
            positions.c.quantity,
            positions.c.avg_price,
            positions.c.realised_pnl,
            positions.c.updated_at,
        )
        .select_from(accounts.outerjoin(positions, held))
        .where(accounts.c.id == bindparam("account_id"))
        .order_by(positions.c.symbol)
    )


def book_positions(
    session: Session, account_id: int, symbols: Collection[str]
) -> dict[tuple[str | None, str], float]:
    """(strategy id, symbol) -> the book's position: the signed sum of the fills of its orders, in one read.

    An account's net position in a symbol may be several strategies' books; a book with no fills is absent.
    """
    if not symbols:
        return {}
    rows = session.execute(_book_positions_query(), {"account_id": account_id, "symbols": list(symbols)})
    return {(strategy_id, symbol): float(total) for strategy_id, symbol, total in rows}


@cache
def _book_positions_query() -> Select[Any]:
    """`book_positions`' statement, built once: the paper broker runs it on every catch-up with a book."""
    orders, fills = Order.__table__.c, Fill.__table__.c
    signed = case((orders.side == OrderSide.BUY.value, fills.quantity), else_=-fills.quantity)
    return (
        select(orders.strategy_id, orders.symbol, func.sum(signed))
        .join_from(Order.__table__, Fill.__table__, fills.order_id == orders.id)
        .where(
            orders.account_id == bindparam("account_id"),
            orders.symbol.in_(bindparam("symbols", expanding=True)),
        )
        .group_by(orders.strategy_id, orders.symbol)
    )


def strategy_positions(session: Session, account_id: int) -> dict[tuple[str, str], float]:
    """(strategy id, symbol) -> signed units filled plus the unfilled rest of orders still open.

    An order still in flight counts at its full quantity, so the live job never sends a decision a second
    time under another id while the first is unanswered.
    """
    filled = select(Fill.order_id, func.sum(Fill.quantity).label("filled")).group_by(Fill.order_id).subquery()
    rows = session.execute(
        select(Order.strategy_id, Order.symbol, Order.side, Order.quantity, Order.status, filled.c.filled)
        .outerjoin(filled, filled.c.order_id == Order.id)
        .where(Order.account_id == account_id, Order.strategy_id.is_not(None))
    )
    positions: dict[tuple[str, str], float] = defaultdict(float)
    for strategy_id, symbol, side, quantity, status, filled_quantity in rows:
        sign = 1.0 if side == OrderSide.BUY.value else -1.0
        done = float(filled_quantity or 0.0)
        open_rest = max(quantity - done, 0.0) if status in OPEN_STATUSES else 0.0
        positions[(strategy_id, symbol)] += sign * (done + open_rest)
    return dict(positions)
