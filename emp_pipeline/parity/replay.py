"""Replay the live execution path bar by bar over a historical window and compare it with the backtest kernel.

The replay first writes the bars, features and regimes into a temporary lake, the way a backfill stores them
(`DatedFrameStore`, the same path the live job reads), and reads them back once onto the live engine's grids
(`feature_panel`, `market_arrays`: each pivots a bar's rows onto its own row, so row t is what a read of bar t
alone gives). It then steps through the window one bar at a time, each step seeing the rows up to its own
and running the live engine's own domain code on them:

1. the paper broker (registry-backed, temporary SQLite) fills the orders of the previous close at this open;
2. the genome's signal at t (`feature_panel` + `panel_signals`, as the live engine runs it, over the rows
   up to t: the signal state machine carries across bars, so its history is the state);
3. the kernel's own step for each sleeve (`sleeve.step_sleeve`, which the engine's `decide_orders` folds);
4. the target and the order (`sleeve_target`, `order_for_target`), the risk checks (`risk.check_orders`
   against the account marked at the close), and the submission to the paper broker.

At the last bar the engine's `decide_orders` itself (which re-folds everything from the store) must agree
with the incremental orders, so the stepping cannot drift from the engine. At ``audit`` seeded bars (all bars
when ``audit`` is None) the replay also recomputes the features and regimes from the bars up to that bar,
read through the store (no later bar, whatever the timeframe), as a partition would compute them, and
compares that row with what the backtest used: a feature or rule that looks ahead shows there, named (see
`report` for the layers).

The backtest side is `simulate_strategy` on the same frames and window. Nothing reads a clock.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from emp_pipeline.broker.interface import OrderSide
from emp_pipeline.broker.paper import PaperBroker, PriceBar
from emp_pipeline.domain.backtest import MarketArrays, market_arrays, simulate_strategy
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
from emp_pipeline.domain.execution import OrderIntent, order_for_target, sleeve_rules, sleeve_target
from emp_pipeline.domain.genome import (
    FeaturePanel,
    Genome,
    feature_panel,
    genome_features,
    panel_signals,
    strategy_id,
)
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.lookahead import (
    FeatureFunction,
    RegimeFunction,
    compare_panels,
    cut_points,
    default_regimes,
    rule_leaves,
)
from emp_pipeline.domain.risk import AccountSnapshot, ProposedOrder, RiskLimits, RiskVerdict, check_orders
from emp_pipeline.domain.sleeve import (
    ALL_PHASES,
    fee_cost,
    new_fills,
    start_sleeve,
    step_sleeve,
)
from emp_pipeline.live.engine import (
    ATR_COLUMN,
    MarketView,
    StrategyBook,
    decide_orders,
    order_request,
    trading_day_starts,
)
from emp_pipeline.parity.report import (
    Divergence,
    ParityReport,
    bar_label,
    compare_equity,
    compare_grids,
    compare_trades,
    empty_trades,
    expected_live_equity,
    live_volumes,
)
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.financing import financing_entries
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import account_and_positions
from emp_pipeline.storage.datasets import (
    MARKET_BARS,
    MARKET_REGIMES,
    PERCEPTION_INPUTS,
    SENSORY_FEATURES,
    Dataset,
)
from emp_pipeline.storage.parquet_frames import through

ONE_DAY = pd.Timedelta(days=1)
DEFAULT_AUDITS = 8


class ParityInputError(ValueError):
    """The window, bars or instruments cannot be replayed; the message says what to change."""


@dataclass(frozen=True)
class ParityConfig:
    """How the live book would trade: the costs the strategy was measured with, capital and risk limits.

    ``capital`` is the account currency behind 1.0 of the strategy's kernel equity (the paper account starts
    with it). ``audit`` is the number of seeded bars recomputed point in time (None: every bar, which costs
    one feature computation per bar).
    """

    costs: Costs = field(default_factory=Costs)
    capital: float = DEFAULT_CAPITAL
    limits: RiskLimits = field(default_factory=RiskLimits)
    audit: int | None = DEFAULT_AUDITS
    seed: int = 0


@dataclass(frozen=True)
class StoredInputs:
    """The frames a backfill stored: what the backtest reads, and what the replay writes into its lake."""

    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame


def compute_inputs(
    bars: pd.DataFrame, compute_features: FeatureFunction, compute_regimes: RegimeFunction = default_regimes
) -> StoredInputs:
    """Features and regimes computed once over all bars, as a single-run backfill stores them."""
    features = compute_features(bars)
    return StoredInputs(bars, features, compute_regimes(bars, features))


# ------------------------------------------------------------------------------------------- backtest side


@dataclass(frozen=True)
class BacktestSide:
    panel: FeaturePanel  # the window's rows
    market: MarketArrays
    signals: np.ndarray
    equity: np.ndarray
    instrument_equity: np.ndarray
    trades: pd.DataFrame


def backtest_side(
    genome: Genome,
    inputs: StoredInputs,
    start: pd.Timestamp,
    end: pd.Timestamp,
    costs: Costs,
    instruments: Mapping[str, InstrumentMeta],
) -> BacktestSide:
    """The kernel on the window: signals over the whole stored history (their state carries), cut to it."""
    full = feature_panel(inputs.features, inputs.regimes)
    signals = panel_signals(genome, full)
    rows = (full.dates >= start) & (full.dates < end)
    panel = full.window(start, end)
    market = market_arrays(inputs.bars, inputs.features, ATR_COLUMN, panel.dates, panel.symbols, instruments)
    result = simulate_strategy(genome, signals[rows], market, costs)
    kernel = result.trades
    trades = pd.DataFrame(
        {
            "symbol": kernel["symbol"].astype(str),
            "direction": kernel["direction"].astype(np.int8),
            "entry_date": kernel["entry_date"],
            "exit_date": kernel["exit_date"],
            "units": kernel["units"].abs(),
            "entry_price": kernel["entry_price"],
            "exit_price": kernel["exit_price"],
            "entry_fee": [fee_cost(n, costs.fee_bps) for n in kernel["notional"]],
            "exit_fee": [
                0.0 if reason == "end_of_data" else fee_cost(u * p, costs.fee_bps)
                for u, p, reason in zip(
                    kernel["units"], kernel["exit_price"], kernel["exit_reason"], strict=True
                )
            ],
            "exit_reason": kernel["exit_reason"],
        }
    )
    assert result.result.instrument_equity is not None
    return BacktestSide(
        panel=panel,
        market=market,
        signals=signals[rows],
        equity=result.result.equity[0],
        instrument_equity=result.result.instrument_equity[0],
        trades=trades if len(trades) else empty_trades(),
    )


# ------------------------------------------------------------------------------------------- live side


class _StepOpens:
    """The paper broker's price source: only the bar the current step has read, never a later one.

    Prices are adjusted (x adj_close / close), as the live job's paper broker and the kernel trade. Knowing
    only the current bar is enough because the replay asks the broker on every bar it holds anything.
    """

    def __init__(self) -> None:
        self._bars: dict[str, PriceBar] = {}
        self._prices: MarketArrays | None = None
        self._row = -1

    def advance(self, at: pd.Timestamp, symbols: Sequence[str], prices: MarketArrays, t: int) -> None:
        """Make row ``t`` of ``prices`` (the bar at ``at``) the one bar the exchange knows."""
        self._prices, self._row = prices, t
        when = at.to_pydatetime()
        opens, highs, lows, spreads = prices.open[t], prices.high[t], prices.low[t], prices.spread_grid()[t]
        self._bars = {
            symbol: PriceBar(when, float(opens[i]), float(highs[i]), float(lows[i]), float(spreads[i]))
            for i, symbol in enumerate(symbols)
            if math.isfinite(opens[i])
        }

    def latest_bar_time(self, symbol: str) -> dt.datetime | None:
        bar = self._bars.get(symbol)
        return bar.time if bar else None

    def next_open(self, symbol: str, after: dt.datetime) -> tuple[dt.datetime, float] | None:
        bar = self._bars.get(symbol)
        return (bar.time, bar.open) if bar is not None and bar.time > after else None

    def bars_since(self, symbol: str, since: dt.datetime) -> Sequence[PriceBar]:
        bar = self._bars.get(symbol)
        return (bar,) if bar is not None and bar.time >= since else ()

    def close_before(self, symbol: str, at: dt.datetime) -> float | None:
        """The close of the symbol's last priced row opening before ``at``, up to the current row only."""
        prices = self._prices
        if prices is None or symbol not in prices.symbols:
            return None
        i = prices.symbols.index(symbol)
        row = min(int(prices.dates.searchsorted(pd.Timestamp(at), side="left")), self._row + 1) - 1
        while row >= 0 and not math.isfinite(prices.open[row, i]):
            row -= 1
        return float(prices.close[row, i]) if row >= 0 else None


def _write_lake(root: Path, inputs: StoredInputs, feature_columns: Sequence[str]) -> None:
    """The stored frames as the assets write them; features narrowed to the columns this strategy reads,
    because a step's read parses whole yearly files and its cost grows with the columns."""
    features = inputs.features.loc[:, ["date", "symbol", "warmup", *feature_columns]]
    frames = (
        (MARKET_BARS, inputs.bars),
        (SENSORY_FEATURES, features),
        (MARKET_REGIMES, inputs.regimes),
    )
    for dataset, frame in frames:
        dataset.store(root).write_window(frame, frame["date"].min(), frame["date"].max() + ONE_DAY)


def _read(root: Path, start: pd.Timestamp | None, end: pd.Timestamp) -> dict[Dataset, pd.DataFrame]:
    return {dataset: dataset.read(root, start, end) for dataset in PERCEPTION_INPUTS}


def _registry(root: Path) -> Engine:
    url = f"sqlite:///{root / 'registry.sqlite'}"
    upgrade_database(url)
    return make_engine(url)


def _account(engine: Engine, account_id: int) -> tuple[float, dict[str, float]]:
    with session_scope(engine) as session:
        account, positions = account_and_positions(session, account_id)
    return account.cash, {p.symbol: p.quantity for p in positions}


def _stored_grids(
    root: Path,
    symbols: Sequence[str],
    names: Sequence[str],
    dates: pd.DatetimeIndex,
    instruments: Mapping[str, InstrumentMeta],
) -> tuple[FeaturePanel, MarketArrays, np.ndarray]:
    """The lake's history and window read once, on the live engine's grids: the feature panel (the
    strategy's features and regimes), the traded prices and ATR, and the unadjusted closes the account
    marks at.

    `feature_panel` and `market_arrays` pivot each bar's rows onto its grid row and nothing else, so row t
    is exactly what a read of bar t alone would give; each step reads only rows up to its own.
    """
    frames = _read(root, None, dates[-1] + ONE_DAY)
    bars, features = frames[MARKET_BARS], frames[SENSORY_FEATURES]
    panel = feature_panel(
        features.loc[:, ["date", "symbol", "warmup", *names]], frames[MARKET_REGIMES], symbols
    )
    if not panel.dates.equals(dates):
        missing = dates.difference(panel.dates)
        raise ParityInputError(
            f"the lake has no features for {len(missing)} bar(s) from {missing[0].date()} on: the stored "
            "frames are incomplete"
            if len(missing)
            else "the lake's features hold bars the backtest does not: the stored frames do not match"
        )
    prices = market_arrays(bars, features, ATR_COLUMN, dates, symbols, instruments)
    index = pd.MultiIndex.from_product([dates, symbols], names=["date", "symbol"])
    raw_close = (
        bars.set_index(["date", "symbol"])["close"]
        .reindex(index)
        .to_numpy(dtype=np.float64, na_value=np.nan)
        .reshape(len(dates), len(symbols))
    )
    return panel, prices, raw_close


class _LiveReplay:
    """The live path's state across bars: sleeves, the signal history read so far, the paper account."""

    def __init__(
        self,
        genome: Genome,
        root: Path,
        engine: Engine,
        symbols: tuple[str, ...],
        history_dates: pd.DatetimeIndex,
        window_dates: pd.DatetimeIndex,
        instruments: Mapping[str, InstrumentMeta],
        config: ParityConfig,
    ) -> None:
        self.genome, self.root, self.engine, self.symbols = genome, root, engine, symbols
        self.instruments, self.config = instruments, config
        self.strategy_id = strategy_id(genome)
        self.names = tuple(sorted(genome_features(genome)))
        self.opens = _StepOpens()
        self.broker = PaperBroker(
            engine,
            self.opens,
            costs=config.costs,
            account_name=f"parity-{self.strategy_id}",
            initial_cash=config.capital,
            instruments=instruments,
        )
        n_symbols = len(symbols)
        self.history_rows = len(history_dates)
        self.panel, self.prices, self.raw_close = _stored_grids(
            root, symbols, self.names, history_dates.append(window_dates), instruments
        )
        self.sleeves = [start_sleeve(1.0 / n_symbols) for _ in symbols]
        self.swaps = [self.prices.swap_of(i) for i in range(n_symbols)]
        self.rules, self.fill_costs, self.fills = (
            sleeve_rules(genome.risk),
            config.costs.fill_costs(),
            new_fills(),
        )
        self.signals = np.zeros((len(window_dates), n_symbols), dtype=np.int8)
        self.sleeve_equity = np.zeros((len(window_dates), n_symbols))
        self.equity = np.zeros(len(window_dates))
        self.marks: dict[str, float] = {}
        self.cash, self.positions = _account(engine, self.broker.account_id)
        # The daily loss limit's reference: the equity of the last bar before each bar's trading day.
        self.day_starts = trading_day_starts(window_dates, {meta.calendar for meta in instruments.values()})
        self.window_dates = window_dates
        self.account_equity = np.zeros(len(window_dates))
        self.orders_open = False
        self.last_intents: list[OrderIntent] = []
        self.risk_notes: list[str] = []

    def step(self, j: int, at: pd.Timestamp) -> None:
        """The live job at the close of ``at``: fills at its open, signal, sleeves, targets, risk, orders."""
        t = self.history_rows + j
        self.opens.advance(at, self.symbols, self.prices, t)
        if self.orders_open or any(self.positions.values()):
            # Fills at this open, then the resting stops and take profits inside this bar.
            results = self.broker.settle_open_orders()
            self.orders_open = any(not r.status.is_terminal for r in results)
            self.cash, self.positions = _account(self.engine, self.broker.account_id)
        panel = self.panel
        seen = FeaturePanel(
            panel.dates[: t + 1],
            panel.symbols,
            panel.names,
            panel.values[:, : t + 1],
            panel.usable[: t + 1],
            panel.regime_codes[: t + 1],
        )
        signal = panel_signals(self.genome, seen)[-1]
        self.signals[j] = signal
        raw_close = self.raw_close[t]
        self.marks.update(
            {s: float(c) for s, c in zip(self.symbols, raw_close, strict=True) if math.isfinite(c)}
        )
        capital = self.config.capital
        intents: list[OrderIntent] = []
        prices = self.prices
        opens, highs, lows, closes, atrs, spreads, nights = (
            prices.open[t],
            prices.high[t],
            prices.low[t],
            prices.close[t],
            prices.atr[t],
            prices.spread_grid()[t],
            prices.nights_grid()[t],
        )
        for i, symbol in enumerate(self.symbols):
            self.sleeves[i], _ = step_sleeve(
                self.sleeves[i],
                j,
                float(opens[i]),
                float(highs[i]),
                float(lows[i]),
                float(closes[i]),
                float(atrs[i]),
                float(spreads[i]),
                float(nights[i]),
                int(signal[i]),
                self.rules,
                self.fill_costs,
                self.swaps[i],
                ALL_PHASES,
                self.fills[0],
            )
            self.sleeve_equity[j, i] = self.sleeves[i].equity
            if math.isnan(closes[i]):
                continue  # no bar for this symbol at this close: the kernel decides nothing either
            meta = self.instruments[symbol]
            order = order_for_target(
                strategy_id=self.strategy_id,
                symbol=symbol,
                bar_time=at.to_pydatetime(),
                current=self.positions.get(symbol, 0.0),
                target=sleeve_target(self.sleeves[i], capital),
                reference_price=float(raw_close[i]),
                volume_step=meta.step_volume,
                min_volume=meta.min_volume,
            )
            if order is not None:
                intents.append(order)
        equity = self.cash + sum(q * self.marks[s] for s, q in self.positions.items() if q)
        self.equity[j] = equity / capital
        self.account_equity[j] = equity  # as the journal records it
        self._submit(j, at, intents, equity)
        self.last_intents = intents

    def _submit(self, j: int, at: pd.Timestamp, intents: Sequence[OrderIntent], equity: float) -> None:
        before = int(self.window_dates.searchsorted(self.day_starts[j])) - 1  # the last bar before the day
        snapshot = AccountSnapshot(
            equity=equity,
            day_start_equity=equity if before < 0 else float(self.account_equity[before]),
            kill_switch=False,
            positions=self.positions,
            prices=self.marks,
        )
        proposed = [ProposedOrder(i.client_order_id, i.symbol, i.signed_quantity) for i in intents]
        requests = []
        for intent, decision in zip(
            intents, check_orders(proposed, snapshot, self.config.limits), strict=True
        ):
            if decision.verdict is not RiskVerdict.APPROVED:
                self.risk_notes.append(
                    f"{bar_label(at)} {intent.symbol}: risk {decision.verdict.value}: {decision.reason}"
                )
            if decision.verdict is RiskVerdict.REJECTED:
                continue
            final = intent
            if decision.verdict is RiskVerdict.REDUCED:
                final = intent.with_target(intent.current + decision.approved_quantity)
            side = "buy" if decision.approved_quantity > 0 else "sell"
            requests.append(order_request(final, side, abs(decision.approved_quantity)))
        if requests:  # the bar's orders in one broker call, as one transaction
            self.broker.submit_orders(requests)
            self.orders_open = True


def _live_trades(
    engine: Engine, account_id: int, closes: Mapping[str, tuple[pd.Timestamp, float]], capital: float
) -> pd.DataFrame:
    """Round trips rebuilt from the paper fills (a reversal's one fill closes a trade and opens the next)."""
    with session_scope(engine) as session:
        fills = []
        for order in orders_for_account(session, account_id):
            sign = OrderSide(order.side).sign
            for fill in fills_for_order(session, order.client_order_id):
                fills.append(
                    (pd.Timestamp(fill.filled_at), order.symbol, sign * fill.quantity, fill.price, fill.fee)
                )
    fills.sort(key=lambda f: (f[0], f[1]))
    rows: list[dict[str, object]] = []
    open_trades: dict[str, dict[str, object]] = {}
    for date, symbol, quantity, price, fee in fills:
        trade = open_trades.get(symbol)
        remaining = quantity
        if trade is not None:
            held = float(trade["signed"])
            if math.copysign(1.0, quantity) == math.copysign(1.0, held):
                trade["signed"] = held + quantity  # added to a position: shows as a units divergence
                trade["units"] = abs(held + quantity) / capital
                continue
            closing = min(abs(quantity), abs(held))
            trade.update(exit_date=date, exit_price=price, exit_fee=fee * closing / abs(quantity) / capital)
            rows.append(trade)
            del open_trades[symbol]
            remaining = quantity + math.copysign(closing, held)
            if abs(held) > abs(quantity):
                left = dict(trade, signed=held + quantity, units=(abs(held) - closing) / capital)
                left.update(exit_date=pd.NaT, exit_price=math.nan, exit_fee=0.0)
                open_trades[symbol] = left
                continue
        if abs(remaining) > 0:
            open_trades[symbol] = {
                "symbol": symbol,
                "direction": int(math.copysign(1, remaining)),
                "entry_date": date,
                "units": abs(remaining) / capital,
                "entry_price": price,
                "entry_fee": fee * abs(remaining) / abs(quantity) / capital,
                "signed": remaining,
            }
    for symbol, trade in open_trades.items():
        last_date, last_close = closes[symbol]
        trade.update(exit_date=last_date, exit_price=last_close, exit_fee=0.0)
        rows.append(trade)
    if not rows:
        return empty_trades()
    frame = pd.DataFrame.from_records(rows).drop(columns=["signed"])
    frame["direction"] = frame["direction"].astype(np.int8)
    return frame.sort_values(["entry_date", "symbol"], kind="mergesort").reset_index(drop=True)


def _audit(
    genome: Genome,
    root: Path,
    full: FeaturePanel,
    at: pd.Timestamp,
    checked: Sequence[str],
    compute_features: FeatureFunction,
    compute_regimes: RegimeFunction,
) -> list[Divergence]:
    """Row ``at`` recomputed from the bars up to it (read through the store) against the stored row."""
    bars = MARKET_BARS.read(root, None, through(at))
    features = compute_features(bars)
    regimes = compute_regimes(bars, features)
    # Only the checked columns are compared (rules and signals read no others): pivoting the rest of the
    # frame would cost without changing a finding.
    kept = [name for name in checked if name in features.columns]
    cut = feature_panel(features.loc[:, ["date", "symbol", "warmup", *kept]], regimes, full.symbols)
    return [
        Divergence(
            "inputs",
            finding.date,
            finding.symbol,
            finding.name,
            finding.full_value,
            finding.cut_value,
            f"{finding.kind} recomputed from the bars up to {bar_label(at)}"
            + (f", reads {', '.join(finding.reads)}" if finding.reads else ""),
        )
        for finding in compare_panels(genome, full, cut, at, at, checked)
    ]


def _rule_notes(genome: Genome, divergences: Sequence[Divergence]) -> list[str]:
    """Which rule leaves read a feature that differed: the culprit rule paths."""
    culprits = {d.field for d in divergences if d.layer == "inputs"}
    return [
        f"rule {path} reads {leaf.left} (which looked ahead)"
        for path, leaf in rule_leaves(genome)
        if leaf.left in culprits or (isinstance(leaf.right, str) and leaf.right in culprits)
    ]


def run_parity(
    genome: Genome,
    bars: pd.DataFrame,
    instruments: Sequence[InstrumentMeta],
    start: pd.Timestamp,
    end: pd.Timestamp,
    compute_features: FeatureFunction,
    compute_regimes: RegimeFunction = default_regimes,
    config: ParityConfig | None = None,
    workdir: Path | str | None = None,
) -> ParityReport:
    """Backtest the window, replay the live path over it bar by bar, and report where they part (module doc).

    ``bars`` holds the window and the history before it (warm-up, and the past the signal state carries).
    """
    began = time.perf_counter()
    config = config or ParityConfig()
    if not (math.isfinite(config.capital) and config.capital > 0):
        raise ParityInputError(f"capital must be a positive amount of account currency, not {config.capital}")
    in_window = (bars["date"] >= start) & (bars["date"] < end)
    if not in_window.any():
        raise ParityInputError(f"no bars between {start} and {end}: choose a window inside the data")
    inputs = compute_inputs(bars, compute_features, compute_regimes)
    by_symbol = {meta.symbol: meta for meta in instruments}
    back = backtest_side(genome, inputs, start, end, config.costs, by_symbol)
    dates, symbols = back.panel.dates, back.panel.symbols
    missing = sorted(set(symbols) - set(by_symbol))
    if missing:
        raise ParityInputError(
            f"no instrument metadata for {missing}: the live path needs their volume steps"
        )
    full = feature_panel(inputs.features, inputs.regimes, symbols)
    checked = sorted(genome_features(genome) | {ATR_COLUMN})
    if config.audit is None:
        audited: tuple[pd.Timestamp, ...] = tuple(dates)
    elif config.audit > 0 and len(dates) > 1:
        audited = cut_points(full.dates, config.audit, config.seed, start, end)
    else:
        audited = ()
    divergences: list[Divergence] = []
    with tempfile.TemporaryDirectory(prefix="emp-parity-", dir=workdir) as tmp:
        root = Path(tmp)
        _write_lake(root, inputs, checked)
        engine = _registry(root)
        try:
            live = _LiveReplay(
                genome, root, engine, symbols, full.dates[full.dates < start], dates, by_symbol, config
            )
            for j, at in enumerate(dates):
                live.step(j, at)
                if at in audited:
                    divergences.extend(
                        _audit(genome, root, full, at, checked, compute_features, compute_regimes)
                    )
            engine_check = _engine_cross_check(
                genome, root, dates[-1], start, live.positions, by_symbol, config, live.last_intents
            )
            live_trades = _live_trades(
                engine,
                live.broker.account_id,
                {s: (dates[-1], c) for s, c in live.marks.items()},
                config.capital,
            )
            with session_scope(engine) as session:
                booked_swaps = sum(e.amount for e in financing_entries(session, live.broker.account_id))
        finally:
            engine.dispose()
    if engine_check is not None:
        divergences.append(engine_check)
    divergences = _earliest_per_field(divergences)
    placeable, fractions = live_volumes(back.trades, by_symbol, config.capital)
    expected_equity, rounding_tolerance = expected_live_equity(
        dates, symbols, back.instrument_equity, back.trades, fractions
    )
    for found in (
        compare_grids(dates, symbols, back.signals, live.signals, "decision", "signal"),
        compare_grids(
            dates, symbols, back.instrument_equity, live.sleeve_equity, "decision", "sleeve_equity", 1e-9
        ),
        compare_trades(placeable, live_trades),
        compare_equity(dates, expected_equity, live.equity, "execution", "equity", rounding_tolerance),
    ):
        if found is not None:
            divergences.append(found)
    equity = pd.DataFrame(
        {"backtest": back.equity, "decision": live.sleeve_equity.sum(axis=1), "live": live.equity},
        index=dates,
    )
    return ParityReport(
        strategy_id=live.strategy_id,
        start=dates[0],
        end=dates[-1],
        n_bars=len(dates),
        symbols=symbols,
        backtest_trades=back.trades,
        live_trades=live_trades,
        equity=equity,
        divergences=tuple(divergences),
        audited_bars=audited,
        elapsed_s=time.perf_counter() - began,
        notes=tuple(_rule_notes(genome, divergences) + _summarise(live.risk_notes)),
        rounded_trades=int(((fractions > 0) & (np.abs(fractions - 1) > 1e-12)).sum()),
        untradeable_trades=int((fractions == 0).sum()),
        booked_swaps=booked_swaps,
    )


def _summarise(notes: list[str], keep: int = 5) -> list[str]:
    if len(notes) <= keep:
        return notes
    return [*notes[:keep], f"... and {len(notes) - keep} more risk decisions that were not plain approvals"]


def _earliest_per_field(divergences: Sequence[Divergence]) -> list[Divergence]:
    """One divergence per (layer, field): the earliest bar (audits may find a culprit several times)."""
    earliest: dict[tuple[str, str], Divergence] = {}
    for divergence in divergences:
        key = (divergence.layer, divergence.field)
        if key not in earliest or divergence.date < earliest[key].date:
            earliest[key] = divergence
    return sorted(earliest.values(), key=lambda d: (d.date, d.field))


def _engine_cross_check(
    genome: Genome,
    root: Path,
    at: pd.Timestamp,
    start: pd.Timestamp,
    held: Mapping[str, float],
    instruments: Mapping[str, InstrumentMeta],
    config: ParityConfig,
    stepped: Sequence[OrderIntent],
) -> Divergence | None:
    """The engine's own `decide_orders` on the store up to the last bar must ask for the stepped orders."""
    frames = _read(root, None, through(at))
    today = frames[MARKET_BARS].loc[frames[MARKET_BARS]["date"] == at]
    view = MarketView(
        frames[MARKET_BARS],
        frames[SENSORY_FEATURES],
        frames[MARKET_REGIMES],
        at,
        dict(zip(today["symbol"].astype(str), today["close"].astype(float), strict=True)),
        instruments,
    )
    book = StrategyBook(strategy_id(genome), genome, start, config.costs)
    orders, _ = decide_orders(book, view, held, instruments, config.capital)
    engine_orders = sorted((o.symbol, o.target) for o in orders)
    stepped_orders = sorted((o.symbol, o.target) for o in stepped)
    if engine_orders == stepped_orders:
        return None
    return Divergence(
        "decision",
        at,
        "",
        "engine_orders",
        repr(engine_orders),
        repr(stepped_orders),
        "live.engine.decide_orders on the whole store vs the bar-by-bar replay (backtest column = engine)",
    )
