"""From signals to orders: the backtest kernel's decision, one bar at a time, turned into target positions.

The live engine must decide at the close of bar t exactly what the backtest kernel decides there. Rather
than re-deriving that logic, `step_sleeve` is a line-for-line, pure-Python mirror of one bar of
`backtest._population_kernel` for one strategy on one instrument (a *sleeve*): fills decided at the previous
close happen at this open, stops and take profits are checked inside the bar, the sleeve is marked at the
close, and the next open's orders are decided. It uses the kernel's own fill arithmetic (`entry_fill_price`,
`exit_fill_price`, `fee_cost`, `protective_levels`, `intrabar_exit`), and a unit test holds it to the
kernel's equity bar for bar. Folding it over the bars since a strategy started trading (`replay_sleeve`)
gives the sleeve state at the close of t, and `sleeve_target` reads the decision the kernel would act on at
the next open. Nothing here reads a clock, so a replay harness can step it bar by bar.

Sizing. The kernel decides an entry's units at the signal bar's close with `backtest.entry_units`
(position fraction x sleeve equity at that close / that close), which is what a market order sent after the
close must carry; `step_sleeve` records them (`pending_units`) and `sleeve_target` turns them into account
units, so a live entry has the kernel's own quantity. The sleeve's equity is in the kernel's units (a
strategy starts with 1.0 split equally over its instruments); `capital` converts it into account currency.
Live quantities are then rounded to the instrument's volume step (the only difference left: with a fine
step the live equity follows the kernel's).

Holding. While the kernel holds (no pending exit or entry) a live position on the same side as the
kernel's is kept as it is: a size that drifted from the simulation (sizing at the close, a partial fill) is
not traded bar after bar. A live position on the other side, or none where the kernel holds one (a missed
tick, an order the broker or the risk checks refused), is brought to the kernel's position, with stop and
take profit at the kernel's own levels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from emp_pipeline.domain.backtest import (
    EXIT_MAX_HOLDING,
    EXIT_REASONS,
    EXIT_SIGNAL,
    entry_fill_price,
    entry_units,
    exit_fill_price,
    fee_cost,
    intrabar_exit,
    protective_levels,
)
from emp_pipeline.domain.genome import RiskGenes

CLIENT_ORDER_ID_PREFIX = "emp-"
CLIENT_ORDER_ID_HASH_CHARS = 32  # 128 bits; with the prefix 36 characters, inside cTrader's 50


class ExecutionInputError(ValueError):
    """Bars, signals or genes handed to the execution functions are inconsistent; the message says which."""


@dataclass(frozen=True)
class Costs:
    """Per-side costs in basis points, the same numbers the backtest of the strategy used."""

    fee_bps: float = 1.0
    slippage_bps: float = 1.0


@dataclass(frozen=True)
class SleeveState:
    """The kernel's per-(strategy, instrument) loop variables after a bar's close, same names and meaning."""

    cash: float
    units: float = 0.0
    direction: int = 0
    stop: float = math.nan
    take_profit: float = math.nan
    entry_price: float = 0.0
    cash_before_entry: float = 0.0
    held: int = 0
    pending_exit: bool = False
    pending_reason: int = EXIT_SIGNAL
    pending_entry: int = 0
    pending_units: float = 0.0  # the entry's signed units, decided at the close (backtest.entry_units)
    pending_atr: float = math.nan
    blocked: int = 0
    equity: float = 0.0
    last_close: float = math.nan

    @classmethod
    def start(cls, sleeve_capital: float) -> SleeveState:
        return cls(cash=sleeve_capital, equity=sleeve_capital)


@dataclass(frozen=True)
class BarInput:
    """One instrument's bar as the kernel sees it: adjusted OHLC, the signal bar's ATR, the close's signal."""

    open: float
    high: float
    low: float
    close: float
    atr: float
    signal: int


def step_sleeve(state: SleeveState, bar: BarInput, genes: RiskGenes, costs: Costs) -> SleeveState:
    """One bar of the backtest kernel for one sleeve (see `backtest` for the semantics being mirrored)."""
    if math.isnan(bar.open):
        return state  # no bar for this instrument: no fills, no decision, equity carried
    fee_bps, slippage_bps = costs.fee_bps, costs.slippage_bps
    cash, units, direction = state.cash, state.units, state.direction
    stop, take_profit, entry_price = state.stop, state.take_profit, state.entry_price
    cash_before_entry, held, blocked = state.cash_before_entry, state.held, state.blocked
    # 1. Orders decided at the previous close fill at this open: exit first, then entry.
    if state.pending_exit and direction != 0:
        price = exit_fill_price(bar.open, direction, slippage_bps)
        value = units * price
        cash += value - fee_cost(value, fee_bps)
        units = 0.0
        direction = 0
    entered_now = False
    if state.pending_entry != 0 and direction == 0:
        price = entry_fill_price(bar.open, state.pending_entry, slippage_bps)
        cash_before_entry = cash
        units = state.pending_units
        value = units * price
        cash -= value + fee_cost(value, fee_bps)
        direction = state.pending_entry
        entry_price = price
        stop, take_profit = protective_levels(
            price, direction, state.pending_atr, genes.stop_atr, genes.take_profit_atr
        )
        held = 0
        entered_now = True
    # 2. Stops and take profits inside the bar.
    if direction != 0:
        reason, trigger = intrabar_exit(
            direction, bar.open, bar.high, bar.low, stop, take_profit, not entered_now
        )
        if reason >= 0:
            price = exit_fill_price(trigger, direction, slippage_bps)
            value = units * price
            cash += value - fee_cost(value, fee_bps)
            blocked = direction
            units = 0.0
            direction = 0
    # 3. Mark to market at the close.
    equity = cash + units * bar.close
    # 4. Decide at the close what fills at the next open.
    pending_exit, pending_reason, pending_entry, pending_atr = False, EXIT_SIGNAL, 0, state.pending_atr
    pending_units = state.pending_units
    signal = bar.signal
    if signal != blocked:
        blocked = 0
    can_enter = not math.isnan(bar.atr)
    if direction != 0:
        held += 1
        if signal != direction:
            pending_exit = True
            pending_reason = EXIT_SIGNAL
            if signal != 0 and can_enter:
                pending_entry = signal
                pending_units = entry_units(signal, genes.position_fraction, equity, bar.close)
                pending_atr = bar.atr
        elif held >= genes.max_holding_bars:
            pending_exit = True
            pending_reason = EXIT_MAX_HOLDING
            blocked = direction
    elif signal != 0 and signal != blocked and can_enter:
        pending_entry = signal
        pending_units = entry_units(signal, genes.position_fraction, equity, bar.close)
        pending_atr = bar.atr
    return SleeveState(
        cash=cash,
        units=units,
        direction=direction,
        stop=stop,
        take_profit=take_profit,
        entry_price=entry_price,
        cash_before_entry=cash_before_entry,
        held=held,
        pending_exit=pending_exit,
        pending_reason=pending_reason,
        pending_entry=pending_entry,
        pending_units=pending_units,
        pending_atr=pending_atr,
        blocked=blocked,
        equity=equity,
        last_close=bar.close,
    )


def replay_sleeve(
    bars: Sequence[BarInput], genes: RiskGenes, costs: Costs, sleeve_capital: float
) -> SleeveState:
    """The sleeve's state at the close of the last bar, starting flat with `sleeve_capital` at the first."""
    state = SleeveState.start(sleeve_capital)
    for bar in bars:
        state = step_sleeve(state, bar, genes, costs)
    return state


def sleeve_bars(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    signals: np.ndarray,
) -> list[BarInput]:
    """Column arrays of one instrument (as in `backtest.MarketArrays`) as a list of kernel bars."""
    lengths = {len(a) for a in (open_, high, low, close, atr, signals)}
    if len(lengths) != 1:
        raise ExecutionInputError(f"bar arrays and signals differ in length: {sorted(lengths)}")
    return [
        BarInput(float(o), float(h), float(lo), float(c), float(a), int(s))
        for o, h, lo, c, a, s in zip(open_, high, low, close, atr, signals, strict=True)
    ]


@dataclass(frozen=True)
class SleeveTarget:
    """What the sleeve should hold after the next open, in account units.

    `direction` is the direction the kernel will hold; `stop_distance`/`take_profit_distance` are the
    protective levels' distances from the fill (ATR of the signal bar x the genes), as a market order with
    relative stop loss and take profit carries them. For "hold", `quantity` is the kernel's own position,
    which only matters to a live position on another side (see the module docstring).
    """

    action: str  # "enter", "exit", "reverse" or "hold"
    direction: int
    quantity: float
    reason: str
    stop_distance: float | None = None
    take_profit_distance: float | None = None


def sleeve_target(state: SleeveState, genes: RiskGenes, costs: Costs, capital: float) -> SleeveTarget:
    """The kernel's decision at the last close as a target position in account units (see module docstring).

    `capital` is the account currency behind 1.0 of the strategy's kernel equity.
    """
    if not (math.isfinite(capital) and capital > 0):
        raise ExecutionInputError(f"capital must be a positive amount of account currency, not {capital}")
    reason_text = EXIT_REASONS[state.pending_reason]
    if state.pending_entry == 0:
        if state.pending_exit and state.direction != 0:
            return SleeveTarget("exit", 0, 0.0, reason_text)
        if state.direction == 0:
            return SleeveTarget("hold", 0, 0.0, "flat, no new decision at this close")
        # Still held at the close, so the close lies strictly between the kernel's stop and take profit.
        stop_distance = state.direction * (state.last_close - state.stop)
        take_profit_distance = state.direction * (state.take_profit - state.last_close)
        return SleeveTarget(
            "hold",
            state.direction,
            state.units * capital,
            "the kernel holds this position",
            stop_distance=stop_distance if stop_distance > 0 else None,
            take_profit_distance=take_profit_distance if take_profit_distance > 0 else None,
        )
    action = "reverse" if state.pending_exit and state.direction != 0 else "enter"
    return SleeveTarget(
        action,
        state.pending_entry,
        state.pending_units * capital,
        "signal",
        stop_distance=genes.stop_atr * state.pending_atr,
        take_profit_distance=genes.take_profit_atr * state.pending_atr,
    )


# ------------------------------------------------------------------------------------------- orders


def round_to_step(quantity: float, step: float) -> float:
    """Round a signed quantity toward zero onto the volume grid (a broker refuses off-grid volumes)."""
    if not step > 0:
        raise ExecutionInputError(f"volume step must be > 0, got {step}")
    steps = math.floor(abs(quantity) / step + 1e-9)
    return math.copysign(round(steps * step, 10), quantity) if steps else 0.0


def client_order_id(strategy_id: str, symbol: str, bar_time: datetime, target: float) -> str:
    """A short, stable id of one decision: the same (strategy, symbol, bar, target) always gives the same id.

    This is what makes submission exactly-once: a retried, duplicated or concurrent run derives the same id,
    and the registry's unique index lets only one of them record (and so submit) it.
    """
    if bar_time.tzinfo is None:
        raise ExecutionInputError(f"bar_time {bar_time!r} is naive: pass the bar's UTC timestamp")
    identity = f"{strategy_id}|{symbol}|{bar_time.isoformat()}|{target!r}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:CLIENT_ORDER_ID_HASH_CHARS]
    return CLIENT_ORDER_ID_PREFIX + digest


@dataclass(frozen=True)
class OrderIntent:
    """A market order that moves one strategy's position in one symbol from `current` to `target`."""

    strategy_id: str
    symbol: str
    bar_time: datetime
    current: float
    target: float
    reference_price: float
    stop_distance: float | None = None
    take_profit_distance: float | None = None
    decision: str = ""  # the kernel's action and why, for the journal

    @property
    def signed_quantity(self) -> float:
        return self.target - self.current

    @property
    def side(self) -> str:
        return "buy" if self.signed_quantity > 0 else "sell"

    @property
    def quantity(self) -> float:
        return abs(self.signed_quantity)

    @property
    def client_order_id(self) -> str:
        return client_order_id(self.strategy_id, self.symbol, self.bar_time, self.target)

    @property
    def opens_position(self) -> bool:
        """Protective levels belong to an order that leaves a position open in a new direction."""
        return self.target != 0 and (
            self.current == 0 or math.copysign(1, self.current) != math.copysign(1, self.target)
        )

    def with_target(self, target: float) -> OrderIntent:
        return replace(self, target=target)


def _side(quantity: float) -> int:
    return (quantity > 0) - (quantity < 0)


def order_for_target(
    *,
    strategy_id: str,
    symbol: str,
    bar_time: datetime,
    current: float,
    target: SleeveTarget,
    reference_price: float,
    volume_step: float,
    min_volume: float,
) -> OrderIntent | None:
    """The order that takes `current` to the target (rounded to the volume grid), or None if none is needed.

    `current` is what the strategy holds plus what its unfinished orders will add, so an order in flight is
    never sent a second time under another id. A move smaller than the broker's minimum volume is skipped.
    """
    if target.action == "hold" and _side(current) == _side(target.quantity):
        return None  # on the kernel's side (or flat like it): keep the live size
    rounded = round_to_step(target.quantity, volume_step)
    delta = rounded - current
    if abs(delta) < max(min_volume, volume_step) * (1 - 1e-9):
        if rounded == 0 and current != 0:
            delta = -current  # always allow closing a position completely, even an odd lot
        else:
            return None
    if delta == 0:
        return None
    return OrderIntent(
        strategy_id=strategy_id,
        symbol=symbol,
        bar_time=bar_time,
        current=current,
        target=rounded,
        reference_price=reference_price,
        stop_distance=target.stop_distance,
        take_profit_distance=target.take_profit_distance,
        decision=f"{target.action}: {target.reason}",
    )
