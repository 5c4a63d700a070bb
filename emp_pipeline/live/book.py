"""What the registry says about the live book: strategies' own positions, open orders, activation times.

The registry keeps net positions per account and symbol; several strategies may trade one symbol, so each
strategy's position is rebuilt from its own orders and fills. An order still in flight counts at its full
quantity, so a decision is never sent a second time under another id while the first is unanswered.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emp_pipeline.registry.models import Fill, Order, OrderSide, OrderStatus, StrategyStatus
from emp_pipeline.registry.research import status_history

OPEN_ORDER_STATUSES = (
    OrderStatus.PENDING.value,
    OrderStatus.SUBMITTED.value,
    OrderStatus.ACCEPTED.value,
    OrderStatus.PARTIALLY_FILLED.value,
    OrderStatus.UNKNOWN.value,
)


def strategy_positions(session: Session, account_id: int) -> dict[tuple[str, str], float]:
    """(strategy id, symbol) -> signed units filled plus the unfilled rest of orders still open."""
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
        open_rest = max(quantity - done, 0.0) if status in OPEN_ORDER_STATUSES else 0.0
        positions[(strategy_id, symbol)] += sign * (done + open_rest)
    return dict(positions)


def activation_time(session: Session, strategy_id: str) -> dt.datetime | None:
    """When the strategy last became active (the start of its live track record), or None if never."""
    changes = [c for c in status_history(session, strategy_id) if c.to_status == StrategyStatus.ACTIVE.value]
    return changes[-1].at if changes else None
