"""From signals to orders: the kernel's decision at the last close, turned into target positions and orders.

The live engine decides at the close of bar t exactly what the backtest kernel decides there, because it runs
the same compiled step (`sleeve.step_sleeve`): `sleeve.fold_sleeve` folds it over the bars since a strategy
started trading, in one compiled call, and `sleeve_target` reads the decision the kernel would act on at the
next open. Nothing here reads a clock, so a replay harness can step it bar by bar.

Sizing. The kernel decides an entry's units at the signal bar's close with `sleeve.entry_units` (position
fraction x sleeve equity at that close / that close), which is what a market order sent after the close must
carry; the step records them (``pending_units``) and `sleeve_target` turns them into account units, so a live
entry has the kernel's own quantity. The sleeve's equity is in the kernel's units (a strategy starts with 1.0
split equally over its instruments); `capital` converts it into account currency. Live quantities are then
rounded to the instrument's volume step (the only difference left: with a fine step the live equity follows
the kernel's).

Holding. While the kernel holds (no pending exit or entry) a live position on the same side as the
kernel's is kept as it is: a size that drifted from the simulation (sizing at the close, a partial fill) is
not traded bar after bar. A live position on the other side, or none where the kernel holds one (a missed
tick, an order the broker or the risk checks refused), is brought to the kernel's position, with stop and
take profit at the kernel's own levels.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from datetime import datetime

from emp_pipeline.domain.genome import RiskGenes
from emp_pipeline.domain.sleeve import EXIT_REASONS, SleeveRules, SleeveState

CLIENT_ORDER_ID_PREFIX = "emp-"
CLIENT_ORDER_ID_HASH_CHARS = 32  # 128 bits; with the prefix 36 characters, inside cTrader's 50


class ExecutionInputError(ValueError):
    """Bars, signals or genes handed to the execution functions are inconsistent; the message says which."""


def sleeve_rules(genes: RiskGenes) -> SleeveRules:
    """A genome's risk genes in the types the compiled step reads."""
    return SleeveRules(
        float(genes.stop_atr),
        float(genes.take_profit_atr),
        float(genes.position_fraction),
        int(genes.max_holding_bars),
    )


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


def sleeve_target(state: SleeveState, capital: float) -> SleeveTarget:
    """The kernel's decision at the last close as a target position in account units (see module docstring).

    `capital` is the account currency behind 1.0 of the strategy's kernel equity.
    """
    if not (math.isfinite(capital) and capital > 0):
        raise ExecutionInputError(f"capital must be a positive amount of account currency, not {capital}")
    if state.pending_entry == 0:
        if state.pending_exit and state.direction != 0:
            return SleeveTarget("exit", 0, 0.0, EXIT_REASONS[state.pending_reason])
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
        stop_distance=state.pending_stop_distance,
        take_profit_distance=state.pending_take_profit_distance,
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
