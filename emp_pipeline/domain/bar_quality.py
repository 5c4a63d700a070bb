"""Data-quality checks on canonical bar frames, as plain results the Dagster checks report.

Each check returns a `BarCheckOutcome` with the offending rows counted and the first few listed (symbol, day,
value and the bound it broke), so a failure in the UI says exactly which bar to look at.

Blocking or warning is decided here, once, in `BAR_CHECKS`, with the reason in each check's description.
The rule: a check blocks when what it catches is almost always a data error and would move money if traded
(a price of 1e300, an adjusted close a thousand times the close, a price frozen for weeks, a bar from the
future, a bar on a day the exchange was shut); it warns when what it catches also happens in real markets
(a crash day far outside recent volatility, a missing session) and a human should look without the pipeline
stopping. Checks that need the bars before the window (returns, frozen runs) take the stored ``history``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from emp_pipeline.domain.bars import PRICE_COLUMNS
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.timeframes import Timeframe, bar_open_times, outside_trading_time, periods_per_year

EXAMPLES_SHOWN = 5

# Absolute sanity: no instrument this system trades is quoted outside these bounds (the cheapest crypto
# tokens trade near 1e-8, bitcoin in rupiah near 2e9); 1e300 or inf is an overflow or a unit error.
PRICE_FLOOR = 1e-9
PRICE_CEILING = 1e12
# One bar to the next moving the adjusted close by more than this factor is a decimal or unit error far more
# often than a market event in liquid instruments (splits are inside adj_close and do not count).
MAX_BAR_FACTOR = 10.0
# Robust jump warning: |log return| beyond JUMP_MULTIPLE times the median absolute log return of the
# previous JUMP_SCALE_BARS bars (x 1.4826, the normal-consistent scale), never below JUMP_FLOOR.
JUMP_SCALE_BARS = 60
JUMP_MIN_SCALE_BARS = 20
JUMP_MULTIPLE = 10.0
JUMP_FLOOR = 0.05
MAD_TO_SIGMA = 1.4826
# adj_close / close: dividends over decades take it to ~0.1, nothing real takes it to 1/20 or past 20.
ADJUSTMENT_RATIO_LIMIT = 20.0
# A liquid instrument's close does not repeat to the tick for two weeks of sessions: the feed is stale. A
# span of sessions, not of bars: ten unchanged M1 closes in a quiet hour are normal, ten unchanged days not.
MAX_UNCHANGED_SESSIONS = 10
# Bars before the window the history-aware checks need (the jump scale plus the bar before it).
HISTORY_BARS_NEEDED = JUMP_SCALE_BARS + 1


@dataclass(frozen=True)
class BarCheckOutcome:
    name: str
    passed: bool
    description: str
    failures: int = 0
    examples: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BarCheck:
    """A check's identity as the UI shows it: its name, whether it blocks, and what it guards and why."""

    name: str
    blocking: bool
    description: str


BAR_CHECKS: tuple[BarCheck, ...] = (
    BarCheck("ohlc_consistent", True, "low <= open, close <= high on every bar"),
    BarCheck("positive_prices", True, "every price present and positive"),
    BarCheck("unique_symbol_date", True, "at most one bar per (symbol, date) in storage"),
    BarCheck(
        "prices_within_bounds",
        True,
        f"every price finite and within [{PRICE_FLOOR:g}, {PRICE_CEILING:g}]; blocks: a price outside is an "
        "overflow or unit error, and sizing or P&L computed from it would be garbage",
    ),
    BarCheck(
        "no_implausible_jump",
        True,
        f"the adjusted close moves by at most a factor of {MAX_BAR_FACTOR:g} from one bar to the next; "
        "blocks: such a move is a decimal or unit error far more often than a market event, and trading it "
        "would book phantom profits (a real one is accepted by replacing the history explicitly)",
    ),
    BarCheck(
        "adjusted_close_plausible",
        True,
        f"adj_close / close within [1/{ADJUSTMENT_RATIO_LIMIT:g}, {ADJUSTMENT_RATIO_LIMIT:g}]; blocks: the "
        "backtest, the paper broker and the live marks all trade the adjusted scale, so a wrong factor "
        "multiplies every price they see",
    ),
    BarCheck(
        "not_frozen",
        True,
        f"no close repeats unchanged for more than {MAX_UNCHANGED_SESSIONS} sessions of consecutive bars (10 "
        "daily bars, 240 hourly FX bars); blocks: a frozen price is a dead feed, and its zero volatility "
        "would size positions as if risk had vanished",
    ),
    BarCheck(
        "no_future_bars",
        True,
        "no bar is dated after now plus one bar; blocks: a bar from the future is a clock or timezone error "
        "and would leak tomorrow into today's decisions",
    ),
    BarCheck(
        "on_calendar",
        True,
        "every bar falls on a session of its instrument's calendar; blocks: a bar on a day the exchange was "
        "shut (a weekend row for an equity) is a timezone shift or junk, and every feature after it moves",
    ),
    BarCheck(
        "price_jumps_robust",
        False,
        f"|log return| of the adjusted close within {JUMP_MULTIPLE:g} x the robust scale (1.4826 x median "
        f"|log return| of the previous {JUMP_SCALE_BARS} bars, at least {JUMP_FLOOR:g}); warns: crashes and "
        "earnings gaps are real and must reach the models, but a human should look at each",
    ),
    BarCheck(
        "no_calendar_gaps",
        False,
        "every trading day of each instrument's calendar has a bar; warns: vendors miss days, and a gap "
        "shortens look-backs without making any value wrong",
    ),
)


def bar_check(name: str) -> BarCheck:
    return next(check for check in BAR_CHECKS if check.name == name)


def _day(stamp: object) -> date:
    return pd.Timestamp(stamp).date()


def _outcome(name: str, examples: Sequence[str], failures: int, what: str) -> BarCheckOutcome:
    description = f"{failures} bars with {what}" if failures else f"no bars with {what}"
    return BarCheckOutcome(name, failures == 0, description, failures, tuple(examples[:EXAMPLES_SHOWN]))


def _from_mask(name: str, frame: pd.DataFrame, mask: pd.Series, what: str) -> BarCheckOutcome:
    rows = frame.loc[mask, ["symbol", "date"]].head(EXAMPLES_SHOWN)
    examples = [f"{row.symbol} {_day(row.date)}" for row in rows.itertuples()]
    return _outcome(name, examples, int(mask.sum()), what)


def check_ohlc_consistency(bars: pd.DataFrame) -> BarCheckOutcome:
    """low <= open, close <= high, and low <= high."""
    broken = (
        (bars["low"] > bars["open"])
        | (bars["low"] > bars["close"])
        | (bars["open"] > bars["high"])
        | (bars["close"] > bars["high"])
        | (bars["low"] > bars["high"])
    )
    return _from_mask("ohlc_consistent", bars, broken, "open/close outside [low, high]")


def check_positive_prices(bars: pd.DataFrame) -> BarCheckOutcome:
    broken = (bars[list(PRICE_COLUMNS)] <= 0).any(axis=1) | bars[list(PRICE_COLUMNS)].isna().any(axis=1)
    return _from_mask("positive_prices", bars, broken, "a missing or non-positive price")


def check_unique_bars(bars: pd.DataFrame) -> BarCheckOutcome:
    duplicated = bars.duplicated(["symbol", "date"], keep=False)
    return _from_mask("unique_symbol_date", bars, duplicated, "a duplicate (symbol, date)")


def check_price_bounds(bars: pd.DataFrame) -> BarCheckOutcome:
    """Every price finite and inside [PRICE_FLOOR, PRICE_CEILING] (NaN and <= 0 are positive_prices')."""
    prices = bars[list(PRICE_COLUMNS)]
    outside = (prices > PRICE_CEILING) | ((prices > 0) & (prices < PRICE_FLOOR))
    examples = []
    for index in outside.index[outside.any(axis=1)][:EXAMPLES_SHOWN]:
        column = next(column for column in PRICE_COLUMNS if outside.at[index, column])
        examples.append(
            f"{bars.at[index, 'symbol']} {_day(bars.at[index, 'date'])} {column}={bars.at[index, column]:g} "
            f"outside [{PRICE_FLOOR:g}, {PRICE_CEILING:g}]"
        )
    return _outcome("prices_within_bounds", examples, int(outside.any(axis=1).sum()), "a price out of bounds")


def _with_history(bars: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """The window's bars after the stored bars of the same symbols, with ``is_new`` marking the window's."""
    columns = ["symbol", "date", "close", "adj_close"]
    parts = [bars.loc[:, columns].assign(is_new=True)]
    if history is not None and not history.empty:
        earlier = history.loc[history["symbol"].isin(bars["symbol"].unique()), columns]
        parts.insert(0, earlier.assign(is_new=False))
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.drop_duplicates(["symbol", "date"], keep="last")
    return frame.sort_values(["symbol", "date"], kind="mergesort").reset_index(drop=True)


def _log_returns(frame: pd.DataFrame) -> pd.Series:
    """Log return of the adjusted close against the symbol's previous bar (NaN on its first bar)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(frame["adj_close"] / frame.groupby("symbol")["adj_close"].shift(1))


def check_bar_to_bar_factor(bars: pd.DataFrame, history: pd.DataFrame | None = None) -> BarCheckOutcome:
    """No adjusted close more than MAX_BAR_FACTOR times (or less than 1/MAX_BAR_FACTOR of) the bar before."""
    frame = _with_history(bars, history)
    returns = _log_returns(frame)
    bound = math.log(MAX_BAR_FACTOR)
    broken = frame["is_new"] & (returns.abs() > bound)
    examples = [
        f"{row.symbol} {_day(row.date)} adj_close={row.adj_close:g}, {math.exp(returns[index]):.3g}x the bar "
        f"before (bound {MAX_BAR_FACTOR:g}x)"
        for index, row in frame.loc[broken].head(EXAMPLES_SHOWN).iterrows()
    ]
    return _outcome(
        "no_implausible_jump", examples, int(broken.sum()), f"a move beyond {MAX_BAR_FACTOR:g}x in one bar"
    )


def check_robust_jumps(bars: pd.DataFrame, history: pd.DataFrame | None = None) -> BarCheckOutcome:
    """|log return| beyond JUMP_MULTIPLE x the robust scale of the symbol's previous returns (causal)."""
    frame = _with_history(bars, history)
    returns = _log_returns(frame)
    scale = (
        returns.abs()
        .groupby(frame["symbol"])
        .transform(lambda r: r.rolling(JUMP_SCALE_BARS, min_periods=JUMP_MIN_SCALE_BARS).median().shift(1))
        * MAD_TO_SIGMA
    )
    bound = np.maximum(JUMP_MULTIPLE * scale, JUMP_FLOOR)
    broken = frame["is_new"] & scale.notna() & (returns.abs() > bound)
    examples = [
        f"{row.symbol} {_day(row.date)} log return {returns[index]:+.3f} (adj_close={row.adj_close:g}) "
        f"beyond +/-{bound[index]:.3f}"
        for index, row in frame.loc[broken].head(EXAMPLES_SHOWN).iterrows()
    ]
    return _outcome("price_jumps_robust", examples, int(broken.sum()), "a jump beyond the robust bound")


def check_adjusted_close(bars: pd.DataFrame) -> BarCheckOutcome:
    """adj_close / close inside [1/ADJUSTMENT_RATIO_LIMIT, ADJUSTMENT_RATIO_LIMIT]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = bars["adj_close"] / bars["close"]
    broken = ratio.notna() & (
        (ratio > ADJUSTMENT_RATIO_LIMIT) | (ratio < 1.0 / ADJUSTMENT_RATIO_LIMIT) | ~np.isfinite(ratio)
    )
    examples = [
        f"{row.symbol} {_day(row.date)} adj_close={row.adj_close:g} is {ratio[index]:.3g}x "
        f"close={row.close:g} (bounds 1/{ADJUSTMENT_RATIO_LIMIT:g}..{ADJUSTMENT_RATIO_LIMIT:g})"
        for index, row in bars.loc[broken].head(EXAMPLES_SHOWN).iterrows()
    ]
    return _outcome(
        "adjusted_close_plausible", examples, int(broken.sum()), "adj_close implausibly far from close"
    )


def max_unchanged_bars(timeframe: Timeframe, calendar: str) -> int:
    """MAX_UNCHANGED_SESSIONS in bars of the timeframe on the calendar (never fewer than that many bars)."""
    bars_per_session = periods_per_year(timeframe, calendar) / periods_per_year(Timeframe.D1, calendar)
    return max(MAX_UNCHANGED_SESSIONS, round(MAX_UNCHANGED_SESSIONS * bars_per_session))


def check_frozen_prices(
    bars: pd.DataFrame, history: pd.DataFrame | None = None, limits: Mapping[str, int] | None = None
) -> BarCheckOutcome:
    """No close unchanged over more than its symbol's limit of consecutive bars (``limits``, from
    `max_unchanged_bars`; MAX_UNCHANGED_SESSIONS bars where absent, the daily figure); runs may start in
    history."""
    frame = _with_history(bars, history)
    previous = frame.groupby("symbol")["close"].shift(1)
    starts_run = frame["close"].ne(previous) | previous.isna()
    run = starts_run.cumsum()
    position = frame.groupby(run).cumcount() + 1
    run_start = frame.groupby(run)["date"].transform("first")
    limit = frame["symbol"].map(dict(limits or {})).fillna(MAX_UNCHANGED_SESSIONS).astype(int)
    broken = frame["is_new"] & (position > limit)
    first_of_each_run = frame.loc[broken].groupby(run[broken]).head(1)
    examples = [
        f"{row.symbol} {_day(row.date)} close={row.close:g} unchanged for {position[index]} bars since "
        f"{_day(run_start[index])} (limit {limit[index]})"
        for index, row in first_of_each_run.head(EXAMPLES_SHOWN).iterrows()
    ]
    return _outcome("not_frozen", examples, int(broken.sum()), "a frozen close")


def check_future_bars(
    bars: pd.DataFrame, now: pd.Timestamp, timeframe: Timeframe = Timeframe.D1
) -> BarCheckOutcome:
    """No bar dated after ``now`` + one bar (the tolerance covers sessions labelled by a later UTC day)."""
    stamp = pd.Timestamp(now)
    utc_now = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    limit = utc_now + timeframe.duration
    broken = bars["date"] > limit
    examples = [
        f"{row.symbol} {_day(row.date)} is after now + one bar ({limit.isoformat(timespec='minutes')})"
        for row in bars.loc[broken].head(EXAMPLES_SHOWN).itertuples()
    ]
    return _outcome("no_future_bars", examples, int(broken.sum()), "a date in the future")


def check_on_calendar(
    bars: pd.DataFrame, instruments: Sequence[InstrumentMeta], timeframe: Timeframe = Timeframe.D1
) -> BarCheckOutcome:
    """Each bar lies in its instrument's trading time (symbols outside ``instruments`` pass): a daily bar's
    day is a session; an intraday bar overlaps the calendar's open time (a Saturday FX bar does not)."""
    calendars = {meta.symbol: meta.calendar for meta in instruments}
    off = pd.Series(False, index=bars.index)
    for symbol, rows in bars.groupby("symbol"):
        calendar = calendars.get(str(symbol))
        if calendar is None or rows.empty:
            continue
        if timeframe.is_intraday:
            off.loc[rows.index] = outside_trading_time(calendar, timeframe, pd.DatetimeIndex(rows["date"]))
        else:
            sessions = trading_days(calendar, rows["date"].min(), rows["date"].max())
            off.loc[rows.index] = ~rows["date"].isin(sessions)
    closed = "trading time" if timeframe.is_intraday else "session"
    examples = [
        f"{row.symbol} {_label(row.date, timeframe)} ({pd.Timestamp(row.date).day_name()}) is not a "
        f"{calendars[row.symbol]} {closed}"
        for row in bars.loc[off].head(EXAMPLES_SHOWN).itertuples()
    ]
    return _outcome("on_calendar", examples, int(off.sum()), "a day outside the instrument's calendar")


def find_calendar_gaps(
    bars: pd.DataFrame,
    instruments: Sequence[InstrumentMeta],
    start: date,
    end: date,
    timeframe: Timeframe = Timeframe.D1,
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> dict[str, list[pd.Timestamp]]:
    """Bars each instrument's calendar has on the UTC days [start, end] that are missing: trading days
    (daily), or bar open times (intraday: `bar_open_times`, so a weekend or a closed night is no gap),
    those only inside `span` [open, close) when given (an FX-day partition starts and ends mid-UTC-day)."""
    gaps: dict[str, list[pd.Timestamp]] = {}
    for instrument in instruments:
        if timeframe.is_intraday:
            expected = bar_open_times(instrument.calendar, timeframe, start, end + timedelta(days=1))
            if span is not None:
                expected = expected[(expected >= span[0]) & (expected < span[1])]
        else:
            expected = trading_days(instrument.calendar, start, end)
        have = pd.DatetimeIndex(bars.loc[bars["symbol"] == instrument.symbol, "date"])
        missing = expected.difference(have)
        if len(missing):
            gaps[instrument.symbol] = list(missing)
    return gaps


def _label(stamp: object, timeframe: Timeframe) -> str:
    """A bar's label as people read it: its day (daily) or its UTC open time (intraday)."""
    if timeframe.is_intraday:
        return pd.Timestamp(stamp).strftime("%Y-%m-%d %H:%M UTC")
    return str(_day(stamp))


def check_calendar_gaps(
    bars: pd.DataFrame,
    instruments: Sequence[InstrumentMeta],
    start: date,
    end: date,
    timeframe: Timeframe = Timeframe.D1,
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> BarCheckOutcome:
    gaps = find_calendar_gaps(bars, instruments, start, end, timeframe, span)
    failures = sum(len(stamps) for stamps in gaps.values())
    examples = tuple(
        f"{symbol} {_label(stamp, timeframe)}"
        for symbol, stamps in gaps.items()
        for stamp in stamps[:EXAMPLES_SHOWN]
    )
    what = "bars" if timeframe.is_intraday else "trading days"
    description = (
        f"{failures} expected {what} without a bar ({', '.join(sorted(gaps))})"
        if failures
        else f"every expected {what[:-1]} has a bar"
    )
    return BarCheckOutcome(
        "no_calendar_gaps", failures == 0, description, failures, examples[:EXAMPLES_SHOWN]
    )


def check_freshness(
    latest_by_symbol: dict[str, date | None],
    instruments: Sequence[InstrumentMeta],
    as_of: date,
    max_missing_sessions: int,
) -> BarCheckOutcome:
    """Each symbol's newest bar is at most ``max_missing_sessions`` trading sessions behind ``as_of``."""
    stale: list[str] = []
    for instrument in instruments:
        latest = latest_by_symbol.get(instrument.symbol)
        if latest is None:
            stale.append(f"{instrument.symbol} has no bars")
            continue
        sessions = trading_days(instrument.calendar, latest, as_of)
        behind = int((sessions > pd.Timestamp(latest, tz="UTC")).sum())
        if behind > max_missing_sessions:
            stale.append(f"{instrument.symbol} last bar {latest}, {behind} sessions behind {as_of}")
    description = "; ".join(stale) if stale else f"every symbol is current as of {as_of}"
    return BarCheckOutcome("fresh", not stale, description, len(stale), tuple(stale[:EXAMPLES_SHOWN]))


def evaluate_bar_checks(
    bars: pd.DataFrame,
    history: pd.DataFrame | None,
    instruments: Sequence[InstrumentMeta],
    first_day: date,
    last_day: date,
    now: pd.Timestamp,
    timeframe: Timeframe = Timeframe.D1,
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> list[BarCheckOutcome]:
    """Every check of `BAR_CHECKS` on a window's bars (``history``: stored bars before the window;
    ``span``: the window's instants, which intraday gaps are looked for in)."""
    outcomes = {
        outcome.name: outcome
        for outcome in (
            check_ohlc_consistency(bars),
            check_positive_prices(bars),
            check_unique_bars(bars),
            check_price_bounds(bars),
            check_bar_to_bar_factor(bars, history),
            check_adjusted_close(bars),
            check_frozen_prices(
                bars,
                history,
                {i.symbol: max_unchanged_bars(timeframe, i.calendar) for i in instruments},
            ),
            check_future_bars(bars, now, timeframe),
            check_on_calendar(bars, instruments, timeframe),
            check_robust_jumps(bars, history),
            check_calendar_gaps(bars, instruments, first_day, last_day, timeframe, span),
        )
    }
    return [outcomes[check.name] for check in BAR_CHECKS]
