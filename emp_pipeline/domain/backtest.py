"""The backtest kernel: a whole population of strategies over many instruments in one compiled call.

Input is the desired direction per bar from ``genome.population_signals`` (int8, shape
(n_strategies, n_bars, n_instruments)) plus open/high/low/close/ATR arrays (n_bars, n_instruments) and the
per-strategy risk genes. One strategy on one instrument for one bar is one *strategy-bar*.

Semantics (every number below is what ``simulate_population``, the live engine and the paper broker agree on,
because all three run the one position state machine, `sleeve.step_sleeve`, which this kernel calls for every
strategy-bar):

* **Capital and sizing.** A strategy starts with equity 1.0 split equally into one sleeve per instrument;
  sleeves compound independently and the portfolio equity is their sum. The quantity of an entry is decided
  at the close of the signal bar t, where a live market order must carry it: ``units = direction x
  position_fraction x sleeve equity at close t / close t`` (`entry_units`, shared with the live engine).
  The sleeve equity at close t is cash plus any position marked at that close (before the exit costs of a
  reversal). The units are fixed when decided and executed at the next open, so the notional actually
  traded is ``|units| x fill price``.
* **Timing.** The signal of bar t is read at t's close; the order fills at the open of the next bar that has
  a price for that instrument (bars with a NaN open are skipped: no fills, equity carried).
* **Costs** (`costs.Costs`). Every fill pays slippage against the trader (``slippage_bps`` of the price:
  buys fill higher, sells lower) and a fee of ``fee_bps`` of the fill's notional, per side.
* **Spread and overnight financing** (`financing`, per instrument on `MarketArrays`). Bars are bid prices:
  every buy (a long's entry, a short's exit, a short's stop or take profit, which trigger on the ask) pays
  the bar's spread on top; a position held across a rollover is credited or charged the instrument's swap,
  triple on its triple weekday. Both zero (the default) leave every number as it was without them.
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
exposure (share of priced instrument-bars in a position), turnover (traded notional / initial capital) and
the costs paid, each on its own: fees, spread and swaps (credited swaps count negative), per strategy.
The single-strategy path ``simulate_strategy`` runs the same kernel with a trade log and each sleeve's final
state (position, levels, and the order due at the next open).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from numba import njit

from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.financing import bar_spreads, nights_grid, swap_terms
from emp_pipeline.domain.genome import Genome, validate_genome
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.sleeve import (
    ALL_PHASES,
    ENTRY_LEG,
    EXIT_END_OF_DATA,
    EXIT_LEG,
    EXIT_REASONS,
    FINANCING_LEG,
    PROTECTIVE_LEG,
    FillCosts,
    SleeveRules,
    SwapTerms,
    new_fills,
    start_sleeve,
    step_sleeve,
)

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
_STAT_FEES, _STAT_SPREAD, _STAT_SWAP_COST = 7, 8, 9
_N_STATS = 10


class BacktestInputError(ValueError):
    """Arrays handed to the kernel disagree in shape or type; the message says which."""


# ------------------------------------------------------------------------------------------- kernel


@njit(cache=True)
def _log_trade(
    trade_log: np.ndarray, n_logged: int, strategy: int, instrument: int, entry_bar: int, exit_bar: int,
    direction: int, entry_price: float, exit_price: float, units: float, entry_notional: float, pnl: float,
    reason: int,
) -> int:  # fmt: skip
    """Append a closed trade to the log while it has room; returns the trades logged."""
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
        row[8] = entry_notional
        row[9] = pnl
        row[10] = reason
        return n_logged + 1
    return n_logged


class _TradeStats(NamedTuple):
    """A strategy's running trade statistics, carried in registers through a sleeve's bars."""

    trades: float
    wins: float
    profit: float
    loss: float
    turnover: float


@njit(cache=True, inline="always")
def _count_trade(totals: _TradeStats, pnl: float, exit_value: float) -> _TradeStats:
    """The totals after a closed trade whose exit traded ``exit_value`` of notional."""
    if pnl > 0:
        return _TradeStats(
            totals.trades + 1.0,
            totals.wins + 1.0,
            totals.profit + pnl,
            totals.loss,
            totals.turnover + exit_value,
        )
    return _TradeStats(
        totals.trades + 1.0, totals.wins, totals.profit, totals.loss - pnl, totals.turnover + exit_value
    )


@njit(cache=True, inline="always")
def _simulate(
    signals: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    spread: np.ndarray,
    nights: np.ndarray,
    swap: np.ndarray,
    stop_atr: np.ndarray,
    take_profit_atr: np.ndarray,
    position_fraction: np.ndarray,
    max_holding_bars: np.ndarray,
    costs: FillCosts,
    portfolio_equity: np.ndarray,
    instrument_equity: np.ndarray,
    stats: np.ndarray,
    trade_log: np.ndarray,
    final_state: np.ndarray,
    fill_record: np.ndarray,
    detail: bool,
) -> int:
    """`sleeve.step_sleeve` over every (strategy, instrument, bar), booking what it fills.

    Prices, spreads and nights are (n_instruments, n_bars) here (contiguous per instrument), ``swap`` the
    instruments' `SwapTerms` rows; returns the trades logged.
    ``detail`` (a constant in each caller, so the compiled population loop carries no logging at all) logs
    every trade and each sleeve's final state.
    """
    n_strategies, n_bars, n_instruments = signals.shape
    record_instruments = instrument_equity.shape[0] > 0
    sleeve_capital = 1.0 / n_instruments
    n_logged = 0
    fills = fill_record[0]
    for s in range(n_strategies):
        rules = SleeveRules(stop_atr[s], take_profit_atr[s], position_fraction[s], max_holding_bars[s])
        for i in range(n_instruments):
            o_row = open_[i]
            h_row = high[i]
            l_row = low[i]
            c_row = close[i]
            a_row = atr[i]
            s_row = spread[i]
            n_row = nights[i]
            terms = SwapTerms(swap[i, 0], swap[i, 1], swap[i, 2], swap[i, 3])
            state = start_sleeve(sleeve_capital)
            fees = 0.0
            spread_paid = 0.0
            swap_paid = 0.0
            # Counts and sums stay in registers through the bars and continue the strategy's running totals
            # (the same additions in the same order as booking each trade into ``stats``).
            priced = 0
            in_market = 0
            totals = _TradeStats(
                stats[s, _STAT_TRADES], stats[s, _STAT_WINS], stats[s, _STAT_PROFIT], stats[s, _STAT_LOSS],
                stats[s, _STAT_TURNOVER],
            )  # fmt: skip
            for t in range(n_bars):
                o = o_row[t]
                if np.isnan(o):
                    portfolio_equity[s, t] += state.equity
                    if record_instruments:
                        instrument_equity[s, t, i] = state.equity
                    continue
                priced += 1
                state, legs = step_sleeve(
                    state, t, o, h_row[t], l_row[t], c_row[t], a_row[t], s_row[t], n_row[t], signals[s, t, i],
                    rules, costs, terms, ALL_PHASES, fills,
                )  # fmt: skip
                if legs:
                    if legs & FINANCING_LEG:
                        swap_paid -= fills.swap
                    if legs & EXIT_LEG:
                        fees += fills.exit_fee
                        spread_paid += fills.exit_spread
                        totals = _count_trade(
                            totals, fills.exit_pnl, abs(fills.exit_units * fills.exit_price)
                        )
                        if detail:
                            n_logged = _log_trade(
                                trade_log,
                                n_logged,
                                s,
                                i,
                                fills.exit_entry_bar,
                                t,
                                fills.exit_direction,
                                fills.exit_entry_price,
                                fills.exit_price,
                                fills.exit_units,
                                fills.exit_entry_notional,
                                fills.exit_pnl,
                                fills.exit_reason,
                            )
                    if legs & ENTRY_LEG:
                        fees += fills.entry_fee
                        spread_paid += fills.entry_spread
                        totals = _TradeStats(
                            totals.trades,
                            totals.wins,
                            totals.profit,
                            totals.loss,
                            totals.turnover + state.entry_notional,
                        )
                    if legs & PROTECTIVE_LEG:
                        fees += fills.protective_fee
                        spread_paid += fills.protective_spread
                        value = abs(fills.protective_units * fills.protective_price)
                        totals = _count_trade(totals, fills.protective_pnl, value)
                        if detail:
                            n_logged = _log_trade(
                                trade_log,
                                n_logged,
                                s,
                                i,
                                fills.protective_entry_bar,
                                t,
                                fills.protective_direction,
                                fills.protective_entry_price,
                                fills.protective_price,
                                fills.protective_units,
                                fills.protective_entry_notional,
                                fills.protective_pnl,
                                fills.protective_reason,
                            )
                portfolio_equity[s, t] += state.equity
                if record_instruments:
                    instrument_equity[s, t, i] = state.equity
                in_market += state.direction != 0
            if state.direction != 0:  # still open after the last bar: marked at the last close, a trade
                last = n_bars - 1
                while last > 0 and np.isnan(c_row[last]):
                    last -= 1
                pnl = state.equity - state.cash_before_entry
                totals = _count_trade(totals, pnl, 0.0)
                if detail:
                    n_logged = _log_trade(
                        trade_log,
                        n_logged,
                        s,
                        i,
                        state.entry_bar,
                        last,
                        state.direction,
                        state.entry_price,
                        c_row[last],
                        state.units,
                        state.entry_notional,
                        pnl,
                        EXIT_END_OF_DATA,
                    )
            stats[s, _STAT_TRADES] = totals.trades
            stats[s, _STAT_WINS] = totals.wins
            stats[s, _STAT_PROFIT] = totals.profit
            stats[s, _STAT_LOSS] = totals.loss
            stats[s, _STAT_TURNOVER] = totals.turnover
            stats[s, _STAT_PRICED] += priced
            stats[s, _STAT_FEES] += fees
            stats[s, _STAT_SPREAD] += spread_paid
            stats[s, _STAT_SWAP_COST] += swap_paid
            stats[s, _STAT_IN_MARKET] += in_market
            direction = state.direction
            if detail:
                row = final_state[s, i]
                row[0] = direction
                row[1] = state.units
                row[2] = state.entry_price if direction != 0 else np.nan
                row[3] = state.stop if direction != 0 else np.nan
                row[4] = state.take_profit if direction != 0 else np.nan
                row[5] = state.held if direction != 0 else 0
                row[6] = state.cash
                row[7] = state.pending_exit and direction != 0
                row[8] = state.pending_entry
                row[9] = state.blocked
                row[10] = state.pending_units if state.pending_entry != 0 else 0.0
    return n_logged


@njit(cache=True)
def _population_kernel(
    signals: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    atr: np.ndarray, spread: np.ndarray, nights: np.ndarray, swap: np.ndarray, stop_atr: np.ndarray,
    take_profit_atr: np.ndarray, position_fraction: np.ndarray,
    max_holding_bars: np.ndarray, costs: FillCosts, portfolio_equity: np.ndarray,
    instrument_equity: np.ndarray, stats: np.ndarray, trade_log: np.ndarray, final_state: np.ndarray,
    fill_record: np.ndarray,
) -> int:  # fmt: skip
    """`_simulate` without the trade log and final states (the research path: the population's figures)."""
    return _simulate(
        signals, open_, high, low, close, atr, spread, nights, swap, stop_atr, take_profit_atr,
        position_fraction, max_holding_bars,
        costs, portfolio_equity, instrument_equity, stats, trade_log, final_state, fill_record, False,
    )  # fmt: skip


@njit(cache=True)
def _detailed_kernel(
    signals: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    atr: np.ndarray, spread: np.ndarray, nights: np.ndarray, swap: np.ndarray, stop_atr: np.ndarray,
    take_profit_atr: np.ndarray, position_fraction: np.ndarray,
    max_holding_bars: np.ndarray, costs: FillCosts, portfolio_equity: np.ndarray,
    instrument_equity: np.ndarray, stats: np.ndarray, trade_log: np.ndarray, final_state: np.ndarray,
    fill_record: np.ndarray,
) -> int:  # fmt: skip
    """`_simulate` with every trade logged and each sleeve's final state (one strategy in detail)."""
    return _simulate(
        signals, open_, high, low, close, atr, spread, nights, swap, stop_atr, take_profit_atr,
        position_fraction, max_holding_bars,
        costs, portfolio_equity, instrument_equity, stats, trade_log, final_state, fill_record, True,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ wrappers


@dataclass(frozen=True)
class MarketArrays:
    """Prices and ATR on a (date x symbol) grid, shape (n_bars, n_instruments); NaN where no bar.

    The instruments' execution terms ride along (`financing`): ``spread`` (price units) and ``nights``
    (rollovers financed at each bar's start) on the same grid, ``swap`` one `SwapTerms` row per instrument.
    None means none charged (zeros).
    """

    dates: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    atr: np.ndarray
    spread: np.ndarray | None = None
    nights: np.ndarray | None = None
    swap: np.ndarray | None = None

    def spread_grid(self) -> np.ndarray:
        return self.spread if self.spread is not None else np.zeros_like(self.open)

    def nights_grid(self) -> np.ndarray:
        return self.nights if self.nights is not None else np.zeros_like(self.open)

    def swap_rows(self) -> np.ndarray:
        return self.swap if self.swap is not None else np.zeros((len(self.symbols), 4))

    def swap_of(self, instrument: int) -> SwapTerms:
        return SwapTerms(*(float(value) for value in self.swap_rows()[instrument]))

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
            spread=None if self.spread is None else self.spread[mask],
            nights=None if self.nights is None else self.nights[mask],
            swap=self.swap,
        )


def market_arrays(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    atr_column: str = "what_atr_14",
    dates: pd.DatetimeIndex | None = None,
    symbols: Sequence[str] | None = None,
    instruments: Mapping[str, InstrumentMeta] | None = None,
) -> MarketArrays:
    """Pivot the canonical bar frame (adjusted prices) and the feature frame's ATR onto one grid.

    Pass the ``dates`` and ``symbols`` of a FeaturePanel so signals and prices line up row for row, and the
    ``instruments`` whose spread and swaps are charged (`financing`; without them none are).
    """
    if atr_column not in features.columns:
        raise BacktestInputError(
            f"feature frame has no {atr_column!r} column; the stops need an ATR in price units"
        )
    symbols = tuple(symbols) if symbols is not None else tuple(sorted(bars["symbol"].unique()))
    dates = dates if dates is not None else pd.DatetimeIndex(sorted(bars["date"].unique()))
    index = pd.MultiIndex.from_product([dates, symbols], names=["date", "symbol"])
    keyed = (
        bars.assign(spread=bar_spreads(bars, instruments or {})).set_index(["date", "symbol"]).reindex(index)
    )
    shape = (len(dates), len(symbols))

    def grid(series: pd.Series) -> np.ndarray:
        return series.to_numpy(dtype=np.float64, na_value=np.nan).reshape(shape)

    atr = features.set_index(["date", "symbol"])[atr_column].reindex(index)
    # Adjusted prices, in the same units as the sensory cortex's ATR (scaled by adj_close / close).
    adjustment = grid(keyed["adj_close"]) / grid(keyed["close"])
    open_ = grid(keyed["open"]) * adjustment
    terms = instruments or {}
    return MarketArrays(
        dates=dates,
        symbols=symbols,
        open=open_,
        high=grid(keyed["high"]) * adjustment,
        low=grid(keyed["low"]) * adjustment,
        close=grid(keyed["adj_close"]),
        atr=grid(atr),
        spread=grid(keyed["spread"]) * adjustment,
        nights=nights_grid(open_, dates, symbols, terms),
        swap=np.array([swap_terms(terms.get(symbol)) for symbol in symbols], dtype=np.float64).reshape(-1, 4),
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
    fees: np.ndarray  # costs paid per strategy, each on its own (fractions of the initial capital)
    spread_costs: np.ndarray
    swap_costs: np.ndarray  # financing paid; negative when the swaps credited more than they charged


def _run_kernel(
    signals: np.ndarray,
    market: MarketArrays,
    risk: RiskArrays,
    costs: Costs,
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
    prices = [
        np.ascontiguousarray(a.T, dtype=np.float64)
        for a in (
            market.open, market.high, market.low, market.close, market.atr, market.spread_grid(),
            market.nights_grid(),
        )
    ]  # fmt: skip
    equity = np.zeros((n_strategies, n_bars), dtype=np.float64)
    instrument_equity = np.zeros(
        (n_strategies, n_bars, n_instruments) if record_instruments else (0, 0, 0), dtype=np.float64
    )
    stats = np.zeros((n_strategies, _N_STATS), dtype=np.float64)
    trade_log = np.empty((trade_capacity, _N_TRADE_FIELDS), dtype=np.float64)
    # The final state rides along with the trade log: both only matter for single-strategy detail.
    state_shape = (n_strategies, n_instruments, len(STATE_FIELDS)) if trade_capacity else (0, 0, 0)
    final_state = np.zeros(state_shape, dtype=np.float64)
    kernel = _detailed_kernel if trade_capacity else _population_kernel
    n_logged = kernel(
        np.ascontiguousarray(signals),
        *prices,
        np.ascontiguousarray(market.swap_rows(), dtype=np.float64),
        risk.stop_atr,
        risk.take_profit_atr,
        risk.position_fraction,
        risk.max_holding_bars,
        costs.fill_costs(),
        equity,
        instrument_equity,
        stats,
        trade_log,
        final_state,
        new_fills(),
    )
    # Per-bar returns (equity before the first bar is 1.0), without a shifted copy of the equity.
    returns = np.empty_like(equity)
    returns[:, 0] = equity[:, 0]
    np.divide(equity[:, 1:], equity[:, :-1], out=returns[:, 1:])
    returns -= 1.0
    result = PopulationResult(
        equity=equity,
        returns=returns,
        instrument_equity=instrument_equity if record_instruments else None,
        trade_counts=stats[:, _STAT_TRADES].astype(np.int64),
        winning_trades=stats[:, _STAT_WINS].astype(np.int64),
        gross_profit=stats[:, _STAT_PROFIT],
        gross_loss=stats[:, _STAT_LOSS],
        exposure=np.divide(stats[:, _STAT_IN_MARKET], np.maximum(stats[:, _STAT_PRICED], 1.0)),
        turnover=stats[:, _STAT_TURNOVER],
        fees=stats[:, _STAT_FEES],
        spread_costs=stats[:, _STAT_SPREAD],
        swap_costs=stats[:, _STAT_SWAP_COST],
    )
    return result, trade_log[:n_logged], final_state


def simulate_population(
    signals: np.ndarray,
    market: MarketArrays,
    risk: RiskArrays,
    costs: Costs,
    record_instruments: bool = False,
) -> PopulationResult:
    """Backtest every strategy on every instrument in one compiled call (see the module docstring)."""
    result, _, _ = _run_kernel(signals, market, risk, costs, record_instruments, 0)
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
    costs: Costs,
) -> StrategyBacktest:
    """One strategy in detail: the same kernel, with per-instrument equity and the trade list.

    ``signals`` is (n_bars, n_instruments) int8, as ``genome.panel_signals`` returns.
    """
    validate_genome(genome)
    stacked = np.ascontiguousarray(signals, dtype=np.int8)[None]
    # At most two trades close per bar and sleeve (a signal exit at the open, then a stop on the new entry).
    capacity = 2 * signals.shape[0] * signals.shape[1] + signals.shape[1]
    result, log, state = _run_kernel(
        stacked, market, RiskArrays.from_genomes([genome]), costs, True, capacity
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
