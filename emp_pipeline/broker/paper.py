"""The paper broker: the embedded default, with its account, orders, fills and positions in the registry.

An order placed after bar t fills at the open of the next bar with a price, with the backtest's own slippage
and fee functions, so a paper fill is the fill the walk-forward measurement assumed. When that bar has not
arrived yet the order waits as `accepted`; `order_status`, `reconcile` and `settle_open_orders` fill it once
the bar is there. State lives only in the registry, so any process (or a re-run) sees the same orders.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import (
    BrokerError,
    Fill,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
    Position,
    ReconcileReport,
)
from emp_pipeline.domain.backtest import entry_fill_price, fee_cost
from emp_pipeline.registry import repository as registry
from emp_pipeline.registry.errors import ClientOrderIdConflictError, UnknownOrderError
from emp_pipeline.registry.records import OrderRecord

_OPEN_STATUSES = tuple(
    status.value
    for status in (
        OrderStatus.PENDING,
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    )
)


class NextOpenSource(Protocol):
    """Where paper fills get their price: the first priced bar strictly after a given bar."""

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        """The last bar known now for `symbol` (the bar an order placed now reacts to)."""
        ...

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        """(bar time, open) of the first bar after `after` with a finite open, or None if not there yet."""
        ...


class BarFrameOpens:
    """NextOpenSource over the canonical long bar frame (`date`, `symbol`, `open`, ...)."""

    def __init__(self, bars: pd.DataFrame) -> None:
        priced = bars.loc[np.isfinite(bars["open"].to_numpy(dtype="float64")), ["date", "symbol", "open"]]
        self._by_symbol: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for symbol, group in priced.sort_values(["symbol", "date"]).groupby("symbol", sort=False):
            dates = pd.DatetimeIndex(group["date"]).tz_convert("UTC").as_unit("ns").asi8
            self._by_symbol[str(symbol)] = (dates, group["open"].to_numpy(dtype="float64"))

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        series = self._by_symbol.get(symbol)
        if series is None or len(series[0]) == 0:
            return None
        return pd.Timestamp(series[0][-1], tz="UTC").to_pydatetime()

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        series = self._by_symbol.get(symbol)
        if series is None:
            return None
        dates, opens = series
        index = int(
            np.searchsorted(dates, pd.Timestamp(after).tz_convert("UTC").as_unit("ns").value, side="right")
        )
        if index >= len(dates):
            return None
        return pd.Timestamp(dates[index], tz="UTC").to_pydatetime(), float(opens[index])


@dataclass(frozen=True)
class PaperCosts:
    """Per-side costs in basis points; use the same values as the evolution/backtest configuration."""

    fee_bps: float = 1.0
    slippage_bps: float = 1.0

    def __post_init__(self) -> None:
        if not (self.fee_bps >= 0 and self.slippage_bps >= 0):
            raise ValueError(f"paper costs must be >= 0 bps, got {self}")


def paper_fill(side: OrderSide, quantity: float, next_open: float, costs: PaperCosts) -> tuple[float, float]:
    """(price, fee) of a paper fill: the backtest's slippage against the trader, fee on the fill notional."""
    price = float(entry_fill_price(next_open, side.sign, costs.slippage_bps))
    return price, float(fee_cost(quantity * price, costs.fee_bps))


class PaperBroker:
    """Broker whose exchange is the bar history: deterministic, offline, and backed by the registry."""

    def __init__(
        self,
        engine: Engine,
        prices: NextOpenSource,
        *,
        costs: PaperCosts | None = None,
        account_name: str = "paper",
        currency: str = "USD",
        initial_cash: float = 100_000.0,
    ) -> None:
        self._engine = engine
        self._prices = prices
        self.costs = costs or PaperCosts()
        with registry.session_scope(engine) as session:
            account = registry.get_or_create_paper_account(session, account_name, currency, initial_cash)
        self.account_id = account.id

    def submit_order(self, request: OrderRequest) -> OrderResult:
        """Record the order (once per client order id) and fill it at the next open if that bar exists.

        If the caller recorded the order already (create_order_if_absent), its bar time is the one filled
        after; otherwise the order reacts to the latest bar known now. A repeated id returns that order.
        """
        with registry.session_scope(self._engine) as session:
            order = self._record(session, request)
            if order.status == OrderStatus.PENDING.value:
                registry.update_order_status(
                    session,
                    order.client_order_id,
                    OrderStatus.ACCEPTED.value,
                    broker_order_id=f"paper-{order.id}",
                )
        return self._settle(request.client_order_id)

    def _record(self, session: Session, request: OrderRequest) -> OrderRecord:
        try:
            existing = registry.get_order(session, request.client_order_id)
        except UnknownOrderError:
            existing = None
        if existing is not None:
            stored = (existing.symbol, existing.side, existing.quantity)
            if stored != (request.symbol, request.side.value, float(request.quantity)):
                raise ClientOrderIdConflictError(
                    f"client order id {request.client_order_id!r} already names {stored} (symbol, side, "
                    "quantity): client order ids must be derived from the order's identity"
                )
            return existing
        bar_time = self._prices.latest_bar_time(request.symbol)
        if bar_time is None:
            raise BrokerError(
                f"paper broker has no bars for {request.symbol!r}: load market bars for it before trading it"
            )
        held = sum(
            p.quantity
            for p in registry.positions_for_account(session, self.account_id)
            if p.symbol == request.symbol
        )
        order, _ = registry.create_order_if_absent(
            session,
            client_order_id=request.client_order_id,
            account_id=self.account_id,
            symbol=request.symbol,
            side=request.side.value,
            quantity=request.quantity,
            bar_time=bar_time,
            target_position=held + request.side.sign * request.quantity,
            order_type=request.order_type,
        )
        return order

    def _settle(self, client_order_id: str) -> OrderResult:
        """Fill an open order whose next bar has arrived; return what the registry now says about it."""
        with registry.session_scope(self._engine) as session:
            try:
                order = registry.get_order(session, client_order_id)
            except UnknownOrderError:
                return OrderResult(client_order_id, OrderStatus.NOT_FOUND)
            if order.status in _OPEN_STATUSES and order.account_id == self.account_id:
                self._fill_if_priced(session, order)
            return self._result(session, registry.get_order(session, client_order_id))

    def _fill_if_priced(self, session: Session, order: OrderRecord) -> None:
        bar = self._prices.next_open(order.symbol, order.bar_time)
        if bar is None:
            return
        bar_time, next_open = bar
        if not (math.isfinite(next_open) and next_open > 0):
            registry.update_order_status(
                session,
                order.client_order_id,
                OrderStatus.REJECTED.value,
                error=f"no valid open at {bar_time}",
            )
            return
        side = OrderSide(order.side)
        filled = sum(fill.quantity for fill in registry.fills_for_order(session, order.client_order_id))
        remaining = order.quantity - filled
        price, fee = paper_fill(side, remaining, next_open, self.costs)
        if order.status == OrderStatus.PENDING.value:
            registry.update_order_status(
                session,
                order.client_order_id,
                OrderStatus.ACCEPTED.value,
                broker_order_id=f"paper-{order.id}",
            )
        registry.record_fill(
            session,
            client_order_id=order.client_order_id,
            broker_fill_id=f"paper-{order.client_order_id}",
            price=price,
            quantity=remaining,
            filled_at=bar_time,
            fee=fee,
        )

    def _result(self, session: Session, order: OrderRecord) -> OrderResult:
        side = OrderSide(order.side)
        fills = tuple(
            Fill(
                broker_fill_id=fill.broker_fill_id,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=side,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
                filled_at=fill.filled_at,
            )
            for fill in registry.fills_for_order(session, order.client_order_id)
        )
        return OrderResult(
            order.client_order_id, OrderStatus(order.status), order.broker_order_id, fills, order.error
        )

    def order_status(self, client_order_id: str) -> OrderResult:
        return self._settle(client_order_id)

    def settle_open_orders(self) -> tuple[OrderResult, ...]:
        """Fill every open order of the account whose next bar has arrived (start of each live run)."""
        with registry.session_scope(self._engine) as session:
            open_ids = [
                order.client_order_id
                for order in registry.orders_for_account(session, self.account_id, _OPEN_STATUSES)
            ]
        return tuple(self._settle(client_order_id) for client_order_id in open_ids)

    def positions(self) -> tuple[Position, ...]:
        with registry.session_scope(self._engine) as session:
            return tuple(
                Position(p.symbol, p.quantity, p.avg_price)
                for p in registry.positions_for_account(session, self.account_id)
            )

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        self.settle_open_orders()
        orders = {client_order_id: self._settle(client_order_id) for client_order_id in client_order_ids}
        return ReconcileReport(self.positions(), orders)

    def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""
