"""One live tick, without Dagster: the latest bar in the store -> the champions' decisions -> orders.

Steps, in this order, each a reason the next one can be trusted:

1. **Load** bars, features and regimes exactly as the assets stored them, up to the last bar all three have.
2. **Reconcile**: first let the broker catch up with the market (`reconcile()`: the paper broker fills what
   is due and applies the stops and take profits the bars hit, recording those exits, so positions follow
   the kernel through stop-outs), then ask it about every order the registry still considers open (by
   client order id) and record status and fills. Nothing is sent before this, so an order whose answer was
   lost in an earlier run is known before anything could be sent again.
3. **Decide** per active strategy and symbol with the domain's pure code (`decide_orders`): the genome's own
   signals, the backtest kernel's own step (`sleeve.step_sleeve`) folded in one compiled call over the bars
   since the strategy started trading, the target position, the order that reaches it. The fold pays the
   costs the strategy was measured with (its evolution run's `Costs`, read from the registry with it), not
   the current cost settings: the kernel equity it sizes from is then the one its backtest had.
4. **Check risk** against the account (registry cash and positions marked at the close, kill switch, the
   day's starting equity from the journal) and journal every decision with its reason.
5. **Submit exactly once**: each order is recorded (`create_order_if_absent`, status pending) *before* it is
   sent, under an id derived from (strategy, symbol, bar, target); only the run whose insert created the
   row sends it. A run that finds the row already there leaves a fresh one to its creator and reconciles a
   stale one (sending it only if the broker provably never saw it, under the same id).
6. **Record** the broker's answers (status, fills; positions and cash follow from the fills) and the equity.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from emp_pipeline.broker.interface import (
    OPEN_STATUSES,
    Broker,
    BrokerError,
    OrderRequest,
    OrderResult,
    OrderSide,
    OrderStatus,
)
from emp_pipeline.domain.backtest import MarketArrays, market_arrays
from emp_pipeline.domain.calendars import trading_day_of, trading_day_window
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.execution import (
    OrderIntent,
    order_for_target,
    sleeve_rules,
    sleeve_target,
)
from emp_pipeline.domain.genome import (
    FeaturePanel,
    Genome,
    feature_panel,
    genome_from_dict,
    panel_signals,
    validate_genome,
)
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.risk import (
    AccountSnapshot,
    ProposedOrder,
    RiskDecision,
    RiskLimits,
    RiskVerdict,
    account_equity,
    check_orders,
)
from emp_pipeline.domain.sleeve import fold_sleeve, start_sleeve
from emp_pipeline.live.journal import LiveJournal
from emp_pipeline.registry.control import KILL_SWITCH, flag_enabled
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.errors import ClientOrderIdConflictError, InvalidOrderTransitionError
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.orders import (
    create_order_if_absent,
    get_order,
    orders_for_account,
    record_fill,
    update_order_status,
)
from emp_pipeline.registry.positions import get_account, positions_for_account, strategy_positions
from emp_pipeline.registry.research import activation_time, active_strategies
from emp_pipeline.storage.datasets import MARKET_BARS, MARKET_REGIMES, PERCEPTION_INPUTS, SENSORY_FEATURES
from emp_pipeline.storage.parquet_frames import through

log = logging.getLogger(__name__)

ATR_COLUMN = "what_atr_14"


class LiveExecutionError(RuntimeError):
    """A live tick could not do all it had to; the message lists what failed and what was recorded."""


class LiveInputError(LiveExecutionError):
    """The stored bars, features or regimes cannot drive a decision; materialise them first."""


@dataclass(frozen=True)
class LiveConfig:
    """How the live book trades (each strategy's costs come from the registry with it, see `StrategyBook`).

    `start` anchors each strategy's simulated track record (the kernel state is replayed from the first bar
    on or after it); None uses the time the strategy became active. `as_of` makes the tick decide on the
    newest stored bar at or before it instead of the newest stored bar (paper-trading a stored history
    day by day, as the demo does). `capital_per_strategy` is the account
    currency behind 1.0 of a strategy's kernel equity; None splits the account's initial cash equally.
    """

    limits: RiskLimits = field(default_factory=RiskLimits)
    start: dt.datetime | None = None
    capital_per_strategy: float | None = None
    stale_order_seconds: float = 120.0
    as_of: dt.datetime | None = None


@dataclass(frozen=True)
class MarketView:
    """Everything the decisions read, cut at the decision bar: the long frames and the bar's closes."""

    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame
    bar_time: pd.Timestamp
    closes: Mapping[str, float]
    # Terms whose spread and swaps the fold charges, as the backtest does (`financing`); none without them.
    instruments: Mapping[str, InstrumentMeta] = field(default_factory=dict)

    @cached_property
    def panel(self) -> FeaturePanel:
        """Features and regimes on the date x symbol grid, built once per tick for every strategy."""
        return feature_panel(self.features, self.regimes)

    @cached_property
    def prices(self) -> MarketArrays:
        """Adjusted OHLC and ATR on the panel's grid, exactly as the backtest builds them."""
        return market_arrays(
            self.bars, self.features, ATR_COLUMN, self.panel.dates, self.panel.symbols, self.instruments
        )


@dataclass(frozen=True)
class StrategyBook:
    """An active strategy as the tick trades it: its genome, the costs it was measured with, and the first
    bar of its simulated track record."""

    strategy_id: str
    genome: Genome
    start: pd.Timestamp
    costs: Costs


@dataclass
class LiveTickReport:
    bar_time: pd.Timestamp | None
    intraday: bool = False  # the stored bars are intraday (an hour is then named with its time)
    strategies: int = 0
    strategy_ids: tuple[str, ...] = ()
    reconciled: dict[str, str] = field(default_factory=dict)
    decisions: list[dict[str, object]] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)
    left_to_other_run: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    equity: float | None = None
    day_start_equity: float | None = None
    kill_switch: bool = False

    @property
    def rejected(self) -> list[dict[str, object]]:
        return [d for d in self.decisions if d["verdict"] != RiskVerdict.APPROVED.value]


# ------------------------------------------------------------------------------------------- inputs


def load_market_view(
    data_dir: Path | str, start: pd.Timestamp | None = None, as_of: dt.datetime | None = None
) -> MarketView:
    """Bars, features and regimes from the store, cut at the last bar time all three have (at or before
    ``as_of`` when given)."""
    end = through(pd.Timestamp(as_of).tz_convert("UTC")) if as_of else None
    frames = {dataset: dataset.read(data_dir, start, end) for dataset in PERCEPTION_INPUTS}
    empty = [
        dataset.name for dataset, frame in frames.items() if frame.empty or "symbol" not in frame.columns
    ]
    if empty:
        raise LiveInputError(
            f"no stored rows in {empty} under {data_dir}: materialise "
            f"{', '.join(dataset.name for dataset in PERCEPTION_INPUTS)} for the latest bar before running "
            "the live job"
        )
    bar_time = min(pd.Timestamp(frame["date"].max()) for frame in frames.values())
    cut = {
        name: frame.loc[frame["date"] <= bar_time].reset_index(drop=True) for name, frame in frames.items()
    }
    bars = cut[MARKET_BARS]
    last = bars.loc[bars["date"] == bar_time]
    # Marks and sizing on the adjusted scale, as the kernel's (adj_close; equal to close on the newest bar
    # of back-adjusted data).
    closes = dict(zip(last["symbol"].astype(str), last["adj_close"].astype(float), strict=True))
    return MarketView(bars, cut[SENSORY_FEATURES], cut[MARKET_REGIMES], bar_time, closes)


# ------------------------------------------------------------------------------------------- decisions


def decide_orders(
    book: StrategyBook,
    market: MarketView,
    held: Mapping[str, float],
    instruments: Mapping[str, InstrumentMeta],
    capital: float,
) -> tuple[list[OrderIntent], list[str]]:
    """The orders one strategy needs at the market's last bar, plus notes on symbols it could not trade.

    Pure: the same frames, holdings and parameters always give the same orders. The market is the whole
    stored universe, as in the backtest (one equal sleeve per instrument).
    """
    # The genome's own signal code on the shared panel: what the backtest's population_signals runs.
    signals = panel_signals(validate_genome(book.genome), market.panel)
    prices = market.prices
    live_rows = np.flatnonzero(prices.dates >= book.start)
    notes: list[str] = []
    if len(live_rows) == 0 or prices.dates[-1] != market.bar_time:
        return [], [f"{book.strategy_id}: not trading yet (starts {book.start.date()})"]
    first = int(live_rows[0])
    start = start_sleeve(1.0 / len(prices.symbols))
    rules, fill_costs = sleeve_rules(book.genome.risk), book.costs.fill_costs()
    bar_time = market.bar_time.to_pydatetime()
    orders: list[OrderIntent] = []
    for i, symbol in enumerate(prices.symbols):
        if np.isnan(prices.close[-1, i]):
            continue  # no bar for this symbol at the decision bar: the kernel decides nothing either
        # The kernel's step folded over the sleeve's bars since the strategy started, in one compiled call.
        state = fold_sleeve(
            start,
            *(
                np.ascontiguousarray(array[first:, i])
                for array in (prices.open, prices.high, prices.low, prices.close, prices.atr)
            ),
            np.ascontiguousarray(signals[first:, i]),
            *(
                np.ascontiguousarray(array[first:, i])
                for array in (prices.spread_grid(), prices.nights_grid())
            ),
            rules,
            fill_costs,
            prices.swap_of(i),
        )
        target = sleeve_target(state, capital)
        meta = instruments.get(symbol)
        if meta is None:
            notes.append(f"{book.strategy_id}/{symbol}: no instrument metadata (volume step); not traded")
            continue
        order = order_for_target(
            strategy_id=book.strategy_id,
            symbol=symbol,
            bar_time=bar_time,
            current=held.get(symbol, 0.0),
            target=target,
            reference_price=float(market.closes[symbol]),
            volume_step=meta.step_volume,
            min_volume=meta.min_volume,
        )
        if order is not None:
            orders.append(order)
    return orders, notes


# ------------------------------------------------------------------------------------------- broker answers


def record_result(engine: Engine, result: OrderResult) -> str:
    """Write a broker answer into the registry (fills first: they move positions and cash); returns status."""
    with session_scope(engine) as session:
        for fill in result.fills:
            record_fill(
                session,
                client_order_id=result.client_order_id,
                broker_fill_id=fill.broker_fill_id,
                price=fill.price,
                quantity=fill.quantity,
                filled_at=fill.filled_at,
                fee=fill.fee,
            )
        order = get_order(session, result.client_order_id)
        # NOT_FOUND changes nothing by itself; every other status the broker reports is the registry's.
        new_status = None if result.status is OrderStatus.NOT_FOUND else result.status
        if new_status is OrderStatus.FILLED and order.status != OrderStatus.FILLED.value:
            new_status = OrderStatus.ACCEPTED  # filled per the broker, not all fills reported yet
        if new_status is None:
            return order.status
        try:
            order = update_order_status(
                session,
                result.client_order_id,
                new_status.value,
                broker_order_id=result.broker_order_id,
                error=result.reason,
            )
        except InvalidOrderTransitionError:
            # An answer older than what is recorded (e.g. `accepted` after a fill): keep the registry's.
            log.info("order %s stays %s (broker said %s)", order.client_order_id, order.status, result.status)
        return order.status


def order_request(intent: OrderIntent, side: str, quantity: float) -> OrderRequest:
    protective = intent.opens_position
    return OrderRequest(
        client_order_id=intent.client_order_id,
        symbol=intent.symbol,
        side=OrderSide(side),
        quantity=quantity,
        relative_stop_loss=intent.stop_distance if protective else None,
        relative_take_profit=intent.take_profit_distance if protective else None,
        label=f"emp:{intent.strategy_id}"[:100],
    )


def reconcile_open_orders(
    engine: Engine,
    broker: Broker,
    account_id: int,
    bar_time: pd.Timestamp,
    now: dt.datetime,
    stale_after: dt.timedelta,
    report: LiveTickReport,
) -> None:
    """Let the broker catch up, ask it about every order the registry still holds open, record the answers.

    An order the broker has no trace of is left alone while it is fresh (its run may be sending it right
    now) and while it belongs to the current bar (the decision step re-derives it and sends it under the
    same id). A stale one from an earlier bar never reached the broker: its decision lapsed with its bar, so
    it is cancelled rather than sent late, and no longer counts as in flight.
    """
    with session_scope(engine) as session:
        open_orders = orders_for_account(session, account_id, OPEN_STATUSES)
    try:
        broker.reconcile()  # the broker catches up first; what it did to these orders is recorded below
    except BrokerError as exc:
        report.errors.append(f"reconcile: {exc}")
    for order in open_orders:
        try:
            result = broker.order_status(order.client_order_id)
        except BrokerError as exc:
            report.errors.append(f"reconcile {order.client_order_id}: {exc}")
            continue
        if result.status is not OrderStatus.NOT_FOUND:
            report.reconciled[order.client_order_id] = record_result(engine, result)
            continue
        lapsed = order.bar_time < bar_time.to_pydatetime() and now - order.updated_at >= stale_after
        if not lapsed:
            report.reconciled[order.client_order_id] = "not_found"
            continue
        with session_scope(engine) as session:
            update_order_status(
                session,
                order.client_order_id,
                OrderStatus.CANCELLED.value,
                error=f"never reached the broker; the decision of bar {order.bar_time} lapsed at {bar_time}",
            )
        report.reconciled[order.client_order_id] = OrderStatus.CANCELLED.value


# ------------------------------------------------------------------------------------------- the tick


def _active_books(engine: Engine, config: LiveConfig) -> list[StrategyBook]:
    books = []
    with session_scope(engine) as session:
        for record in active_strategies(session):
            start = config.start or activation_time(session, record.id)
            if start is None:
                continue
            stamp = pd.Timestamp(start).tz_convert("UTC").normalize()
            books.append(StrategyBook(record.id, genome_from_dict(record.genome), stamp, record.costs))
    return sorted(books, key=lambda book: book.strategy_id)


def trading_day_starts(bars: pd.DatetimeIndex, calendars: Iterable[str]) -> pd.DatetimeIndex:
    """Where the trading day holding each bar begins: the daily loss limit measures from the equity of the
    last bar before it. The earliest start over the calendars trading at the bar; a daily bar (labelled by
    its day) or a bar no calendar trades at is its own start, so its reference is the bar before it, as it
    always was. An H1 bar's reference is the previous trading day's last bar, not the previous hour."""
    bars = pd.DatetimeIndex(bars).tz_convert("UTC").as_unit("ns")
    starts = bars.asi8.copy()
    for calendar in sorted(set(calendars)):
        days = trading_day_of(calendar, bars)
        opens = {day: trading_day_window(calendar, day)[0] for day in days.dropna().unique()}
        own = np.array(
            [bar if pd.isna(day) else opens[day].value for day, bar in zip(days, bars.asi8, strict=True)],
            dtype=np.int64,
        )
        starts = np.minimum(starts, own)
    return pd.DatetimeIndex(starts.view("datetime64[ns]")).tz_localize("UTC")


def _snapshot(
    engine: Engine, account_id: int, market: MarketView, journal: LiveJournal, calendars: Iterable[str]
) -> tuple[AccountSnapshot, float, float]:
    with session_scope(engine) as session:
        account = get_account(session, account_id)
        positions = {p.symbol: p.quantity for p in positions_for_account(session, account_id)}
        kill_switch = flag_enabled(session, KILL_SWITCH)
    equity = account_equity(account.cash, positions, market.closes)
    day_start = journal.day_start_equity(
        trading_day_starts(pd.DatetimeIndex([market.bar_time]), calendars)[0]
    )
    snapshot = AccountSnapshot(
        equity=equity,
        day_start_equity=equity if day_start is None else day_start,
        kill_switch=kill_switch,
        positions=positions,
        prices=market.closes,
    )
    return snapshot, account.cash, account.initial_cash


def _submit(
    engine: Engine,
    broker: Broker,
    account_id: int,
    intent: OrderIntent,
    decision: RiskDecision,
    now: dt.datetime,
    stale_after: dt.timedelta,
    report: LiveTickReport,
) -> str:
    side = "buy" if decision.approved_quantity > 0 else "sell"
    quantity = abs(decision.approved_quantity)
    try:
        with session_scope(engine) as session:
            order, created = create_order_if_absent(
                session,
                client_order_id=intent.client_order_id,
                account_id=account_id,
                strategy_id=intent.strategy_id,
                symbol=intent.symbol,
                side=side,
                quantity=quantity,
                bar_time=intent.bar_time,
                target_position=intent.target,
            )
    except ClientOrderIdConflictError:
        # The same decision was recorded from another starting position (e.g. after a partial fill was
        # cancelled): it was sent once already and is not sent again for this bar.
        return "decision already recorded for this bar with another quantity; not sent again"
    if not created:
        if order.status not in OPEN_STATUSES:
            return f"already {order.status}"
        if now - order.updated_at < stale_after:
            report.left_to_other_run.append(intent.client_order_id)
            return "recorded by another run, left to it"
        existing = broker.order_status(intent.client_order_id)
        if existing.status is not OrderStatus.NOT_FOUND:
            return record_result(engine, existing)
        log.warning("order %s was recorded but never reached the broker; sending it", order.client_order_id)
    try:
        result = broker.submit_order(order_request(intent, side, quantity))
    except BrokerError as exc:
        with session_scope(engine) as session:
            update_order_status(
                session, intent.client_order_id, OrderStatus.UNKNOWN.value, error=f"submit failed: {exc}"
            )
        report.errors.append(f"submit {intent.client_order_id}: {exc}")
        return OrderStatus.UNKNOWN.value
    return record_result(engine, result)


def run_live_tick(
    *,
    engine: Engine,
    data_dir: Path | str,
    broker: Broker,
    account_id: int,
    now: dt.datetime,
    config: LiveConfig | None = None,
    instruments: Sequence[InstrumentMeta] | None = None,
) -> LiveTickReport:
    """Run steps 1-6 of the module docstring once; raises LiveExecutionError after recording if a step failed.

    `now` (the caller's clock) is used only to tell a fresh order of a concurrent run from a stale one.
    `instruments` defaults to the registry's instruments (volume steps and minimums).
    """
    config = config or LiveConfig()
    market = load_market_view(data_dir, as_of=config.as_of)
    stored = pd.DatetimeIndex(market.bars["date"].unique())
    # Daily and weekly bars are labelled at midnight UTC; any other bar time means intraday bars.
    report = LiveTickReport(bar_time=market.bar_time, intraday=bool((stored != stored.normalize()).any()))
    stale_after = dt.timedelta(seconds=config.stale_order_seconds)
    reconcile_open_orders(engine, broker, account_id, market.bar_time, now, stale_after, report)

    books = _active_books(engine, config)
    report.strategies = len(books)
    report.strategy_ids = tuple(book.strategy_id for book in books)
    with session_scope(engine) as session:
        metas = list(instruments) if instruments is not None else load_instruments(session)
        held = strategy_positions(session, account_id)
    journal = LiveJournal(data_dir, account_id)
    calendars = {meta.calendar for meta in metas}
    snapshot, _, initial_cash = _snapshot(engine, account_id, market, journal, calendars)
    report.kill_switch = snapshot.kill_switch
    report.day_start_equity = snapshot.day_start_equity
    capital = config.capital_per_strategy or initial_cash / max(len(books), 1)
    by_symbol = {meta.symbol: meta for meta in metas}
    market = replace(market, instruments=by_symbol)

    intents: list[OrderIntent] = []
    for book in books:
        mine = {symbol: q for (strategy_id, symbol), q in held.items() if strategy_id == book.strategy_id}
        orders, notes = decide_orders(book, market, mine, by_symbol, capital)
        intents.extend(orders)
        for note in notes:
            log.info(note)
    proposed = [ProposedOrder(i.client_order_id, i.symbol, i.signed_quantity) for i in intents]
    decisions = check_orders(proposed, snapshot, config.limits)

    for intent, decision in zip(intents, decisions, strict=True):
        final = intent
        if decision.verdict is RiskVerdict.REDUCED:
            final = intent.with_target(intent.current + decision.approved_quantity)
        outcome = None
        if decision.verdict is not RiskVerdict.REJECTED:
            outcome = _submit(engine, broker, account_id, final, decision, now, stale_after, report)
            report.submitted[final.client_order_id] = outcome
        report.decisions.append(
            {
                "strategy_id": intent.strategy_id,
                "symbol": intent.symbol,
                "decision": intent.decision,
                "current": intent.current,
                "target": final.target,
                "requested_quantity": intent.signed_quantity,
                "approved_quantity": decision.approved_quantity,
                "verdict": decision.verdict.value,
                "reason": decision.reason if outcome is None else f"{decision.reason}; {outcome}",
                "client_order_id": final.client_order_id if outcome is not None else None,
            }
        )
    journal.record_decisions(market.bar_time, pd.Timestamp(now), report.decisions)
    journal.record_limits(market.bar_time, pd.Timestamp(now), config.limits)
    after, cash_after, _ = _snapshot(engine, account_id, market, journal, calendars)
    report.equity = after.equity
    journal.record_equity(market.bar_time, after.equity, cash_after)
    if report.errors:
        raise LiveExecutionError(
            f"live tick at {market.bar_time} finished with {len(report.errors)} broker error(s); orders are "
            f"recorded and will be reconciled by the next run: {'; '.join(report.errors)}"
        )
    return report
