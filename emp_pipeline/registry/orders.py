"""The orders aggregate: order intents recorded exactly once, their lifecycle, their fills, and the paper
exchange's resting protective levels of an order.

A fill moves the account's position and cash in the same transaction (see `positions`). Readers that serve a
whole book or account at once (`orders_with_fills`, `filled_quantities`, `resting_levels`) answer in one or
two statements however many orders they cover, so a caller walking many orders does not pay a round trip
per order.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, bindparam, case, delete, func, literal, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import RECORDED_STATUSES, TERMINAL_STATUSES, OrderSide, OrderStatus
from emp_pipeline.registry.errors import (
    ClientOrderIdConflictError,
    FillConflictError,
    InvalidOrderTransitionError,
    InvalidRegistryInputError,
    UnknownAccountError,
    UnknownOrderError,
    UnknownStrategyError,
    UnsupportedDatabaseError,
)
from emp_pipeline.registry.input_checks import check_member, require_aware
from emp_pipeline.registry.models import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    Account,
    Fill,
    Order,
    PaperProtectiveLevels,
    Strategy,
    utc_now,
)
from emp_pipeline.registry.positions import apply_fill_to_position
from emp_pipeline.registry.records import FillRecord, OrderRecord, RestingLevels
from emp_pipeline.registry.statements import insert_once, record_from_row

# Order lifecycle: forward along pending -> submitted -> accepted -> partially_filled -> filled; rejected and
# cancelled may end any live order; `unknown` (lost acknowledgement) may be entered from any live state and
# left to any state once reconciliation with the broker tells the truth.
_ORDER_PROGRESS = {
    OrderStatus.PENDING: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
}


def create_order_if_absent(
    session: Session,
    *,
    client_order_id: str,
    account_id: int,
    symbol: str,
    side: str,
    quantity: float,
    bar_time: dt.datetime,
    target_position: float,
    strategy_id: str | None = None,
    order_type: str = "market",
) -> tuple[OrderRecord, bool]:
    """Record an order intent exactly once per client order id; returns (order, created).

    Safe against concurrent callers in several processes: the unique index decides, `ON CONFLICT DO NOTHING`
    makes the loser a no-op, and the loser reads the winner's row. Only the caller that gets created=True may
    submit the order to the broker.
    """
    if not client_order_id or len(client_order_id) > CLIENT_ORDER_ID_MAX_LENGTH:
        raise InvalidRegistryInputError(
            f"client_order_id {client_order_id!r} must be 1..{CLIENT_ORDER_ID_MAX_LENGTH} characters "
            "(the cTrader limit): derive a shorter id, e.g. a hash of strategy, symbol and bar time"
        )
    check_member("side", side, OrderSide)
    if not (math.isfinite(quantity) and quantity > 0):
        raise InvalidRegistryInputError(
            f"order quantity {quantity} must be a positive finite number; side gives sign"
        )
    require_aware("bar_time", bar_time)
    if session.execute(_account_exists_query(), {"account_id": account_id}).first() is None:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    if strategy_id is not None and session.get(Strategy, strategy_id) is None:
        raise UnknownStrategyError(
            f"order for unrecorded strategy {strategy_id!r}: record the strategy first"
        )
    now = utc_now()
    row = {
        "client_order_id": client_order_id,
        "account_id": account_id,
        "strategy_id": strategy_id,
        "symbol": symbol,
        "side": str(side),
        "quantity": float(quantity),
        "order_type": order_type,
        "bar_time": bar_time,
        "target_position": float(target_position),
        "status": OrderStatus.PENDING.value,
        "broker_order_id": None,
        "error": None,
        "created_at": now,
        "updated_at": now,
    }
    order, created = insert_once(session, Order, row, "client_order_id")
    if not created:
        requested = (account_id, symbol, str(side), float(quantity))
        stored = (order.account_id, order.symbol, order.side, order.quantity)
        if requested != stored:
            raise ClientOrderIdConflictError(
                f"client order id {client_order_id!r} already names order {stored} (account, symbol, side, "
                f"quantity), not {requested}: client order ids must be derived from the order's identity"
            )
    return record_from_row(OrderRecord, order), created


@cache
def _account_exists_query() -> Select[Any]:
    """Whether the account exists: one prebuilt read (an ORM `get` costs more, and every order asks)."""
    return select(Account.id).where(Account.id == bindparam("account_id"))


def get_order(session: Session, client_order_id: str) -> OrderRecord:
    return record_from_row(OrderRecord, _locked_order(session, client_order_id, lock=False))


def _locked_order(session: Session, client_order_id: str, *, lock: bool = True) -> Row[Any]:
    """The order's row, read from the database (and locked for this transaction's update when `lock`)."""
    row = session.execute(_order_query(lock), {"client_order_id": client_order_id}).one_or_none()
    if row is None:
        raise UnknownOrderError(f"no order with client order id {client_order_id!r}: create it first")
    return row


@cache
def _order_query(lock: bool) -> Select[Any]:
    orders = Order.__table__.c
    query = select(*orders).where(orders.client_order_id == bindparam("client_order_id"))
    return query.with_for_update() if lock else query


def _set_order(session: Session, order_id: int, **values: Any) -> Row[Any]:
    """Update one order's columns (and its update time); returns the row as stored."""
    orders = Order.__table__
    statement = (
        update(orders)
        .where(orders.c.id == order_id)
        .values(**values, updated_at=utc_now())
        .returning(*orders.c)
    )
    return session.execute(statement).one()


def orders_for_account(
    session: Session, account_id: int, statuses: Iterable[str] | None = None
) -> list[OrderRecord]:
    parameters: dict[str, Any] = {"account_id": account_id}
    if statuses is not None:
        parameters["statuses"] = [str(s) for s in statuses]
    rows = session.execute(_account_orders_query(statuses is not None), parameters)
    return [record_from_row(OrderRecord, row) for row in rows]


@cache
def _account_orders_query(by_status: bool) -> Select[Any]:
    """`orders_for_account`'s statement, built once: a broker catch-up runs it on every bar."""
    orders = Order.__table__.c
    query = select(*orders).where(orders.account_id == bindparam("account_id"))
    if by_status:
        query = query.where(orders.status.in_(bindparam("statuses", expanding=True)))
    return query.order_by(orders.created_at, orders.id)


def _check_order_transition(order: Order, new_status: str) -> None:
    current = order.status
    if current == new_status:
        return
    if current in TERMINAL_STATUSES:
        raise InvalidOrderTransitionError(
            f"order {order.client_order_id} is already {current} (final) and cannot become {new_status}: "
            "reconcile with the broker instead of replaying old events"
        )
    if new_status in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.UNKNOWN):
        return
    if current == OrderStatus.UNKNOWN:
        return
    if _ORDER_PROGRESS[OrderStatus(new_status)] < _ORDER_PROGRESS[OrderStatus(current)]:
        raise InvalidOrderTransitionError(
            f"order {order.client_order_id} cannot go back from {current} to {new_status}: the event is "
            "stale; ignore it or reconcile with the broker"
        )


def update_order_status(
    session: Session,
    client_order_id: str,
    status: str,
    *,
    broker_order_id: str | None = None,
    error: str | None = None,
) -> OrderRecord:
    """Move an order along its lifecycle (see _ORDER_PROGRESS); repeating the current status is a no-op."""
    check_member("status", status, RECORDED_STATUSES)
    order = _locked_order(session, client_order_id)
    _check_order_transition(order, status)
    values: dict[str, Any] = {"status": str(status)}
    if broker_order_id is not None:
        values["broker_order_id"] = broker_order_id
    if error is not None:
        values["error"] = error
    return record_from_row(OrderRecord, _set_order(session, order.id, **values))


def accept_order(session: Session, client_order_id: str, broker_order_id: str) -> OrderRecord:
    """A pending order accepted under `broker_order_id`, in one statement; an order no longer pending is
    returned as it now is. The caller read it pending, so another submit of the same order (a concurrent
    run) accepted it first, and may have filled it since: its answer stands (accepting again would move a
    filled order back)."""
    row = session.execute(
        _accept_pending_statement(),
        {"pending_id": client_order_id, "broker_order_id": broker_order_id, "updated_at": utc_now()},
    ).one_or_none()
    if row is None:
        return get_order(session, client_order_id)
    return record_from_row(OrderRecord, row)


@cache
def _accept_pending_statement() -> Any:
    orders = Order.__table__
    return (
        update(orders)
        .where(
            orders.c.client_order_id == bindparam("pending_id"),
            orders.c.status == OrderStatus.PENDING.value,
        )
        .values(
            status=OrderStatus.ACCEPTED.value,
            broker_order_id=bindparam("broker_order_id"),
            updated_at=bindparam("updated_at"),
        )
        .returning(*orders.c)
    )


def record_fill(
    session: Session,
    *,
    client_order_id: str,
    broker_fill_id: str,
    price: float,
    quantity: float,
    filled_at: dt.datetime,
    fee: float = 0.0,
) -> tuple[FillRecord, bool]:
    """Record an execution once per broker fill id and apply it to the position, cash and order status.

    Returns (fill, created). A replayed report (same broker_fill_id, same contents) changes nothing; the
    same id with different contents raises FillConflictError. Cash moves by -signed quantity x price - fee.
    """
    if not (math.isfinite(price) and price > 0 and math.isfinite(quantity) and quantity > 0):
        raise InvalidRegistryInputError(
            f"fill price {price} and quantity {quantity} must be positive finite numbers"
        )
    if not (math.isfinite(fee) and fee >= 0):
        raise InvalidRegistryInputError(f"fill fee {fee} must be a non-negative finite number")
    require_aware("filled_at", filled_at)
    order = _locked_order(session, client_order_id)
    row = {
        "order_id": order.id,
        "broker_fill_id": broker_fill_id,
        "price": float(price),
        "quantity": float(quantity),
        "fee": float(fee),
        "filled_at": filled_at,
    }
    fill, created = insert_once(session, Fill, row, "broker_fill_id")
    if not created:
        if (fill.order_id, fill.price, fill.quantity, fill.fee) != (
            order.id,
            float(price),
            float(quantity),
            fee,
        ):
            raise FillConflictError(
                f"broker fill {broker_fill_id!r} is already recorded as order {fill.order_id}, "
                f"{fill.quantity} @ {fill.price} fee {fill.fee}, not order {order.id}, {quantity} @ {price} "
                f"fee {fee}: check the broker feed for a reused fill id"
            )
        return record_from_row(FillRecord, fill), False

    signed_quantity = quantity if order.side == OrderSide.BUY else -quantity
    apply_fill_to_position(session, order.account_id, order.symbol, signed_quantity, price, fee)
    session.execute(_cash_update(), {"account": order.account_id, "outflow": signed_quantity * price + fee})
    if order.status not in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        session.execute(_fill_status_update(), {"order_id": order.id, "updated_at": utc_now()})
    return record_from_row(FillRecord, fill), True


@cache
def _cash_update() -> Any:
    """Cash moves by the fill's outflow (signed quantity x price + fee): one statement, built once."""
    accounts = Account.__table__.c
    return (
        update(Account.__table__)
        .where(accounts.id == bindparam("account"))
        .values(cash=accounts.cash - bindparam("outflow"))
    )


@cache
def _fill_status_update() -> Any:
    """Filled once the fills add up to the quantity (to a billionth), else partially filled: one statement."""
    orders, fills = Order.__table__.c, Fill.__table__.c
    filled = select(func.sum(fills.quantity)).where(fills.order_id == orders.id).scalar_subquery()
    status = case(
        (filled >= orders.quantity * (1 - 1e-9), OrderStatus.FILLED.value),
        else_=OrderStatus.PARTIALLY_FILLED.value,
    )
    return (
        update(Order.__table__)
        .where(orders.id == bindparam("order_id"))
        .values(status=status, updated_at=bindparam("updated_at"))
    )


def fills_for_order(session: Session, client_order_id: str) -> list[FillRecord]:
    order = _locked_order(session, client_order_id, lock=False)
    _, fills_query = _orders_with_fills_queries()
    rows = session.execute(fills_query, {"order_ids": [order.id]})
    return [record_from_row(FillRecord, row) for row in rows]


def orders_with_fills(
    session: Session, client_order_ids: Collection[str]
) -> dict[str, tuple[OrderRecord, list[FillRecord]]]:
    """The named orders that exist, each with its fills (as `fills_for_order` orders them), in two reads."""
    if not client_order_ids:
        return {}
    orders_query, fills_query = _orders_with_fills_queries()
    rows = session.execute(orders_query, {"client_order_ids": list(client_order_ids)})
    orders = [record_from_row(OrderRecord, row) for row in rows]
    fills: dict[int, list[FillRecord]] = {order.id: [] for order in orders}
    for row in session.execute(fills_query, {"order_ids": list(fills)}):
        fills[row.order_id].append(record_from_row(FillRecord, row))
    return {order.client_order_id: (order, fills[order.id]) for order in orders}


@cache
def _orders_with_fills_queries() -> tuple[Select[Any], Select[Any]]:
    orders, fills = Order.__table__.c, Fill.__table__.c
    return (
        select(*orders).where(orders.client_order_id.in_(bindparam("client_order_ids", expanding=True))),
        select(*fills)
        .where(fills.order_id.in_(bindparam("order_ids", expanding=True)))
        .order_by(fills.filled_at, fills.id),
    )


def filled_quantities(session: Session, order_ids: Collection[int]) -> dict[int, float]:
    """Quantity filled so far per order id (orders without fills are absent), in one read."""
    if not order_ids:
        return {}
    rows = session.execute(_filled_quantities_query(), {"order_ids": list(order_ids)})
    return {order_id: float(total) for order_id, total in rows}


@cache
def _filled_quantities_query() -> Select[Any]:
    fills = Fill.__table__.c
    return (
        select(fills.order_id, func.sum(fills.quantity))
        .where(fills.order_id.in_(bindparam("order_ids", expanding=True)))
        .group_by(fills.order_id)
    )


# ------------------------------------------------------------------ the paper exchange's resting levels


def rest_protective_levels(
    session: Session,
    *,
    client_order_id: str,
    account_id: int,
    stop_distance: float | None,
    take_profit_distance: float | None,
) -> bool:
    """Keep an order's relative stop and take profit at the paper exchange, once: a repeated call (a
    re-submitted order, a concurrent process) changes nothing. Returns whether this call stored them."""
    row = {
        "client_order_id": client_order_id,
        "account_id": account_id,
        "stop_distance": stop_distance,
        "take_profit_distance": take_profit_distance,
    }
    statement = _rest_levels_statement(session.get_bind().dialect.name)
    return session.execute(statement, row).scalar_one_or_none() is not None


@cache
def _rest_levels_statement(dialect: str) -> Any:
    """`rest_protective_levels`' insert per dialect, built once (the paper broker rests levels per order)."""
    table = PaperProtectiveLevels.__table__
    inserts = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    if dialect not in inserts:
        raise UnsupportedDatabaseError(f"the registry supports sqlite and postgresql, not {dialect!r}")
    return (
        inserts[dialect](table)
        .on_conflict_do_nothing(index_elements=["client_order_id"])
        .returning(table.c.client_order_id)
    )


def arm_protective_levels(session: Session, client_order_id: str, position: float) -> None:
    """Record the book position an order's levels protect (in the transaction that records its fill)."""
    session.execute(_arm_statement(), {"armed_id": client_order_id, "position": position})


@cache
def _arm_statement() -> Any:
    table = PaperProtectiveLevels.__table__
    return update(table).where(table.c.client_order_id == bindparam("armed_id"))


def open_orders_and_resting_levels(
    session: Session, account_id: int, open_statuses: Iterable[str]
) -> tuple[list[OrderRecord], list[RestingLevels]]:
    """The account's orders in `open_statuses` (as `orders_for_account` lists them) and every resting level
    with its order and the order's first fill: what a paper catch-up starts from, in one read."""
    parameters = {"account_id": account_id, "statuses": [str(status) for status in open_statuses]}
    open_orders: list[OrderRecord] = []
    levels: list[RestingLevels] = []
    for row in session.execute(_open_orders_and_levels_query(), parameters):
        order = record_from_row(OrderRecord, row)
        if row.is_open:
            open_orders.append(order)
        if row.rested is not None:
            levels.append(RestingLevels(order, *row[-5:]))
    return open_orders, sorted(levels, key=lambda level: level.entry.id)


@cache
def _open_orders_and_levels_query() -> Any:
    """The statement of `open_orders_and_resting_levels`, built once (a catch-up runs it on every bar): open
    orders with their levels if any, then the levels of the other orders, each part on its own index."""
    orders_table, levels_table = Order.__table__, PaperProtectiveLevels.__table__
    orders, levels, fills = orders_table.c, levels_table.c, Fill.__table__
    first_fill = fills.alias("first_fill")
    first_fill_id = (
        select(fills.c.id)
        .where(fills.c.order_id == orders.id)
        .order_by(fills.c.filled_at, fills.c.id)
        .limit(1)
        .scalar_subquery()
    )
    statuses = bindparam("statuses", expanding=True)

    def part(is_open: bool) -> Select[Any]:
        return select(
            *orders,
            literal(is_open).label("is_open"),
            levels.client_order_id.label("rested"),
            levels.stop_distance,
            levels.take_profit_distance,
            levels.position,
            first_fill.c.price,
            first_fill.c.filled_at,
        )

    with_levels = orders.client_order_id == levels.client_order_id
    open_part = (
        part(True)
        .select_from(orders_table.outerjoin(levels_table, with_levels))
        .outerjoin(first_fill, first_fill.c.id == first_fill_id)
        .where(orders.account_id == bindparam("account_id"), orders.status.in_(statuses))
    )
    rested_part = (
        part(False)
        .select_from(levels_table.join(orders_table, with_levels))
        .outerjoin(first_fill, first_fill.c.id == first_fill_id)
        .where(levels.account_id == bindparam("account_id"), orders.status.not_in(statuses))
    )
    merged = union_all(open_part, rested_part).subquery()
    return select(merged).order_by(merged.c.created_at, merged.c.id)


def end_protective_levels(session: Session, client_order_ids: Collection[str]) -> None:
    """Remove levels that protect nothing any more (superseded, refused, or filled out), in one statement."""
    if client_order_ids:
        session.execute(_end_levels_statement(), {"ended": list(client_order_ids)})


@cache
def _end_levels_statement() -> Any:
    """`end_protective_levels`' delete, built once (a catch-up ends levels on most bars that fill)."""
    table = PaperProtectiveLevels.__table__
    return delete(table).where(table.c.client_order_id.in_(bindparam("ended", expanding=True)))
