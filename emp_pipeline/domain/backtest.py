"""The backtest kernel: a whole population of strategies over many instruments in one compiled call.

Input is the desired direction per bar from ``genome.population_signals`` (int8, shape
(n_strategies, n_bars, n_instruments)) plus open/high/low/close/ATR arrays (n_bars, n_instruments) and the
per-strategy risk genes. One strategy on one instrument for one bar is one *strategy-bar*.

Semantics (every number below is what ``simulate_population`` and the live engine must agree on):

* **Capital and sizing.** A strategy starts with equity 1.0 split equally into one sleeve per instrument;
  sleeves compound independently and the portfolio equity is their sum. The quantity of an entry is decided
  at the close of the signal bar t, where a live market order must carry it: ``units = direction x
  position_fraction x sleeve equity at close t / close t`` (`entry_units`, shared with the live engine).
  The sleeve equity at close t is cash plus any position marked at that close (before the exit costs of a
  reversal). The units are fixed when decided and executed at the next open, so the notional actually
  traded is ``|units| x fill price``.
* **Timing.** The signal of bar t is read at t's close; the order fills at the open of the next bar that has
  a price for that instrument (bars with a NaN open are skipped: no fills, equity carried).
* **Costs.** Every fill pays slippage against the trader (``slippage_bps`` of the price: buys fill higher,
  sells lower) and a fee of ``fee_bps`` of the fill's notional, per side.
* **Protective exits.** At entry, stop = fill -/+ ``stop_atr x ATR(signal bar)`` and take profit =
  fill +/- ``take_profit_atr x ATR(signal bar)`` (long/short). They are checked on every bar from the entry
  bar on, the entry bar included (from its open onward: its high/low are assumed to come after the fill).
  From the next bar on, an open beyond the stop fills at the open (a gap, worse than the stop) and an open
  beyond the take profit fills at the open (a limit order's better price). Otherwise a touched level fills at
  the level; when both stop and take profit are touched in one bar the stop is assumed (the worse outcome).
  Protective fills pay slippage too. No entry happens when the signal bar's ATR is not finite.
* **Signal exits and reversals.** Holding direction d, a signal != d at the close exits at the next open; a
  signal of -d also enters the opposite way at that same open (exit first, then the entry with the units
  decided at the close). Both legs fill at the same price (selling a long and selling short both receive
  the open less slippage), so a live reversal is one order of the summed quantity with the same fees.
* **Maximum holding.** The entry bar counts as bar 1; after ``max_holding_bars`` closes the position exits
  at the next open.
* **Re-entry.** After a stop, a take profit or a maximum-holding exit in direction d, the strategy does not
  re-enter d until the signal has left d (to 0 or -d) at some close: a fresh signal is needed.
* **End of data.** A position still open is marked at the last close (no exit costs) and counted as a trade.

Outputs: portfolio equity and daily returns (n_strategies, n_bars), optional per-instrument sleeve equity,
trade counts, winning trades, gross profit and loss (net of costs, for win rate and profit factor),
exposure (share of priced instrument-bars in a position) and turnover (traded notional / initial capital).
The single-strategy path ``simulate_strategy`` runs the same kernel with a trade log and each sleeve's final
state (position, levels, and the order due at the next open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from emp_pipeline.domain.genome import Genome, validate_genome

EXIT_SIGNAL = 0
EXIT_STOP = 1
EXIT_TAKE_PROFIT = 2
EXIT_MAX_HOLDING = 3
EXIT_END_OF_DATA = 4
EXIT_REASONS: tuple[str, ...] = ("signal", "stop", "take_profit", "max_holding", "end_of_data")

# Columns of the trade log written by the kernel (float64 rows).
TRADE_FIELDS: tuple[str, ...] = (
    "strategy",
    "instrument",
    "entry_bar",
    "exit_bar",
    "direction",
    "entry_price",
    "exit_price",
    "units",
    "notional",
    "pnl",
    "exit_reason",
)
_N_TRADE_FIELDS = len(TRADE_FIELDS)
# Where each sleeve stands after the last bar, and what it will do at the next open (the live engine's view).
STATE_FIELDS: tuple[str, ...] = (
    "direction",
    "units",
    "entry_price",
    "stop",
    "take_profit",
    "bars_held",
    "cash",
    "exit_at_next_open",
    "enter_at_next_open",
    "blocked_direction",
    "units_at_next_open",
)
# Columns of the per-strategy statistics array.
_STAT_TRADES, _STAT_WINS, _STAT_PROFIT, _STAT_LOSS, _STAT_IN_MARKET, _STAT_PRICED, _STAT_TURNOVER = range(7)
_N_STATS = 7


class BacktestInputError(ValueError):
    """Arrays handed to the kernel disagree in shape or type; the message says which."""


# ------------------------------------------------------------------ fill arithmetic (shared with live)


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


@njit(cache=True)
def entry_units(direction: int, position_fraction: float, sleeve_equity: float, close: float) -> float:
    """Signed units of an entry decided at a close: ``direction x fraction x sleeve equity / close``.

    The one sizing formula of the kernel and the live engine (module docstring, "Capital and sizing").
    """
    return direction * position_fraction * sleeve_equity / close


@njit(cache=True)
def levels_at_distances(
    entry_price: float, direction: int, stop_distance: float, take_profit_distance: float
) -> tuple[float, float]:
    """(stop, take profit) at price distances from an entry fill, as a broker applies relative levels."""
    return entry_price - direction * stop_distance, entry_price + direction * take_profit_distance


@njit(cache=True)
def protective_levels(
    entry_price: float, direction: int, atr: float, stop_atr: float, take_profit_atr: float
) -> tuple[float, float]:
    """(stop, take profit) around an entry fill, from the ATR of the signal bar."""
    return levels_at_distances(entry_price, direction, stop_atr * atr, take_profit_atr * atr)


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
    """(exit reason, trigger price before slippage) for a bar, or (-1, nan) when neither level is touched.

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
    return -1, np.nan


# ------------------------------------------------------------------------------------------- kernel


@njit(cache=True)
def _log_trade(
    trade_log: np.ndarray,
    n_logged: int,
    strategy: int,
    instrument: int,
    entry_bar: int,
    exit_bar: int,
    direction: int,
    entry_price: float,
    exit_price: float,
    units: float,
    notional: float,
    pnl: float,
    reason: int,
) -> int:
    if n_logged < trade_log.shape[0]:
        row = trade_log[n_logged]
        row[0] = strategy
        row[1] = instrument
        row[2] = entry_bar
        row[3] = exit_bar
        row[4] = direction
        row[5] = entry_price
        row[6] = exit_price
        row[7] = units
        row[8] = notional
        row[9] = pnl
        row[10] = reason
        return n_logged + 1
    return n_logged


@njit(cache=True)
def _close_trade(
    stats: np.ndarray,
    trade_log: np.ndarray,
    n_logged: int,
    strategy: int,
    instrument: int,
    entry_bar: int,
    exit_bar: int,
    direction: int,
    entry_price: float,
    exit_price: float,
    units: float,
    entry_notional: float,
    cash: float,
    cash_before_entry: float,
    fee_bps: float,
    reason: int,
) -> tuple[float, int]:
    """Book an exit fill (at an open or at a stop/take-profit trigger): cash, turnover, trade statistics and
    the trade log. Returns (cash after the exit, trades logged)."""
    value = units * exit_price
    cash += value - fee_cost(value, fee_bps)
    stats[strategy, _STAT_TURNOVER] += abs(value)
    pnl = cash - cash_before_entry
    stats[strategy, _STAT_TRADES] += 1.0
    if pnl > 0:
        stats[strategy, _STAT_WINS] += 1.0
        stats[strategy, _STAT_PROFIT] += pnl
    else:
        stats[strategy, _STAT_LOSS] -= pnl
    n_logged = _log_trade(
        trade_log,
        n_logged,
        strategy,
        instrument,
        entry_bar,
        exit_bar,
        direction,
        entry_price,
        exit_price,
        units,
        entry_notional,
        pnl,
        reason,
    )
    return cash, n_logged


@njit(cache=True)
def _population_kernel(
    signals: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    stop_atr: np.ndarray,
    take_profit_atr: np.ndarray,
    position_fraction: np.ndarray,
    max_holding_bars: np.ndarray,
    fee_bps: float,
    slippage_bps: float,
    portfolio_equity: np.ndarray,
    instrument_equity: np.ndarray,
    stats: np.ndarray,
    trade_log: np.ndarray,
    final_state: np.ndarray,
) -> int:
    """Prices are (n_instruments, n_bars) here (contiguous per instrument); returns the trades logged."""
    n_strategies, n_bars, n_instruments = signals.shape
    record_instruments = instrument_equity.shape[0] > 0
    sleeve_capital = 1.0 / n_instruments
    n_logged = 0
    for s in range(n_strategies):
        fraction = position_fraction[s]
        max_hold = max_holding_bars[s]
        for i in range(n_instruments):
            o_row = open_[i]
            h_row = high[i]
            l_row = low[i]
            c_row = close[i]
            a_row = atr[i]
            cash = sleeve_capital
            units = 0.0
            direction = 0
            stop = np.nan
            take_profit = np.nan
            entry_price = 0.0
            entry_notional = 0.0
            cash_before_entry = 0.0
            entry_bar = 0
            held = 0
            pending_exit = False
            pending_reason = EXIT_SIGNAL
            pending_entry = 0
            pending_units = 0.0
            pending_atr = np.nan
            blocked = 0
            equity = sleeve_capital
            for t in range(n_bars):
                o = o_row[t]
                if np.isnan(o):
                    portfolio_equity[s, t] += equity
                    if record_instruments:
                        instrument_equity[s, t, i] = equity
                    continue
                stats[s, _STAT_PRICED] += 1.0
                # 1. Orders decided at the previous close fill at this open: exit first, then entry.
                if pending_exit and direction != 0:
                    price = exit_fill_price(o, direction, slippage_bps)
                    cash, n_logged = _close_trade(
                        stats,
                        trade_log,
                        n_logged,
                        s,
                        i,
                        entry_bar,
                        t,
                        direction,
                        entry_price,
                        price,
                        units,
                        entry_notional,
                        cash,
                        cash_before_entry,
                        fee_bps,
                        pending_reason,
                    )
                    units = 0.0
                    direction = 0
                pending_exit = False
                entered_now = False
                if pending_entry != 0 and direction == 0:
                    price = entry_fill_price(o, pending_entry, slippage_bps)
                    cash_before_entry = cash
                    units = pending_units
                    value = units * price
                    entry_notional = abs(value)
                    cash -= value + fee_cost(value, fee_bps)
                    stats[s, _STAT_TURNOVER] += entry_notional
                    direction = pending_entry
                    entry_price = price
                    stop, take_profit = protective_levels(
                        price, direction, pending_atr, stop_atr[s], take_profit_atr[s]
                    )
                    entry_bar = t
                    held = 0
                    entered_now = True
                pending_entry = 0
                # 2. Stops and take profits inside the bar.
                if direction != 0:
                    reason, trigger = intrabar_exit(
                        direction, o, h_row[t], l_row[t], stop, take_profit, not entered_now
                    )
                    if reason >= 0:
                        price = exit_fill_price(trigger, direction, slippage_bps)
                        cash, n_logged = _close_trade(
                            stats,
                            trade_log,
                            n_logged,
                            s,
                            i,
                            entry_bar,
                            t,
                            direction,
                            entry_price,
                            price,
                            units,
                            entry_notional,
                            cash,
                            cash_before_entry,
                            fee_bps,
                            reason,
                        )
                        blocked = direction
                        units = 0.0
                        direction = 0
                # 3. Mark to market at the close.
                equity = cash + units * c_row[t]
                portfolio_equity[s, t] += equity
                if record_instruments:
                    instrument_equity[s, t, i] = equity
                # 4. Decide at the close what fills at the next open.
                signal = signals[s, t, i]
                if signal != blocked:
                    blocked = 0
                can_enter = not np.isnan(a_row[t])
                if direction != 0:
                    stats[s, _STAT_IN_MARKET] += 1.0
                    held += 1
                    if signal != direction:
                        pending_exit = True
                        pending_reason = EXIT_SIGNAL
                        if signal != 0 and can_enter:
                            pending_entry = signal
                            pending_units = entry_units(signal, fraction, equity, c_row[t])
                            pending_atr = a_row[t]
                    elif held >= max_hold:
                        pending_exit = True
                        pending_reason = EXIT_MAX_HOLDING
                        blocked = direction
                elif signal != 0 and signal != blocked and can_enter:
                    pending_entry = signal
                    pending_units = entry_units(signal, fraction, equity, c_row[t])
                    pending_atr = a_row[t]
            if final_state.shape[0] > 0:
                state = final_state[s, i]
                state[0] = direction
                state[1] = units
                state[2] = entry_price if direction != 0 else np.nan
                state[3] = stop if direction != 0 else np.nan
                state[4] = take_profit if direction != 0 else np.nan
                state[5] = held if direction != 0 else 0
                state[6] = cash
                state[7] = pending_exit and direction != 0
                state[8] = pending_entry
                state[9] = blocked
                state[10] = pending_units if pending_entry != 0 else 0.0
            if direction != 0:
                last = n_bars - 1
                while last > 0 and np.isnan(c_row[last]):
                    last -= 1
                pnl = equity - cash_before_entry
                stats[s, _STAT_TRADES] += 1.0
                if pnl > 0:
                    stats[s, _STAT_WINS] += 1.0
                    stats[s, _STAT_PROFIT] += pnl
                else:
                    stats[s, _STAT_LOSS] -= pnl
                n_logged = _log_trade(
                    trade_log,
                    n_logged,
                    s,
                    i,
                    entry_bar,
                    last,
                    direction,
                    entry_price,
                    c_row[last],
                    units,
                    entry_notional,
                    pnl,
                    EXIT_END_OF_DATA,
                )
    return n_logged


# ------------------------------------------------------------------------------------------ wrappers


@dataclass(frozen=True)
class MarketArrays:
    """Prices and ATR on a (date x symbol) grid, shape (n_bars, n_instruments); NaN where no bar."""

    dates: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    atr: np.ndarray

    def window(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> MarketArrays:
        """Bars with start <= date < end (either bound may be None)."""
        mask = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            mask &= self.dates >= start
        if end is not None:
            mask &= self.dates < end
        return MarketArrays(
            self.dates[mask],
            self.symbols,
            *(a[mask] for a in (self.open, self.high, self.low, self.close, self.atr)),
        )


def market_arrays(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    atr_column: str = "what_atr_14",
    dates: pd.DatetimeIndex | None = None,
    symbols: Sequence[str] | None = None,
) -> MarketArrays:
    """Pivot the canonical bar frame (adjusted prices) and the feature frame's ATR onto one grid.

    Pass the ``dates`` and ``symbols`` of a FeaturePanel so signals and prices line up row for row.
    """
    if atr_column not in features.columns:
        raise BacktestInputError(
            f"feature frame has no {atr_column!r} column; the stops need an ATR in price units"
        )
    symbols = tuple(symbols) if symbols is not None else tuple(sorted(bars["symbol"].unique()))
    dates = dates if dates is not None else pd.DatetimeIndex(sorted(bars["date"].unique()))
    index = pd.MultiIndex.from_product([dates, symbols], names=["date", "symbol"])
    keyed = bars.set_index(["date", "symbol"]).reindex(index)
    shape = (len(dates), len(symbols))

    def grid(series: pd.Series) -> np.ndarray:
        return series.to_numpy(dtype=np.float64, na_value=np.nan).reshape(shape)

    atr = features.set_index(["date", "symbol"])[atr_column].reindex(index)
    # Adjusted prices, in the same units as the sensory cortex's ATR (scaled by adj_close / close).
    adjustment = grid(keyed["adj_close"]) / grid(keyed["close"])
    return MarketArrays(
        dates=dates,
        symbols=symbols,
        open=grid(keyed["open"]) * adjustment,
        high=grid(keyed["high"]) * adjustment,
        low=grid(keyed["low"]) * adjustment,
        close=grid(keyed["adj_close"]),
        atr=grid(atr),
    )


@dataclass(frozen=True)
class RiskArrays:
    """The risk genes of a population, one entry per strategy, in the kernel's dtypes."""

    stop_atr: np.ndarray
    take_profit_atr: np.ndarray
    position_fraction: np.ndarray
    max_holding_bars: np.ndarray

    @classmethod
    def from_genomes(cls, genomes: Sequence[Genome]) -> RiskArrays:
        return cls(
            stop_atr=np.array([g.risk.stop_atr for g in genomes], dtype=np.float64),
            take_profit_atr=np.array([g.risk.take_profit_atr for g in genomes], dtype=np.float64),
            position_fraction=np.array([g.risk.position_fraction for g in genomes], dtype=np.float64),
            max_holding_bars=np.array([g.risk.max_holding_bars for g in genomes], dtype=np.int64),
        )


@dataclass(frozen=True)
class PopulationResult:
    equity: np.ndarray
    returns: np.ndarray
    instrument_equity: np.ndarray | None
    trade_counts: np.ndarray
    winning_trades: np.ndarray
    gross_profit: np.ndarray
    gross_loss: np.ndarray
    exposure: np.ndarray
    turnover: np.ndarray


def _run_kernel(
    signals: np.ndarray,
    market: MarketArrays,
    risk: RiskArrays,
    fee_bps: float,
    slippage_bps: float,
    record_instruments: bool,
    trade_capacity: int,
) -> tuple[PopulationResult, np.ndarray, np.ndarray]:
    if signals.dtype != np.int8 or signals.ndim != 3:
        raise BacktestInputError(
            f"signals must be int8 (n_strategies, n_bars, n_instruments), got {signals.dtype} {signals.shape}"
        )
    n_strategies, n_bars, n_instruments = signals.shape
    if market.open.shape != (n_bars, n_instruments):
        raise BacktestInputError(
            f"prices have shape {market.open.shape}, signals need {(n_bars, n_instruments)}"
        )
    for name, genes in vars(risk).items():
        if genes.shape != (n_strategies,):
            raise BacktestInputError(f"risk gene {name} has shape {genes.shape}, expected ({n_strategies},)")
    if fee_bps < 0 or slippage_bps < 0:
        raise BacktestInputError(f"fee_bps and slippage_bps must be >= 0, got {fee_bps} and {slippage_bps}")
    prices = [
        np.ascontiguousarray(a.T, dtype=np.float64)
        for a in (market.open, market.high, market.low, market.close, market.atr)
    ]
    equity = np.zeros((n_strategies, n_bars), dtype=np.float64)
    instrument_equity = np.zeros(
        (n_strategies, n_bars, n_instruments) if record_instruments else (0, 0, 0), dtype=np.float64
    )
    stats = np.zeros((n_strategies, _N_STATS), dtype=np.float64)
    trade_log = np.empty((trade_capacity, _N_TRADE_FIELDS), dtype=np.float64)
    # The final state rides along with the trade log: both only matter for single-strategy detail.
    state_shape = (n_strategies, n_instruments, len(STATE_FIELDS)) if trade_capacity else (0, 0, 0)
    final_state = np.zeros(state_shape, dtype=np.float64)
    n_logged = _population_kernel(
        np.ascontiguousarray(signals),
        *prices,
        risk.stop_atr,
        risk.take_profit_atr,
        risk.position_fraction,
        risk.max_holding_bars,
        float(fee_bps),
        float(slippage_bps),
        equity,
        instrument_equity,
        stats,
        trade_log,
        final_state,
    )
    previous = np.empty_like(equity)
    previous[:, 0] = 1.0
    previous[:, 1:] = equity[:, :-1]
    result = PopulationResult(
        equity=equity,
        returns=equity / previous - 1.0,
        instrument_equity=instrument_equity if record_instruments else None,
        trade_counts=stats[:, _STAT_TRADES].astype(np.int64),
        winning_trades=stats[:, _STAT_WINS].astype(np.int64),
        gross_profit=stats[:, _STAT_PROFIT],
        gross_loss=stats[:, _STAT_LOSS],
        exposure=np.divide(stats[:, _STAT_IN_MARKET], np.maximum(stats[:, _STAT_PRICED], 1.0)),
        turnover=stats[:, _STAT_TURNOVER],
    )
    return result, trade_log[:n_logged], final_state


def simulate_population(
    signals: np.ndarray,
    market: MarketArrays,
    risk: RiskArrays,
    fee_bps: float = 1.0,
    slippage_bps: float = 1.0,
    record_instruments: bool = False,
) -> PopulationResult:
    """Backtest every strategy on every instrument in one compiled call (see the module docstring)."""
    result, _, _ = _run_kernel(signals, market, risk, fee_bps, slippage_bps, record_instruments, 0)
    return result


@dataclass(frozen=True)
class StrategyBacktest:
    """``final_state`` has one row per symbol (columns STATE_FIELDS): the position after the last bar and
    the order the kernel would fill at the next open, which is what the live engine must reproduce."""

    result: PopulationResult
    trades: pd.DataFrame
    final_state: pd.DataFrame


def simulate_strategy(
    genome: Genome,
    signals: np.ndarray,
    market: MarketArrays,
    fee_bps: float = 1.0,
    slippage_bps: float = 1.0,
) -> StrategyBacktest:
    """One strategy in detail: the same kernel, with per-instrument equity and the trade list.

    ``signals`` is (n_bars, n_instruments) int8, as ``genome.panel_signals`` returns.
    """
    validate_genome(genome)
    stacked = np.ascontiguousarray(signals, dtype=np.int8)[None]
    # At most two trades close per bar and sleeve (a signal exit at the open, then a stop on the new entry).
    capacity = 2 * signals.shape[0] * signals.shape[1] + signals.shape[1]
    result, log, state = _run_kernel(
        stacked, market, RiskArrays.from_genomes([genome]), fee_bps, slippage_bps, True, capacity
    )
    trades = pd.DataFrame(log, columns=list(TRADE_FIELDS))
    instrument = trades["instrument"].to_numpy(dtype=np.int64)
    entry_bar = trades["entry_bar"].to_numpy(dtype=np.int64)
    exit_bar = trades["exit_bar"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(
        {
            "symbol": np.asarray(market.symbols, dtype=object)[instrument],
            "direction": trades["direction"].astype(np.int8),
            "entry_date": market.dates[entry_bar],
            "exit_date": market.dates[exit_bar],
            "entry_price": trades["entry_price"],
            "exit_price": trades["exit_price"],
            "units": trades["units"],
            "notional": trades["notional"],
            "pnl": trades["pnl"],
            "return": trades["pnl"] / trades["notional"],
            "exit_reason": np.asarray(EXIT_REASONS, dtype=object)[
                trades["exit_reason"].to_numpy(dtype=np.int64)
            ],
        }
    )
    frame = frame.sort_values(["entry_date", "symbol"], kind="mergesort").reset_index(drop=True)
    final_state = pd.DataFrame(
        state[0], index=pd.Index(market.symbols, name="symbol"), columns=list(STATE_FIELDS)
    )
    for column in ("direction", "bars_held", "enter_at_next_open", "blocked_direction"):
        final_state[column] = final_state[column].astype(np.int64)
    final_state["exit_at_next_open"] = final_state["exit_at_next_open"].astype(bool)
    return StrategyBacktest(result=result, trades=frame, final_state=final_state)
