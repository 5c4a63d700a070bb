"""The paper broker: the embedded default, with its account, orders, fills and positions in the registry.

An order placed after bar t fills at the open of the next bar with a price, with the backtest's own slippage
and fee functions, so a paper fill is the fill the walk-forward measurement assumed. When that bar has not
arrived yet the order waits as `accepted`; `order_status`, `reconcile` and `settle_open_orders` fill it once
the bar is there. State lives only in the registry's database, so any process (or a re-run) sees the same
orders.

Protective exits. An order that opens a position with a relative stop loss and/or take profit leaves those
levels resting at the simulated exchange, ``fill price -/+ distance`` (`backtest.levels_at_distances`, the
kernel's own arithmetic). Every time the broker catches up with the bars it checks them exactly as the
backtest kernel does (`backtest.intrabar_exit`): on the entry bar from the open on (no gap check: the open
is the fill), then on every later bar with a price, a gap through a level filling at the open and a bar
touching both assumed to hit the stop; the exit fills at the trigger price with the kernel's slippage and
fee (`exit_fill_price`, `fee_cost`). The exit is recorded as a filled order of the same strategy (client
order id ``paper-exit-<hash of the entry's id>``, broker order id ``paper-<stop|take_profit>-<entry id>``),
so positions and cash follow the kernel through stop-outs. The levels end at the first later fill of the
same strategy in the symbol (an exit or reversal at an open comes before that bar's intrabar check, as in
the kernel). The resting levels are kept in the broker's own table `paper_protective_levels` in the registry
database (created on first use): the registry's order schema has no place for them.

Catching up means, in this order: fill every open order whose next bar has arrived (fills happen at the
open), then run the protective checks up to the latest bar. Every call that asks the broker anything
(`submit_order`, `order_status`, `settle_open_orders`, `reconcile`) catches up first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from sqlalchemy import Column, Double, Engine, Integer, MetaData, String, Table, delete, func, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from emp_pipeline.broker.interface import (
    MAX_CLIENT_ORDER_ID_LENGTH,
    BrokerError,
    Fill,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
    Position,
    ReconcileReport,
)
from emp_pipeline.domain.backtest import (
    EXIT_REASONS,
    entry_fill_price,
    exit_fill_price,
    fee_cost,
    intrabar_exit,
    levels_at_distances,
)
from emp_pipeline.registry import models
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.errors import ClientOrderIdConflictError, UnknownOrderError
from emp_pipeline.registry.orders import (
    create_order_if_absent,
    fills_for_order,
    get_order,
    orders_for_account,
    record_fill,
    update_order_status,
)
from emp_pipeline.registry.positions import get_or_create_paper_account, positions_for_account
from emp_pipeline.registry.records import OrderRecord

PROTECTIVE_EXIT_PREFIX = "paper-exit-"
_PROTECTIVE_LEVELS = Table(
    "paper_protective_levels",
    MetaData(),
    Column("client_order_id", String(MAX_CLIENT_ORDER_ID_LENGTH), primary_key=True),  # the entry order
    Column("account_id", Integer, nullable=False, index=True),
    Column("stop_distance", Double, nullable=True),
    Column("take_profit_distance", Double, nullable=True),
)

_OPEN_STATUSES = tuple(
    status.value
    for status in (
        OrderStatus.PENDING,
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    )
)


@dataclass(frozen=True)
class PriceBar:
    """One bar as the paper exchange trades it (adjusted prices, as the backtest fills)."""

    time: dt.datetime
    open: float
    high: float
    low: float


class NextOpenSource(Protocol):
    """Where paper fills get their prices: the next open for orders, whole bars for protective exits."""

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        """The last bar known now for `symbol` (the bar an order placed now reacts to)."""
        ...

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        """(bar time, open) of the first bar after `after` with a finite open, or None if not there yet."""
        ...

    def bars_since(self, symbol: str, since: dt.datetime) -> Sequence[PriceBar]:
        """Bars at or after `since` with a finite open, oldest first, up to the latest known bar.

        A source that only knows the current bar may return just that one, provided the broker is asked on
        every bar (the protective checks of earlier bars are then already done).
        """
        ...


class BarFrameOpens:
    """NextOpenSource over the canonical long bar frame (`date`, `symbol`, `open`, `high`, `low`, ...).

    Pass the prices the backtest trades: adjusted open, high and low (scaled by adj_close / close).
    """

    def __init__(self, bars: pd.DataFrame) -> None:
        missing = sorted({"open", "high", "low"} - set(bars.columns))
        if missing:
            raise BrokerError(f"paper bar frame has no {missing} column(s): protective exits need them")
        columns = ["date", "symbol", "open", "high", "low"]
        priced = bars.loc[np.isfinite(bars["open"].to_numpy(dtype="float64")), columns]
        self._by_symbol: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for symbol, group in priced.sort_values(["symbol", "date"]).groupby("symbol", sort=False):
            dates = pd.DatetimeIndex(group["date"]).tz_convert("UTC").as_unit("ns").asi8
            self._by_symbol[str(symbol)] = (
                dates,
                *(group[column].to_numpy(dtype="float64") for column in ("open", "high", "low")),
            )

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        series = self._by_symbol.get(symbol)
        if series is None or len(series[0]) == 0:
            return None
        return pd.Timestamp(series[0][-1], tz="UTC").to_pydatetime()

    def _index(self, dates: np.ndarray, at: dt.datetime, side: str) -> int:
        return int(np.searchsorted(dates, pd.Timestamp(at).tz_convert("UTC").as_unit("ns").value, side=side))

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        series = self._by_symbol.get(symbol)
        if series is None:
            return None
        dates, opens = series[0], series[1]
        index = self._index(dates, after, "right")
        if index >= len(dates):
            return None
        return pd.Timestamp(dates[index], tz="UTC").to_pydatetime(), float(opens[index])

    def bars_since(self, symbol: str, since: dt.datetime) -> Sequence[PriceBar]:
        series = self._by_symbol.get(symbol)
        if series is None:
            return ()
        dates, opens, highs, lows = series
        first = self._index(dates, since, "left")
        return tuple(
            PriceBar(pd.Timestamp(dates[k], tz="UTC").to_pydatetime(), opens[k], highs[k], lows[k])
            for k in range(first, len(dates))
        )


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


def protective_exit_id(entry_client_order_id: str) -> str:
    """The client order id of the protective exit of an entry order (one exit per entry, whichever level)."""
    digest = hashlib.sha256(entry_client_order_id.encode("utf-8")).hexdigest()[:32]
    return PROTECTIVE_EXIT_PREFIX + digest


def _create_protective_table(engine: Engine) -> None:
    try:
        _PROTECTIVE_LEVELS.create(engine, checkfirst=True)
    except DBAPIError:
        # Another process created it between the check and the CREATE: fine, as long as it is there now.
        if not inspect(engine).has_table(_PROTECTIVE_LEVELS.name):
            raise


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
        _create_protective_table(engine)
        with session_scope(engine) as session:
            account = get_or_create_paper_account(session, account_name, currency, initial_cash)
        self.account_id = account.id

    def submit_order(self, request: OrderRequest) -> OrderResult:
        """Record the order (once per client order id) and fill it at the next open if that bar exists.

        If the caller recorded the order already (create_order_if_absent), its bar time is the one filled
        after; otherwise the order reacts to the latest bar known now. A repeated id returns that order.
        Relative stop loss and take profit rest at the exchange once the order has filled (module docstring).
        """
        with session_scope(self._engine) as session:
            order = self._record(session, request)
            if order.status == OrderStatus.PENDING.value:
                update_order_status(
                    session,
                    order.client_order_id,
                    OrderStatus.ACCEPTED.value,
                    broker_order_id=f"paper-{order.id}",
                )
            if request.relative_stop_loss is not None or request.relative_take_profit is not None:
                self._rest_levels(session, order, request)
        return self._settle(request.client_order_id)

    def _record(self, session: Session, request: OrderRequest) -> OrderRecord:
        try:
            existing = get_order(session, request.client_order_id)
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
            p.quantity for p in positions_for_account(session, self.account_id) if p.symbol == request.symbol
        )
        order, _ = create_order_if_absent(
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

    def _rest_levels(self, session: Session, order: OrderRecord, request: OrderRequest) -> None:
        """Keep the order's relative levels (once: a repeated submission changes nothing)."""
        if order.status not in (*_OPEN_STATUSES, OrderStatus.FILLED.value) or order.target_position == 0:
            return  # a refused order, or one that leaves no position to protect
        table = _PROTECTIVE_LEVELS
        known = session.scalar(
            select(func.count()).select_from(table).where(table.c.client_order_id == order.client_order_id)
        )
        if not known:
            session.execute(
                table.insert().values(
                    client_order_id=order.client_order_id,
                    account_id=self.account_id,
                    stop_distance=request.relative_stop_loss,
                    take_profit_distance=request.relative_take_profit,
                )
            )

    def _catch_up(self) -> None:
        """Bring the exchange up to the latest bar: due fills at their opens, then protective exits."""
        with session_scope(self._engine) as session:
            for order in orders_for_account(session, self.account_id, _OPEN_STATUSES):
                self._fill_if_priced(session, order)
            self._apply_protective_exits(session)

    def _settle(self, client_order_id: str) -> OrderResult:
        """Catch up with the bars; return what the registry now says about the order."""
        self._catch_up()
        return self._current(client_order_id)

    def _current(self, client_order_id: str) -> OrderResult:
        with session_scope(self._engine) as session:
            try:
                order = get_order(session, client_order_id)
            except UnknownOrderError:
                return OrderResult(client_order_id, OrderStatus.NOT_FOUND)
            return self._result(session, order)

    def _fill_if_priced(self, session: Session, order: OrderRecord) -> None:
        bar = self._prices.next_open(order.symbol, order.bar_time)
        if bar is None:
            return
        bar_time, next_open = bar
        if not (math.isfinite(next_open) and next_open > 0):
            update_order_status(
                session,
                order.client_order_id,
                OrderStatus.REJECTED.value,
                error=f"no valid open at {bar_time}",
            )
            return
        side = OrderSide(order.side)
        filled = sum(fill.quantity for fill in fills_for_order(session, order.client_order_id))
        remaining = order.quantity - filled
        price, fee = paper_fill(side, remaining, next_open, self.costs)
        if order.status == OrderStatus.PENDING.value:
            update_order_status(
                session,
                order.client_order_id,
                OrderStatus.ACCEPTED.value,
                broker_order_id=f"paper-{order.id}",
            )
        record_fill(
            session,
            client_order_id=order.client_order_id,
            broker_fill_id=f"paper-{order.client_order_id}",
            price=price,
            quantity=remaining,
            filled_at=bar_time,
            fee=fee,
        )

    def _apply_protective_exits(self, session: Session) -> None:
        """Check every resting stop and take profit over the bars since its entry (module docstring)."""
        table = _PROTECTIVE_LEVELS
        resting = session.execute(select(table).where(table.c.account_id == self.account_id)).all()
        for row in resting:
            order = get_order(session, row.client_order_id)
            if order.status in _OPEN_STATUSES:
                continue  # not filled yet: nothing to protect so far
            done = delete(table).where(table.c.client_order_id == row.client_order_id)
            fills = fills_for_order(session, order.client_order_id)
            if order.status != OrderStatus.FILLED.value or not fills:
                session.execute(done)  # rejected or cancelled: no position was opened
                continue
            entry_time, entry_price = fills[0].filled_at, fills[0].price
            direction = 1 if order.target_position > 0 else -1
            stop, take_profit = levels_at_distances(
                entry_price,
                direction,
                math.inf if row.stop_distance is None else row.stop_distance,
                math.inf if row.take_profit_distance is None else row.take_profit_distance,
            )
            superseded = self._next_fill_time(session, order, entry_time)
            for bar in self._prices.bars_since(order.symbol, entry_time):
                if superseded is not None and bar.time >= superseded:
                    # Another order of the strategy changed the position at this open: the levels are
                    # settled for good, so drop them (else every later call rescans this entry).
                    session.execute(done)
                    break
                reason, trigger = intrabar_exit(
                    direction, bar.open, bar.high, bar.low, stop, take_profit, bar.time != entry_time
                )
                if reason >= 0:
                    self._record_protective_exit(session, order, direction, reason, trigger, bar.time)
                    session.execute(done)
                    break
            else:
                if superseded is not None:
                    session.execute(done)

    def _next_fill_time(self, session: Session, order: OrderRecord, after: dt.datetime) -> dt.datetime | None:
        """When the strategy's position in the symbol next changed through another order, if it has."""
        same_strategy = (
            models.Order.strategy_id.is_(None)
            if order.strategy_id is None
            else models.Order.strategy_id == order.strategy_id
        )
        return session.scalar(
            select(func.min(models.Fill.filled_at))
            .join(models.Order, models.Fill.order_id == models.Order.id)
            .where(
                models.Order.account_id == order.account_id,
                models.Order.symbol == order.symbol,
                models.Order.id != order.id,
                same_strategy,
                models.Fill.filled_at > after,
            )
        )

    def _record_protective_exit(
        self,
        session: Session,
        entry: OrderRecord,
        direction: int,
        reason: int,
        trigger: float,
        bar_time: dt.datetime,
    ) -> None:
        """The stop or take profit fill, as the kernel books it: trigger price less slippage, fee on top."""
        quantity = abs(entry.target_position)
        price = float(exit_fill_price(trigger, direction, self.costs.slippage_bps))
        exit_id = protective_exit_id(entry.client_order_id)
        _, created = create_order_if_absent(
            session,
            client_order_id=exit_id,
            account_id=entry.account_id,
            strategy_id=entry.strategy_id,
            symbol=entry.symbol,
            side=(OrderSide.SELL if direction > 0 else OrderSide.BUY).value,
            quantity=quantity,
            bar_time=bar_time,
            target_position=entry.target_position - direction * quantity,
        )
        if not created:
            return  # another process recorded this exit first
        update_order_status(
            session,
            exit_id,
            OrderStatus.ACCEPTED.value,
            broker_order_id=f"paper-{EXIT_REASONS[reason]}-{entry.id}",
        )
        record_fill(
            session,
            client_order_id=exit_id,
            broker_fill_id=f"paper-{exit_id}",
            price=price,
            quantity=quantity,
            filled_at=bar_time,
            fee=float(fee_cost(quantity * price, self.costs.fee_bps)),
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
            for fill in fills_for_order(session, order.client_order_id)
        )
        return OrderResult(
            order.client_order_id, OrderStatus(order.status), order.broker_order_id, fills, order.error
        )

    def order_status(self, client_order_id: str) -> OrderResult:
        return self._settle(client_order_id)

    def settle_open_orders(self) -> tuple[OrderResult, ...]:
        """Catch up with the bars (call it on every bar); returns what became of the orders that were open."""
        with session_scope(self._engine) as session:
            open_ids = [
                order.client_order_id
                for order in orders_for_account(session, self.account_id, _OPEN_STATUSES)
            ]
        self._catch_up()
        return tuple(self._current(client_order_id) for client_order_id in open_ids)

    def positions(self) -> tuple[Position, ...]:
        with session_scope(self._engine) as session:
            return tuple(
                Position(p.symbol, p.quantity, p.avg_price)
                for p in positions_for_account(session, self.account_id)
            )

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        self._catch_up()
        orders = {client_order_id: self._current(client_order_id) for client_order_id in client_order_ids}
        return ReconcileReport(self.positions(), orders)

    def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""
