"""The paper broker: the embedded default, with its account, orders, fills and positions in the registry.

An order placed after bar t fills at the open of the next bar with a price, with the backtest's own slippage
and fee functions, so a paper fill is the fill the walk-forward measurement assumed. When that bar has not
arrived yet the order waits as `accepted`; `order_status`, `reconcile` and `settle_open_orders` fill it once
the bar is there. State lives only in the registry's database, so any process (or a re-run) sees the same
orders.

Fills and protective exits come from the backtest kernel's own step (`sleeve.step_sleeve`, run without its
decision phase): for each book (one strategy's position in one symbol) the broker walks the bars, hands the
step the orders due at each open as its pending order and the book's resting levels as its stop and take
profit, and records the legs it fills. So an order fills at the next open with the kernel's slippage and fee
(a reversal is the kernel's exit and entry legs at one price, recorded as one fill with both fees), and an
order that opens a position with a relative stop loss and/or take profit leaves those levels resting at
``fill price -/+ distance``, checked on the entry bar from the open on (no gap check: the open is the fill),
then on every later bar with a price, a gap through a level filling at the open and a bar touching both
assumed to hit the stop. A protective exit is recorded as a filled order of the same strategy (client order
id ``paper-exit-<hash of the entry's id>``, broker order id ``paper-<stop|take_profit>-<entry id>``), so
positions and cash follow the kernel through stop-outs. The levels end at the next fill of the book (an
exit or reversal at an open comes before that bar's intrabar check, as in the kernel). The resting levels
are kept in the registry's `paper_protective_levels` (the orders aggregate: `rest_protective_levels`,
`open_orders_and_resting_levels`, `end_protective_levels`).

Prices are bids: a buy leg pays the bar's ``spread`` on top (`PriceBar.spread`, from the bar frame's
``spread`` column, which the factory fills with `financing.bar_spreads`, the backtest's own model), and a
short's levels trigger on the ask. Overnight swaps are booked as the kernel charges them: every catch-up
ends by booking the rollovers the account's positions were held across up to each symbol's latest bar, once
each, into the registry's financing ledger and the account's cash (`paper_financing`; the instruments'
terms are given to the broker).

Catching up means walking each book with open orders whose next bar has arrived or resting levels, bar by
bar up to the latest bar: the orders due at a bar's open, then that bar's protective check. It reads what
the walk needs in a few set-based statements (open orders, resting levels with the position they protect and
their entries' fills, the due books' positions, filled quantities), walks the books in memory, and writes the
fills in the same transaction, so its cost does not grow with a query per book and bar. Levels record the
position they protect when their entry fills (`arm_protective_levels`), so a bar that only checks them sums
no fills; a book found holding another position (a fill recorded outside the broker) has its levels ended.
Every call that asks the broker anything (`submit_order`, `order_status`, `settle_open_orders`,
`reconcile`) catches up first, in the transaction that answers it; `submit_orders` (a bar's orders in one
transaction) catches up after its first order and again only after an order that gives the walk new work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
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
from emp_pipeline.broker.paper_financing import PaperFinancing
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.sleeve import (
    ENTRY_LEG,
    EXIT_LEG,
    EXIT_REASONS,
    FILL,
    NO_SWAP_TERMS,
    PROTECT,
    PROTECTIVE_LEG,
    FillCosts,
    SleeveRules,
    SleeveState,
    levels_at_distances,
    new_fills,
    start_sleeve,
    step_sleeve,
)
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.errors import ClientOrderIdConflictError, UnknownOrderError
from emp_pipeline.registry.orders import (
    accept_order,
    arm_protective_levels,
    create_order_if_absent,
    end_protective_levels,
    filled_quantities,
    get_order,
    open_orders_and_resting_levels,
    orders_with_fills,
    record_fill,
    rest_protective_levels,
    update_order_status,
)
from emp_pipeline.registry.positions import (
    book_positions,
    get_or_create_paper_account,
    positions_for_account,
)
from emp_pipeline.registry.records import OrderRecord, RestingLevels

PROTECTIVE_EXIT_PREFIX = "paper-exit-"

_OPEN_STATUSES = tuple(
    status.value
    for status in (
        OrderStatus.PENDING,
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    )
)


_NO_RULES = SleeveRules(math.nan, math.nan, math.nan, 0)  # the broker never runs the decision phase


def _bar_key(time: dt.datetime) -> int:
    """The step's bar key of a bar time: nanoseconds since the epoch (increasing with time)."""
    return int(pd.Timestamp(time).value)


@dataclass(frozen=True)
class PriceBar:
    """One bar as the paper exchange trades it (adjusted prices, as the backtest fills)."""

    time: dt.datetime
    open: float
    high: float
    low: float
    spread: float = 0.0  # ask - bid (the prices are bids): what a buy pays on top (`financing`)


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

    def close_before(self, symbol: str, at: dt.datetime) -> float | None:
        """The close of the last bar opening before `at` (a percent swap's base, `paper_financing`)."""
        ...


class BarFrameOpens:
    """NextOpenSource over the canonical long bar frame (`date`, `symbol`, `open`, `high`, `low`, ...).

    Pass the prices the backtest trades: adjusted open, high and low (scaled by adj_close / close).
    """

    def __init__(self, bars: pd.DataFrame) -> None:
        missing = sorted({"open", "high", "low"} - set(bars.columns))
        if missing:
            raise BrokerError(f"paper bar frame has no {missing} column(s): protective exits need them")
        if "spread" not in bars.columns:
            bars = bars.assign(spread=0.0)
        columns = ["date", "symbol", "open", "high", "low", "spread"]
        priced = bars.loc[np.isfinite(bars["open"].to_numpy(dtype="float64")), columns]
        ordered = priced.sort_values(["symbol", "date"])
        closes = bars["close"] if "close" in bars.columns else pd.Series(np.nan, index=bars.index)
        self._closes = {  # per symbol, on the dates' order below
            str(symbol): group.to_numpy(dtype="float64")
            for symbol, group in closes.loc[ordered.index].groupby(ordered["symbol"].to_numpy(), sort=False)
        }
        self._by_symbol: dict[str, tuple[np.ndarray, ...]] = {}
        for symbol, group in priced.sort_values(["symbol", "date"]).groupby("symbol", sort=False):
            dates = pd.DatetimeIndex(group["date"]).tz_convert("UTC").as_unit("ns").asi8
            self._by_symbol[str(symbol)] = (
                dates,
                *(group[column].to_numpy(dtype="float64") for column in ("open", "high", "low", "spread")),
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
        dates, opens, highs, lows, spreads = series
        first = self._index(dates, since, "left")
        return tuple(
            PriceBar(
                pd.Timestamp(dates[k], tz="UTC").to_pydatetime(), opens[k], highs[k], lows[k], spreads[k]
            )
            for k in range(first, len(dates))
        )

    def close_before(self, symbol: str, at: dt.datetime) -> float | None:
        series = self._by_symbol.get(symbol)
        if series is None:
            return None
        index = self._index(series[0], at, "left") - 1
        return float(self._closes[symbol][index]) if index >= 0 else None


def protective_exit_id(entry_client_order_id: str) -> str:
    """The client order id of the protective exit of an entry order (one exit per entry, whichever level)."""
    digest = hashlib.sha256(entry_client_order_id.encode("utf-8")).hexdigest()[:32]
    return PROTECTIVE_EXIT_PREFIX + digest


@dataclass(frozen=True)
class _OrderFill:
    """An order's fill at an open, as the walk found it (recorded after the walk)."""

    order: OrderRecord
    quantity: float
    price: float
    fee: float
    at: dt.datetime


@dataclass(frozen=True)
class _ProtectiveFill:
    """A stop or take profit the walk filled inside a bar, against the entry whose levels rested."""

    entry: OrderRecord
    quantity: float
    direction: int
    reason: int
    price: float
    fee: float
    at: dt.datetime


@dataclass
class _BookWalk:
    """What walking one book produced: the fills in the order they happened, the levels that ended, and the
    levels left resting with the position they now protect (entry id, units) when that is new."""

    fills: list[_OrderFill | _ProtectiveFill]
    ended: list[str]
    armed: tuple[str, float] | None


class PaperBroker:
    """Broker whose exchange is the bar history: deterministic, offline, and backed by the registry."""

    def __init__(
        self,
        engine: Engine,
        prices: NextOpenSource,
        *,
        costs: Costs | None = None,
        account_name: str = "paper",
        currency: str = "USD",
        initial_cash: float = DEFAULT_CAPITAL,
        instruments: Mapping[str, InstrumentMeta] | None = None,
    ) -> None:
        self._engine = engine
        self._prices = prices
        self._financing = PaperFinancing(instruments or {})  # without terms: no swaps, as the kernel
        self.costs = costs or Costs()
        self._fill_costs = self.costs.fill_costs()
        self._fills = new_fills()  # the step's scratch record: what a bar filled, read before the next bar
        with session_scope(engine) as session:
            account = get_or_create_paper_account(session, account_name, currency, initial_cash)
        self.account_id = account.id

    def submit_order(self, request: OrderRequest) -> OrderResult:
        """Record the order (once per client order id) and fill it at the next open if that bar exists.

        If the caller recorded the order already (create_order_if_absent), its bar time is the one filled
        after; otherwise the order reacts to the latest bar known now. A repeated id returns that order.
        Relative stop loss and take profit rest at the exchange once the order has filled (module docstring).
        """
        return self.submit_orders([request])[0]

    def submit_orders(self, requests: Sequence[OrderRequest]) -> list[OrderResult]:
        """`submit_order` for each request in turn, in one transaction (all or none are recorded).

        Why: a live bar (or a replayed one) places several orders; one transaction pays the session, the
        account's positions and the answers once. The outcome is that of the calls one after another: the
        catch-up after an order only runs again when that order gave it work (it is due now, or it is no
        longer open, so levels it rests may need arming); otherwise the previous catch-up in this
        transaction already left nothing to do. An order this transaction created and no catch-up touched
        is answered from the record it holds (accepted, no fills), as a read would answer.
        """
        with session_scope(self._engine) as session:
            held: dict[str, dict[str, float]] = {}  # the account's net positions, read again after fills

            def net_positions() -> dict[str, float]:
                if not held:
                    held["now"] = _net_positions(session, self.account_id)
                return held["now"]

            fresh: dict[str, OrderRecord] = {}
            caught_up = False
            for request in requests:
                order, created = self._record(session, request, net_positions)
                if order.status == OrderStatus.PENDING.value:
                    order = accept_order(session, order.client_order_id, f"paper-{order.id}")
                if request.relative_stop_loss is not None or request.relative_take_profit is not None:
                    self._rest_levels(session, order, request)
                if created:
                    fresh[order.client_order_id] = order
                if caught_up and order.status in _OPEN_STATUSES and not self._is_due(order):
                    continue
                _, touched = self._catch_up(session)
                caught_up = True
                if touched:
                    held.clear()
                    for client_order_id in touched:
                        fresh.pop(client_order_id, None)
            ids = [request.client_order_id for request in requests]
            read = self._results(session, [i for i in dict.fromkeys(ids) if i not in fresh])
            known = {result.client_order_id: result for result in read}
            for client_order_id, order in fresh.items():
                known[client_order_id] = OrderResult(
                    client_order_id, OrderStatus(order.status), order.broker_order_id, (), order.error
                )
            return [known[client_order_id] for client_order_id in ids]

    def _is_due(self, order: OrderRecord) -> bool:
        """Whether the bar after the order's has arrived (a catch-up would fill or reject it now)."""
        return self._prices.next_open(order.symbol, order.bar_time) is not None

    def _record(
        self, session: Session, request: OrderRequest, net_positions: Callable[[], dict[str, float]]
    ) -> tuple[OrderRecord, bool]:
        """The request's order and whether this call created it (a new order's target adds it to the
        account's net position in its symbol, from `net_positions`)."""
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
            return existing, False
        bar_time = self._prices.latest_bar_time(request.symbol)
        if bar_time is None:
            raise BrokerError(
                f"paper broker has no bars for {request.symbol!r}: load market bars for it before trading it"
            )
        return create_order_if_absent(
            session,
            client_order_id=request.client_order_id,
            account_id=self.account_id,
            symbol=request.symbol,
            side=request.side.value,
            quantity=request.quantity,
            bar_time=bar_time,
            target_position=net_positions().get(request.symbol, 0) + request.side.sign * request.quantity,
            order_type=request.order_type,
        )

    def _rest_levels(self, session: Session, order: OrderRecord, request: OrderRequest) -> None:
        """Keep the order's relative levels (once: a repeated submission changes nothing)."""
        if order.status not in (*_OPEN_STATUSES, OrderStatus.FILLED.value) or order.target_position == 0:
            return  # a refused order, or one that leaves no position to protect
        rest_protective_levels(
            session,
            client_order_id=order.client_order_id,
            account_id=self.account_id,
            stop_distance=request.relative_stop_loss,
            take_profit_distance=request.relative_take_profit,
        )

    def _catch_up(self, session: Session) -> tuple[list[OrderRecord], set[str]]:
        """Bring the exchange up to the latest bar, book by book (module docstring); returns the orders that
        were open before it and the client order ids whose status or fills it wrote.

        What the walk needs is read in a handful of set-based statements (the open orders, the resting
        levels with the position they protect and their entries' fills, the due books' positions and
        filled quantities), the books are walked in memory through the compiled step, and the fills are
        written in this session's one transaction.
        """
        open_orders, resting = open_orders_and_resting_levels(session, self.account_id, _OPEN_STATUSES)
        due: dict[tuple[str | None, str], list[tuple[dt.datetime, OrderRecord]]] = {}
        touched: set[str] = set()
        for order in open_orders:
            bar = self._due_bar(session, order, touched)
            if bar is not None:
                due.setdefault((order.strategy_id, order.symbol), []).append((bar, order))
        levels = {row.entry.client_order_id: row for row in resting}
        protected: dict[tuple[str | None, str], RestingLevels] = {}
        ended: list[str] = []
        for client_order_id, row in levels.items():
            if row.entry.status in _OPEN_STATUSES:
                continue  # not filled yet: its levels rest once it fills
            if _protects(row):
                protected[(row.entry.strategy_id, row.entry.symbol)] = row
            else:  # refused, or left no position to protect
                ended.append(client_order_id)
        # Books with orders due (and levels not armed yet) need their position from their fills; a book
        # that only has armed levels holds the position they protect.
        unarmed = {book for book, row in protected.items() if row.position is None}
        held = book_positions(session, self.account_id, {symbol for _, symbol in set(due) | unarmed})
        filled = filled_quantities(session, [order.id for orders in due.values() for _, order in orders])
        for book in sorted(set(due) | set(protected), key=lambda b: (b[0] or "", b[1])):
            row = protected.get(book)
            position = held.get(book, 0.0) if book in due or book in unarmed else row.position
            assert position is not None
            if row is not None and row.position is not None and not _same_position(position, row.position):
                ended.append(row.entry.client_order_id)  # the book filled outside the broker since
                row = None
            walk = self._walk_book(book, position, due.get(book, []), filled, row, levels)
            if walk.fills and row is not None and book not in due and book not in unarmed:
                # A protective exit on armed levels: first make sure the book still holds their position.
                now = book_positions(session, self.account_id, [book[1]]).get(book, 0.0)
                if not _same_position(now, position):
                    walk = _BookWalk([], [row.entry.client_order_id], None)
            for fill in walk.fills:
                if isinstance(fill, _OrderFill):
                    _record_order_fill(session, fill)
                    touched.add(fill.order.client_order_id)
                else:
                    touched.add(_record_protective_exit(session, fill))
            ended.extend(walk.ended)
            if walk.armed is not None:
                arm_protective_levels(session, *walk.armed)
        end_protective_levels(session, ended)
        self._financing.book(session, self.account_id, self._prices)
        return open_orders, touched

    def _due_bar(self, session: Session, order: OrderRecord, touched: set[str]) -> dt.datetime | None:
        """The bar whose open fills the order, or None while it has not arrived (a bad open rejects it and
        adds it to `touched`)."""
        bar = self._prices.next_open(order.symbol, order.bar_time)
        if bar is None:
            return None
        bar_time, next_open = bar
        if not (math.isfinite(next_open) and next_open > 0):
            update_order_status(
                session,
                order.client_order_id,
                OrderStatus.REJECTED.value,
                error=f"no valid open at {bar_time}",
            )
            touched.add(order.client_order_id)
            return None
        return bar_time

    def _walk_book(
        self,
        book: tuple[str | None, str],
        position: float,
        due: list[tuple[dt.datetime, OrderRecord]],
        filled: dict[int, float],
        protected: RestingLevels | None,
        levels: dict[str, RestingLevels],
    ) -> _BookWalk:
        """Step the book through the bars from its earliest due order or resting entry, in memory."""
        _, symbol = book
        state = start_sleeve(0.0)._replace(units=position, direction=int(np.sign(position)))
        starts = [bar for bar, _ in due]
        if protected is not None:
            assert protected.entry_filled_at is not None
            state = _with_levels(state, protected)
            starts.append(protected.entry_filled_at)
        active = protected.entry if protected is not None else None
        walk = _BookWalk([], [], None)
        fills, costs = self._fills[0], self._fill_costs
        for bar in self._prices.bars_since(symbol, min(starts)):
            orders = sorted((order for when, order in due if when == bar.time), key=lambda order: order.id)
            key = _bar_key(bar.time)
            for k, order in enumerate(orders):
                remaining = order.quantity - filled.get(order.id, 0.0)
                state = _with_order(state, order, remaining, levels.get(order.client_order_id))
                last = k == len(orders) - 1
                phases = FILL | (PROTECT if last and key >= state.entry_bar else 0)
                state, legs = _step(state, key, bar, costs, phases, fills)
                if legs & (EXIT_LEG | ENTRY_LEG):
                    walk.fills.append(_order_fill(order, remaining, fills, legs, bar.time))
                    active = order if legs & ENTRY_LEG and order.client_order_id in levels else None
                if legs & PROTECTIVE_LEG:
                    walk.fills.append(_protective_fill(order if active is order else active, fills, bar.time))
                    active = None
            if not orders and state.direction != 0 and key >= state.entry_bar:
                state, legs = _step(state, key, bar, costs, PROTECT, fills)
                if legs & PROTECTIVE_LEG and active is not None:
                    walk.fills.append(_protective_fill(active, fills, bar.time))
                    active = None
        walk.ended.extend(
            order.client_order_id
            for _, order in due
            if order.client_order_id in levels and order is not active
        )
        if protected is not None and protected.entry is not active:
            walk.ended.append(protected.entry.client_order_id)
        rested_before = protected is not None and protected.entry is active and protected.position is not None
        if active is not None and not rested_before:
            walk.armed = (active.client_order_id, float(state.units))
        return walk

    def _results(self, session: Session, client_order_ids: Sequence[str]) -> list[OrderResult]:
        """What the registry now says about each order (NOT_FOUND for an id it does not know)."""
        known = orders_with_fills(session, client_order_ids)
        results = []
        for client_order_id in client_order_ids:
            if client_order_id not in known:
                results.append(OrderResult(client_order_id, OrderStatus.NOT_FOUND))
                continue
            order, fills = known[client_order_id]
            side = OrderSide(order.side)
            reported = tuple(
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
                for fill in fills
            )
            results.append(
                OrderResult(
                    order.client_order_id,
                    OrderStatus(order.status),
                    order.broker_order_id,
                    reported,
                    order.error,
                )
            )
        return results

    def order_status(self, client_order_id: str) -> OrderResult:
        with session_scope(self._engine) as session:
            self._catch_up(session)
            return self._results(session, [client_order_id])[0]

    def settle_open_orders(self) -> tuple[OrderResult, ...]:
        """Catch up with the bars (call it on every bar); returns what became of the orders that were open."""
        with session_scope(self._engine) as session:
            was_open, _ = self._catch_up(session)
            return tuple(self._results(session, [order.client_order_id for order in was_open]))

    def positions(self) -> tuple[Position, ...]:
        with session_scope(self._engine) as session:
            return tuple(
                Position(p.symbol, p.quantity, p.avg_price)
                for p in positions_for_account(session, self.account_id)
            )

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        with session_scope(self._engine) as session:
            self._catch_up(session)
            results = self._results(session, list(client_order_ids))
            positions = tuple(
                Position(p.symbol, p.quantity, p.avg_price)
                for p in positions_for_account(session, self.account_id)
            )
        return ReconcileReport(positions, {result.client_order_id: result for result in results})

    def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""


# ------------------------------------------------------------------ the walk's pieces


def _net_positions(session: Session, account_id: int) -> dict[str, float]:
    """The account's non-flat net positions by symbol."""
    return {p.symbol: p.quantity for p in positions_for_account(session, account_id)}


def _protects(row: RestingLevels) -> bool:
    """Whether a filled entry's levels rest: it filled and opened a position (later fills end them)."""
    return (
        row.entry.status == OrderStatus.FILLED.value
        and row.entry_price is not None
        and row.entry.target_position != 0
    )


def _same_position(held: float, protected: float) -> bool:
    """Whether the book still holds the position its levels protect (sums of fills may differ in the last
    bits from the step's arithmetic: same side and equal to a billionth)."""
    return np.sign(held) == np.sign(protected) and abs(held - protected) <= 1e-9 * abs(protected)


def _distances(row: RestingLevels | None) -> tuple[float, float]:
    """A row's (stop, take profit) distances as the step holds them (none: never touched)."""
    if row is None:
        return math.inf, math.inf
    return tuple(  # type: ignore[return-value]
        math.inf if d is None else float(d) for d in (row.stop_distance, row.take_profit_distance)
    )


def _with_levels(state: SleeveState, row: RestingLevels) -> SleeveState:
    """The book's position protected by a resting entry, as the step holds levels after an entry."""
    assert row.entry_price is not None and row.entry_filled_at is not None
    stop, take_profit = levels_at_distances(row.entry_price, state.direction, *_distances(row))
    return state._replace(
        entry_price=float(row.entry_price),
        entry_bar=_bar_key(row.entry_filled_at),
        stop=float(stop),
        take_profit=float(take_profit),
    )


def _with_order(
    state: SleeveState, order: OrderRecord, remaining: float, row: RestingLevels | None
) -> SleeveState:
    """The order as the step's pending order: an exit of the position, then an entry to the order's target
    (or, on the same side, a resize), with the order's resting distances (none: never touched)."""
    held = state.units
    target = held + OrderSide(order.side).sign * remaining
    side = int(np.sign(target))
    exits = held != 0 and side != int(np.sign(held))
    enters = side != 0 and (exits or held == 0 or target != held)
    stop_distance, take_profit_distance = _distances(row)
    return state._replace(
        pending_exit=bool(exits),
        pending_entry=side if enters else 0,
        pending_units=float(target),
        pending_stop_distance=stop_distance,
        pending_take_profit_distance=take_profit_distance,
    )


def _step(
    state: SleeveState, key: int, bar: PriceBar, costs: FillCosts, phases: int, fills: np.record
) -> tuple[SleeveState, int]:
    """The kernel's step on one bar, without its decision phase (the broker decides nothing)."""
    return step_sleeve(
        state, key, float(bar.open), float(bar.high), float(bar.low), math.nan, math.nan, float(bar.spread),
        0.0, 0, _NO_RULES, costs, NO_SWAP_TERMS, phases, fills,
    )  # fmt: skip


def _order_fill(
    order: OrderRecord, remaining: float, fills: np.record, legs: int, at: dt.datetime
) -> _OrderFill:
    """An order's fill at the open: the step's exit and entry legs, one price, the legs' fees together."""
    price = fills.entry_price if legs & ENTRY_LEG else fills.exit_price
    fee = (fills.exit_fee if legs & EXIT_LEG else 0.0) + (fills.entry_fee if legs & ENTRY_LEG else 0.0)
    return _OrderFill(order, remaining, float(price), float(fee), at)


def _protective_fill(entry: OrderRecord, fills: np.record, at: dt.datetime) -> _ProtectiveFill:
    return _ProtectiveFill(
        entry,
        abs(float(fills.protective_units)),
        int(fills.protective_direction),
        int(fills.protective_reason),
        float(fills.protective_price),
        float(fills.protective_fee),
        at,
    )


def _record_order_fill(session: Session, fill: _OrderFill) -> None:
    order = fill.order
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
        price=fill.price,
        quantity=fill.quantity,
        filled_at=fill.at,
        fee=fill.fee,
    )


def _record_protective_exit(session: Session, fill: _ProtectiveFill) -> str:
    """The stop or take profit the step filled, as an order of the entry's strategy with its fill; returns
    the exit's client order id."""
    entry = fill.entry
    exit_id = protective_exit_id(entry.client_order_id)
    _, created = create_order_if_absent(
        session,
        client_order_id=exit_id,
        account_id=entry.account_id,
        strategy_id=entry.strategy_id,
        symbol=entry.symbol,
        side=(OrderSide.SELL if fill.direction > 0 else OrderSide.BUY).value,
        quantity=fill.quantity,
        bar_time=fill.at,
        target_position=entry.target_position - fill.direction * fill.quantity,
    )
    if not created:
        return exit_id  # another process recorded this exit first
    update_order_status(
        session,
        exit_id,
        OrderStatus.ACCEPTED.value,
        broker_order_id=f"paper-{EXIT_REASONS[fill.reason]}-{entry.id}",
    )
    record_fill(
        session,
        client_order_id=exit_id,
        broker_fill_id=f"paper-{exit_id}",
        price=fill.price,
        quantity=fill.quantity,
        filled_at=fill.at,
        fee=fill.fee,
    )
    return exit_id
