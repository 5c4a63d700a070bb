"""The orders aggregate: order intents recorded exactly once, their lifecycle, and their fills.

A fill moves the account's position and cash in the same transaction (see `positions`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from emp_pipeline.registry.errors import (
    ClientOrderIdConflictError,
    FillConflictError,
    InvalidOrderTransitionError,
    InvalidRegistryInputError,
    UnknownAccountError,
    UnknownOrderError,
    UnknownStrategyError,
)
from emp_pipeline.registry.input_checks import check_member, require_aware
from emp_pipeline.registry.models import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    Account,
    Fill,
    Order,
    OrderSide,
    OrderStatus,
    Strategy,
    utc_now,
)
from emp_pipeline.registry.positions import apply_fill_to_position
from emp_pipeline.registry.records import FillRecord, OrderRecord
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
TERMINAL_ORDER_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


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
    if session.get(Account, account_id) is None:
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


def get_order(session: Session, client_order_id: str) -> OrderRecord:
    return record_from_row(OrderRecord, _locked_order(session, client_order_id, lock=False))


def _locked_order(session: Session, client_order_id: str, *, lock: bool = True) -> Order:
    query = (
        select(Order)
        .where(Order.client_order_id == client_order_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    order = session.scalars(query).one_or_none()
    if order is None:
        raise UnknownOrderError(f"no order with client order id {client_order_id!r}: create it first")
    return order


def orders_for_account(
    session: Session, account_id: int, statuses: Iterable[str] | None = None
) -> list[OrderRecord]:
    query = select(Order).where(Order.account_id == account_id)
    if statuses is not None:
        query = query.where(Order.status.in_([str(s) for s in statuses]))
    return [
        record_from_row(OrderRecord, row)
        for row in session.scalars(query.order_by(Order.created_at, Order.id))
    ]


def _check_order_transition(order: Order, new_status: str) -> None:
    current = order.status
    if current == new_status:
        return
    if current in TERMINAL_ORDER_STATUSES:
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
    check_member("status", status, OrderStatus)
    order = _locked_order(session, client_order_id)
    _check_order_transition(order, status)
    order.status = str(status)
    if broker_order_id is not None:
        order.broker_order_id = broker_order_id
    if error is not None:
        order.error = error
    order.updated_at = utc_now()
    session.flush()
    return record_from_row(OrderRecord, order)


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
    session.execute(
        update(Account)
        .where(Account.id == order.account_id)
        .values(cash=Account.cash - (signed_quantity * price + fee))
    )
    filled_total = session.scalar(select(func.sum(Fill.quantity)).where(Fill.order_id == order.id)) or 0.0
    if order.status not in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        complete = filled_total >= order.quantity * (1 - 1e-9)
        order.status = OrderStatus.FILLED.value if complete else OrderStatus.PARTIALLY_FILLED.value
        order.updated_at = utc_now()
    session.flush()
    return record_from_row(FillRecord, fill), True


def fills_for_order(session: Session, client_order_id: str) -> list[FillRecord]:
    order = _locked_order(session, client_order_id, lock=False)
    query = select(Fill).where(Fill.order_id == order.id).order_by(Fill.filled_at, Fill.id)
    return [record_from_row(FillRecord, row) for row in session.scalars(query)]
