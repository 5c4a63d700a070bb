"""The parity comparison: where the live path's trades, fills and equity first part from the backtest's.

Three layers, each reported with its first divergence (bar, symbol, field, both values):

* ``inputs``: a value the genome reads (or the ATR, the regime, the warm-up flag) that the replay, recomputing
  it from the bars up to a step as a daily partition would, finds different from what the backtest used.
  That is look-ahead in a feature or a rule, caught on the live path.
* ``decision``: the live decision path (signals, the sleeve equity of the kernel's own step, and the engine's
  own `decide_orders` at the last bar) against the kernel's signals and per-instrument equity.
* ``execution``: what the paper broker actually filled (sides, quantities, fill prices, fees, entry and exit
  bars) and the account's equity against the kernel's trade list and equity curve.

Trade quantities are compared in kernel units (the live quantity divided by the capital behind 1.0 of kernel
equity) and fees (quantity x price) to ``EQUITY_RTOL`` relative, like the equity; fill prices to
``PRICE_RTOL`` (a last-bit difference between ``open * adj / close`` and ``open * (adj / close)`` is not a
different fill).

The live order path rounds every quantity onto the instrument's volume grid (toward zero, and skips an entry
below the minimum volume: `execution.order_for_target`). That is execution, not a divergence, so the
backtest's trades are compared after the same rounding (`live_volumes`) and its equity after scaling each
trade's share of it by the rounded fraction (`expected_live_equity`), overnight swaps included (the paper
account books them: `broker.paper_financing`). What stays a failure is a real divergence: another side,
another bar, another volume after rounding, an order missing on either side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emp_pipeline.domain.execution import round_to_step
from emp_pipeline.domain.instruments import InstrumentMeta

EQUITY_RTOL = 1e-9
PRICE_RTOL = 1e-12
TRADE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "direction",
    "entry_date",
    "exit_date",
    "units",
    "entry_price",
    "exit_price",
    "entry_fee",
    "exit_fee",
)


@dataclass(frozen=True)
class Divergence:
    """The first place one layer of the live path parts from the backtest."""

    layer: str
    date: pd.Timestamp
    symbol: str  # "" for a portfolio-level field (equity)
    field: str
    backtest: object
    live: object
    note: str = ""

    def describe(self) -> str:
        where = f"{bar_label(self.date)} {self.symbol}".rstrip()
        note = f" ({self.note})" if self.note else ""
        return (
            f"[{self.layer}] {where} {self.field}: backtest {_fmt(self.backtest)} vs live {_fmt(self.live)}"
            f"{note}"
        )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.12g}"
    if isinstance(value, pd.Timestamp):
        return bar_label(value)
    return repr(value)


def bar_label(bar: pd.Timestamp) -> str:
    """A bar as reports name it: its day for daily bars (labelled at midnight), day and time intraday."""
    return f"{bar:%Y-%m-%d}" if bar == bar.normalize() else f"{bar:%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class ParityReport:
    strategy_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    n_bars: int
    symbols: tuple[str, ...]
    backtest_trades: pd.DataFrame
    live_trades: pd.DataFrame
    equity: pd.DataFrame  # columns backtest, decision, live (kernel units), indexed by date
    divergences: tuple[Divergence, ...]
    audited_bars: tuple[pd.Timestamp, ...]
    elapsed_s: float
    notes: tuple[str, ...] = field(default=())
    rounded_trades: int = 0  # backtest trades whose volume the live path rounds onto the volume grid
    untradeable_trades: int = 0  # backtest trades below the minimum volume after rounding: never sent
    booked_swaps: float = 0.0  # overnight swaps the paper account booked (account currency, credited > 0)

    @property
    def passed(self) -> bool:
        return not self.divergences

    @property
    def decision_passed(self) -> bool:
        """No look-ahead and the live state machine matches the kernel (execution details aside)."""
        return not any(d.layer in ("inputs", "decision") for d in self.divergences)

    def first(self, layer: str | None = None) -> Divergence | None:
        found = [d for d in self.divergences if layer is None or d.layer == layer]
        return min(found, key=lambda d: d.date) if found else None

    def describe(self) -> str:
        head = (
            f"parity replay of {self.strategy_id} over {self.n_bars} bars x {len(self.symbols)} symbols "
            f"({bar_label(self.start)} .. {bar_label(self.end)}): "
            f"{len(self.backtest_trades)} backtest trades, "
            f"{len(self.live_trades)} live trades, {len(self.audited_bars)} bars audited point in time, "
            f"{self.elapsed_s:.1f} s"
            + (f", overnight swaps booked {self.booked_swaps:+,.2f}" if self.booked_swaps else "")
        )
        notes = [f"  note: {n}" for n in self.notes]
        if self.passed and not (self.rounded_trades or self.untradeable_trades):
            lines = [head, "identical: same trades, same fill prices, equity equal to 1e-9 relative"]
        elif self.passed:
            lines = [
                head,
                f"identical after rounding volumes to the instruments' volume steps as the live order path "
                f"does ({self.rounded_trades} trade(s) rounded, {self.untradeable_trades} below the minimum "
                "volume): same sides, bars and fill prices, equity as the rounded volumes make it",
            ]
        else:
            lines = [head, "diverges:"] + [f"  {d.describe()}" for d in self.divergences]
        return "\n".join(lines + notes)


# ------------------------------------------------------------------------------------------- comparisons


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


def compare_equity(
    dates: pd.DatetimeIndex,
    backtest: np.ndarray,
    live: np.ndarray,
    layer: str,
    field_name: str,
    tolerance: np.ndarray | None = None,
) -> Divergence | None:
    """The first bar where two equity curves differ by more than EQUITY_RTOL relative (plus ``tolerance``)."""
    scale = np.maximum(np.maximum(np.abs(backtest), np.abs(live)), 1e-300)
    allowed = EQUITY_RTOL * scale + (0.0 if tolerance is None else tolerance)
    bad = np.flatnonzero(~(np.abs(backtest - live) <= allowed))
    if len(bad) == 0:
        return None
    row = int(bad[0])
    return Divergence(layer, dates[row], "", field_name, float(backtest[row]), float(live[row]))


def compare_grids(
    dates: pd.DatetimeIndex,
    symbols: tuple[str, ...],
    backtest: np.ndarray,
    live: np.ndarray,
    layer: str,
    field_name: str,
    rtol: float = 0.0,
) -> Divergence | None:
    """The first (bar, symbol) where two (n_bars, n_symbols) grids differ (NaN equal to NaN)."""
    a = backtest.astype(np.float64)
    b = live.astype(np.float64)
    same = (np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))) | (np.isnan(a) & np.isnan(b))
    bad = np.argwhere(~same)
    if len(bad) == 0:
        return None
    row, column = (int(x) for x in bad[0])
    return Divergence(
        layer, dates[row], symbols[column], field_name, backtest[row, column].item(), live[row, column].item()
    )


def live_volumes(
    trades: pd.DataFrame, instruments: Mapping[str, InstrumentMeta], capital: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """The backtest's trades as the live order path can place them, and each one's rounded fraction.

    A trade's account quantity (kernel units x ``capital``) is rounded toward zero onto the instrument's
    volume grid (`round_to_step`, as `order_for_target` does); its units and fees scale with it. An entry
    from flat whose rounded quantity is below the minimum volume is never sent (`order_for_target` skips
    it), nor is one that rounds to nothing: such a trade is dropped (fraction 0). A reversal's order also
    closes the previous position, so it is sent whatever its size.
    """
    fractions = np.ones(len(trades))
    keep = np.ones(len(trades), dtype=bool)
    rounded = trades.copy()
    for row, trade in enumerate(trades.itertuples(index=False)):
        meta = instruments[str(trade.symbol)]
        units = float(trade.units)
        quantity = round_to_step(units * capital, meta.step_volume)
        reverses = bool(
            ((trades["symbol"] == trade.symbol) & (trades["exit_date"] == trade.entry_date)).any()
        )
        below_minimum = quantity < max(meta.min_volume, meta.step_volume) * (1 - 1e-9)
        if quantity == 0 or (below_minimum and not reverses):
            keep[row], fractions[row] = False, 0.0
            continue
        fractions[row] = quantity / capital / units if units > 0 else 1.0
    rounded["units"] = trades["units"].to_numpy(dtype=np.float64) * fractions
    for column in ("entry_fee", "exit_fee"):
        rounded[column] = trades[column].to_numpy(dtype=np.float64) * fractions
    return rounded.loc[keep].reset_index(drop=True), fractions


def expected_live_equity(
    dates: pd.DatetimeIndex,
    symbols: Sequence[str],
    instrument_equity: np.ndarray,
    trades: pd.DataFrame,
    fractions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's equity with every trade's volume scaled by its rounded fraction, and the tolerance.

    A sleeve's equity moves only by what its position earns and pays (price moves, fees, spread, swaps),
    all linear in the volume, so each bar's change of a sleeve belongs to the trade held over it and
    scales with that trade's fraction. On a bar two trades share (a reversal at the open, a stop on the
    day's entry) the change is split between them in a way the sleeve does not record: it is scaled by the
    newest trade's fraction and the tolerance grows by the change times the fractions' spread.
    """
    n_dates, n_symbols = instrument_equity.shape
    previous = np.vstack([np.full((1, n_symbols), 1.0 / n_symbols), instrument_equity[:-1]])
    change = instrument_equity - previous
    scale = np.ones((n_dates, n_symbols))
    assigned = np.zeros((n_dates, n_symbols), dtype=bool)
    spread = np.zeros((n_dates, n_symbols))
    column = {symbol: i for i, symbol in enumerate(symbols)}
    order = np.argsort(trades["entry_date"].to_numpy(), kind="stable")
    for row in order:
        trade = trades.iloc[int(row)]
        held = (dates >= trade["entry_date"]) & (dates <= trade["exit_date"])
        i = column[str(trade["symbol"])]
        fraction = fractions[int(row)]
        shared = held & assigned[:, i]
        spread[shared, i] = np.maximum(spread[shared, i], np.abs(scale[shared, i] - fraction))
        scale[held, i] = fraction
        assigned[held, i] = True
    expected = (change * scale).sum(axis=1).cumsum() + 1.0
    tolerance = (np.abs(change) * spread).sum(axis=1).cumsum()
    return expected, tolerance


def compare_trades(backtest: pd.DataFrame, live: pd.DataFrame) -> Divergence | None:
    """The earliest field where the two trade lists (TRADE_COLUMNS, sorted by entry) part, trade by trade.

    Trades are paired per symbol in entry order; a trade present on one side only is reported at its
    entry bar with field ``trade``.
    """
    found: list[Divergence] = []
    symbols = sorted(set(backtest["symbol"]) | set(live["symbol"]))
    for symbol in symbols:
        ours = backtest.loc[backtest["symbol"] == symbol].sort_values("entry_date").reset_index(drop=True)
        theirs = live.loc[live["symbol"] == symbol].sort_values("entry_date").reset_index(drop=True)
        for k in range(max(len(ours), len(theirs))):
            if k >= len(ours) or k >= len(theirs):
                extra = theirs.iloc[k] if k >= len(ours) else ours.iloc[k]
                side = "live" if k >= len(ours) else "backtest"
                found.append(
                    Divergence(
                        "execution",
                        extra["entry_date"],
                        symbol,
                        "trade",
                        "none" if side == "live" else _trade_text(extra),
                        _trade_text(extra) if side == "live" else "none",
                        f"trade #{k + 1} of {symbol} exists only in the {side}",
                    )
                )
                break
            divergence = _compare_trade(ours.iloc[k], theirs.iloc[k], symbol, k)
            if divergence is not None:
                found.append(divergence)
                break
    return min(found, key=lambda d: d.date) if found else None


def _trade_text(trade: pd.Series) -> str:
    side = "long" if trade["direction"] > 0 else "short"
    span = f"{bar_label(trade['entry_date'])}..{bar_label(trade['exit_date'])}"
    return f"{side} {trade['units']:.6g} units {span}"


def _compare_trade(ours: pd.Series, theirs: pd.Series, symbol: str, k: int) -> Divergence | None:
    note = f"trade #{k + 1} of {symbol}"
    checks: list[tuple[str, pd.Timestamp]] = [
        ("entry_date", min(ours["entry_date"], theirs["entry_date"])),
        ("direction", ours["entry_date"]),
        ("units", ours["entry_date"]),
        ("entry_price", ours["entry_date"]),
        ("entry_fee", ours["entry_date"]),
        ("exit_date", min(ours["exit_date"], theirs["exit_date"])),
        ("exit_price", ours["exit_date"]),
        ("exit_fee", ours["exit_date"]),
    ]
    for name, date in checks:
        a, b = ours[name], theirs[name]
        if isinstance(a, pd.Timestamp) or name == "direction":
            equal = a == b
        else:
            equal = _close(float(a), float(b), PRICE_RTOL if name.endswith("_price") else EQUITY_RTOL)
        if not equal:
            value_a = a if isinstance(a, pd.Timestamp) else (int(a) if name == "direction" else float(a))
            value_b = b if isinstance(b, pd.Timestamp) else (int(b) if name == "direction" else float(b))
            return Divergence("execution", date, symbol, name, value_a, value_b, note)
    return None


def empty_trades() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in TRADE_COLUMNS})
    frame["symbol"] = frame["symbol"].astype(object)
    frame["direction"] = frame["direction"].astype(np.int8)
    for column in ("entry_date", "exit_date"):
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame
