"""The position state machine: one strategy on one instrument (a *sleeve*) for one bar, in one compiled step.

The backtest kernel, the live decision path and the paper broker all run `step_sleeve`, so what was measured,
what is decided live and what the paper exchange fills cannot drift apart: there is no second copy to keep in
step. One call takes the sleeve's state after the previous close and one bar, and in this order

0. **finances the position held since the previous bar** for the ``nights`` of rollovers between the two
   opens (`financing.swap_nights`; the instrument's `SwapTerms`, triple nights already counted);
1. **fills at this open** the order decided at the previous close: the exit first, then the entry (a
   reversal is both, at the same price), each leg paying slippage against the trader and the fee on its
   notional; bars are bid prices, so every buy leg pays the bar's ``spread`` on top (the ask); an entry's
   stop and take profit rest at the order's distances from its fill;
2. **checks the stop and take profit inside the bar** (`intrabar_exit`: from the entry bar's open on, a gap
   through a level filling at the open from the next bar on, both touched taken as the stop; a short's
   levels are bought back, so they trigger and fill on the ask, the bar shifted up by its spread);
3. **marks at the close** (``equity = cash + units x close``);
4. **decides at the close** what fills at the next open: exits on a signal change or the holding limit,
   entries sized with `entry_units`, a fresh signal needed after a protective or holding exit.

`backtest` documents the semantics as the research sees them. A bar with no open (NaN) changes nothing.

``phases`` switches steps 1, 2 and 4 on (`FILL`, `PROTECT`, `DECIDE`; the kernel and the live fold run
`ALL_PHASES`). The paper broker runs it without `DECIDE`: its pending order comes from the orders it accepted
(set with `with_order`) and its levels from the ones resting at its exchange, so a broker fill and a
protective exit are the kernel's arithmetic in the kernel's order. Orders the kernel never sends (a live
position resized on its own side) fill as one more leg of step 1, at the same fill arithmetic.

The state is a `SleeveState` named tuple (numba keeps it in registers once the step is inlined into a loop):
position and levels, the trade's bookkeeping, the pending order and the last mark. `BarFills` reports the
legs that filled in the bar, which is all the kernel books and the broker records. Sizing lives in
`entry_units`, the one place a position cap (issue 13) would bound an entry's units.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

EXIT_SIGNAL = 0
EXIT_STOP = 1
EXIT_TAKE_PROFIT = 2
EXIT_MAX_HOLDING = 3
EXIT_END_OF_DATA = 4
EXIT_REASONS: tuple[str, ...] = ("signal", "stop", "take_profit", "max_holding", "end_of_data")
NO_EXIT = -1
NO_BAR = -1  # the entry bar of a sleeve that never entered

FILL = 1
PROTECT = 2
DECIDE = 4
ALL_PHASES = FILL | PROTECT | DECIDE


class SleeveState(NamedTuple):
    """A sleeve after a bar's close: position, levels, the open trade's bookkeeping, the next open's order.

    Field types are fixed (float, int, bool): build states with `start_sleeve` or `_replace` on one, so the
    compiled step is not specialised again for another type.
    """

    cash: float
    units: float  # signed
    direction: int  # -1, 0, 1
    entry_price: float
    entry_notional: float
    cash_before_entry: float  # the trade's P&L is cash after its exit minus this
    entry_bar: int  # bar key of the entry (its open has no gap check)
    stop: float
    take_profit: float
    held: int  # closes held, the entry bar counting as 1
    blocked: int  # the direction not re-entered until the signal leaves it
    pending_exit: bool
    pending_reason: int
    pending_entry: int  # direction of the order to fill at the next open (0: none)
    pending_units: float  # its signed units: the position after the next open
    pending_stop_distance: float  # the levels' distances from the fill (inf: no level)
    pending_take_profit_distance: float
    equity: float  # cash + units x last close
    last_close: float


# What one step filled: an exit at the open, an entry at the open (or a live resize), a stop or take profit
# inside the bar. The step writes a leg's fields into one record of `FILLS_DTYPE` (`new_fills`) in the branch
# that fills it and returns a mask of the legs it wrote, so a bar where nothing fills carries no fill values
# through the step (the kernel's throughput depends on it). An exit leg also names the trade it closed.
# A bar that financed a position overnight reports its swap (credited: positive) as a fourth "leg".
EXIT_LEG, ENTRY_LEG, PROTECTIVE_LEG, FINANCING_LEG = 1, 2, 4, 8
_EXIT_FIELDS = (
    "price",
    "units",
    "fee",
    "pnl",
    "reason",
    "direction",
    "entry_bar",
    "entry_price",
    "entry_notional",
    "spread",
)
FILLS_DTYPE = np.dtype(
    [
        *((f"exit_{name}", np.int64 if name in ("reason", "direction", "entry_bar") else np.float64)
          for name in _EXIT_FIELDS),
        ("entry_price", np.float64),
        ("entry_units", np.float64),  # signed units traded (from flat: the new position)
        ("entry_fee", np.float64),
        ("entry_spread", np.float64),  # the spread paid (units x spread), a buy's only
        ("swap", np.float64),
        *((f"protective_{name}", np.int64 if name in ("reason", "direction", "entry_bar") else np.float64)
          for name in _EXIT_FIELDS),
    ]
)  # fmt: skip


def new_fills() -> np.recarray:
    """A one-record array for `step_sleeve` to write its fills into (pass ``fills[0]``; fields by name)."""
    return np.zeros(1, dtype=FILLS_DTYPE).view(np.recarray)


class SleeveRules(NamedTuple):
    """A strategy's risk genes as the step reads them."""

    stop_atr: float
    take_profit_atr: float
    position_fraction: float
    max_holding_bars: int


class FillCosts(NamedTuple):
    """Per-side costs in basis points as the step reads them (built from `costs.Costs`)."""

    fee_bps: float
    slippage_bps: float


class SwapTerms(NamedTuple):
    """An instrument's overnight financing per unit held and night, credited (negative: charged).

    ``*_per_unit`` in price units (swaps in pips), ``*_per_value`` a fraction of the previous close (swaps
    in percent a year); built by `financing.swap_terms`.
    """

    long_per_unit: float
    short_per_unit: float
    long_per_value: float
    short_per_value: float


NO_SWAP_TERMS = SwapTerms(0.0, 0.0, 0.0, 0.0)


# ------------------------------------------------------------------ fill arithmetic


@njit(cache=True)
def entry_fill_price(open_price: float, direction: int, slippage_bps: float) -> float:
    """The price an entry at ``open_price`` gets: buys pay up, short sales receive less."""
    return open_price * (1.0 + direction * slippage_bps * 1e-4)


@njit(cache=True)
def exit_fill_price(price: float, direction: int, slippage_bps: float) -> float:
    """The price an exit of a ``direction`` position gets at ``price``: selling a long receives less."""
    return price * (1.0 - direction * slippage_bps * 1e-4)


@njit(cache=True)
def fee_cost(notional: float, fee_bps: float) -> float:
    return abs(notional) * fee_bps * 1e-4


@njit(cache=True, inline="always")
def quote(bid: float, side: int, spread: float) -> float:
    """The price a ``side`` (1 buy, -1 sell) trades at when ``bid`` is the bid: buys pay the ask."""
    return bid + spread if side > 0 else bid


@njit(cache=True, inline="always")
def overnight_swap(units: float, last_close: float, nights: float, swap: SwapTerms) -> float:
    """The financing credited (negative: charged) to ``units`` held across ``nights`` rollovers."""
    if units > 0:
        return nights * units * (swap.long_per_unit + swap.long_per_value * last_close)
    return -nights * units * (swap.short_per_unit + swap.short_per_value * last_close)


@njit(cache=True)
def entry_units(direction: int, position_fraction: float, sleeve_equity: float, close: float) -> float:
    """Signed units of an entry decided at a close: ``direction x fraction x sleeve equity / close``."""
    return direction * position_fraction * sleeve_equity / close


@njit(cache=True)
def levels_at_distances(
    entry_price: float, direction: int, stop_distance: float, take_profit_distance: float
) -> tuple[float, float]:
    """(stop, take profit) at price distances from an entry fill, as a broker applies relative levels."""
    return entry_price - direction * stop_distance, entry_price + direction * take_profit_distance


@njit(cache=True)
def intrabar_exit(
    direction: int,
    open_price: float,
    high: float,
    low: float,
    stop: float,
    take_profit: float,
    gap_check: bool,
) -> tuple[int, float]:
    """(exit reason, trigger price before slippage) for a bar, or (NO_EXIT, nan) when no level is touched.

    ``gap_check`` is False on the entry bar, whose open is the fill itself.
    """
    if direction > 0:
        if gap_check and open_price <= stop:
            return EXIT_STOP, open_price
        if gap_check and open_price >= take_profit:
            return EXIT_TAKE_PROFIT, open_price
        if low <= stop:
            return EXIT_STOP, stop
        if high >= take_profit:
            return EXIT_TAKE_PROFIT, take_profit
    else:
        if gap_check and open_price >= stop:
            return EXIT_STOP, open_price
        if gap_check and open_price <= take_profit:
            return EXIT_TAKE_PROFIT, open_price
        if high >= stop:
            return EXIT_STOP, stop
        if low <= take_profit:
            return EXIT_TAKE_PROFIT, take_profit
    return NO_EXIT, np.nan


# ------------------------------------------------------------------ the step


@njit(cache=True)
def start_sleeve(capital: float) -> SleeveState:
    """A flat sleeve with ``capital`` in cash and nothing pending."""
    return SleeveState(
        capital,
        0.0,
        0,
        0.0,
        0.0,
        0.0,
        NO_BAR,
        np.nan,
        np.nan,
        0,
        0,
        False,
        EXIT_SIGNAL,
        0,
        0.0,
        np.nan,
        np.nan,
        capital,
        np.nan,
    )


@njit(cache=True, inline="always")
def step_sleeve(
    state: SleeveState,
    bar: int,
    open_price: float,
    high: float,
    low: float,
    close: float,
    atr: float,
    spread: float,
    nights: float,
    signal: int,
    rules: SleeveRules,
    costs: FillCosts,
    swap: SwapTerms,
    phases: int,
    fills: np.record,
) -> tuple[SleeveState, int]:
    """One bar of one sleeve (module docstring): the state after it and the mask of the legs it wrote.

    ``bar`` is an increasing key of the bar (index or time); ``spread`` (price units, ask - bid) and
    ``nights`` (rollovers since the previous bar's open) are the bar's; ``fills`` is the record of a
    `new_fills` array.
    """
    if np.isnan(open_price):
        return state, 0
    fee_bps = costs.fee_bps
    slippage_bps = costs.slippage_bps
    cash = state.cash
    units = state.units
    direction = state.direction
    entry_price = state.entry_price
    entry_notional = state.entry_notional
    cash_before_entry = state.cash_before_entry
    entry_bar = state.entry_bar
    stop = state.stop
    take_profit = state.take_profit
    held = state.held
    blocked = state.blocked
    pending_exit = state.pending_exit
    pending_reason = state.pending_reason
    pending_entry = state.pending_entry
    pending_units = state.pending_units
    pending_stop_distance = state.pending_stop_distance
    pending_take_profit_distance = state.pending_take_profit_distance
    legs = 0

    # 0. Overnight financing of the position held since the previous bar.
    if nights != 0.0 and direction != 0:
        credit = overnight_swap(units, state.last_close, nights, swap)
        cash += credit
        fills.swap = credit
        legs |= FINANCING_LEG

    # 1. The order decided at the previous close fills at this open: exit first, then entry.
    if phases & FILL:
        if pending_exit and direction != 0:
            price = exit_fill_price(quote(open_price, -direction, spread), direction, slippage_bps)
            value = units * price
            fee = fee_cost(value, fee_bps)
            cash += value - fee
            fills.exit_spread = -spread * units if direction < 0 else 0.0
            fills.exit_price = price
            fills.exit_units = units
            fills.exit_fee = fee
            fills.exit_pnl = cash - cash_before_entry
            fills.exit_reason = pending_reason
            fills.exit_direction = direction
            fills.exit_entry_bar = entry_bar
            fills.exit_entry_price = entry_price
            fills.exit_entry_notional = entry_notional
            legs |= EXIT_LEG
            units = 0.0
            direction = 0
        if pending_entry != 0 and (direction == 0 or direction == pending_entry):
            # From flat an entry; on the same side (live only: the kernel always exits first) a resize.
            traded = pending_units - units
            side = pending_entry if direction == 0 else (1 if traded > 0 else -1)
            price = entry_fill_price(quote(open_price, side, spread), side, slippage_bps)
            value = traded * price
            fee = fee_cost(value, fee_bps)
            fills.entry_spread = spread * traded if traded > 0 else 0.0
            if direction == 0:
                cash_before_entry = cash
                entry_notional = abs(value)
                held = 0
            cash -= value + fee
            units = pending_units
            direction = pending_entry
            entry_price = price
            stop, take_profit = levels_at_distances(
                price, direction, pending_stop_distance, pending_take_profit_distance
            )
            entry_bar = bar
            fills.entry_price = price
            fills.entry_units = traded
            fills.entry_fee = fee
            legs |= ENTRY_LEG
        pending_exit = False
        pending_entry = 0

    # 2. Stops and take profits inside the bar.
    if phases & PROTECT and direction != 0:
        # A long sells at the bid (the bar); a short buys back at the ask (the bar plus its spread).
        ask = spread if direction < 0 else 0.0
        reason, trigger = intrabar_exit(
            direction, open_price + ask, high + ask, low + ask, stop, take_profit, entry_bar != bar
        )
        if reason != NO_EXIT:
            price = exit_fill_price(trigger, direction, slippage_bps)
            value = units * price
            fee = fee_cost(value, fee_bps)
            cash += value - fee
            fills.protective_spread = -spread * units if direction < 0 else 0.0
            fills.protective_price = price
            fills.protective_units = units
            fills.protective_fee = fee
            fills.protective_pnl = cash - cash_before_entry
            fills.protective_reason = reason
            fills.protective_direction = direction
            fills.protective_entry_bar = entry_bar
            fills.protective_entry_price = entry_price
            fills.protective_entry_notional = entry_notional
            legs |= PROTECTIVE_LEG
            blocked = direction
            units = 0.0
            direction = 0

    # 3. Mark to market at the close.
    equity = cash + units * close

    # 4. Decide at the close what fills at the next open.
    if phases & DECIDE:
        pending_reason = EXIT_SIGNAL
        if signal != blocked:
            blocked = 0
        can_enter = not np.isnan(atr)
        enter = 0
        if direction != 0:
            held += 1
            if signal != direction:
                pending_exit = True
                if signal != 0 and can_enter:
                    enter = signal
            elif held >= rules.max_holding_bars:
                pending_exit = True
                pending_reason = EXIT_MAX_HOLDING
                blocked = direction
        elif signal != 0 and signal != blocked and can_enter:
            enter = signal
        if enter != 0:
            pending_entry = enter
            pending_units = entry_units(enter, rules.position_fraction, equity, close)
            pending_stop_distance = rules.stop_atr * atr
            pending_take_profit_distance = rules.take_profit_atr * atr

    after = SleeveState(
        cash,
        units,
        direction,
        entry_price,
        entry_notional,
        cash_before_entry,
        entry_bar,
        stop,
        take_profit,
        held,
        blocked,
        pending_exit,
        pending_reason,
        pending_entry,
        pending_units,
        pending_stop_distance,
        pending_take_profit_distance,
        equity,
        close,
    )
    return after, legs


@njit(cache=True)
def fold_sleeve(
    state: SleeveState,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    signals: np.ndarray,
    spread: np.ndarray,
    nights: np.ndarray,
    rules: SleeveRules,
    costs: FillCosts,
    swap: SwapTerms,
) -> SleeveState:
    """The sleeve's state at the last close, stepping every bar from ``state`` (the live decision path)."""
    fills = np.zeros(1, dtype=FILLS_DTYPE)[0]
    for t in range(len(open_)):
        state, _ = step_sleeve(
            state, t, open_[t], high[t], low[t], close[t], atr[t], spread[t], nights[t], signals[t], rules,
            costs, swap, ALL_PHASES, fills,
        )  # fmt: skip
    return state
