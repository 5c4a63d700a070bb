"""Performance metrics of backtested strategies, for one strategy or a whole population at once.

Conventions (every function here follows them, so numbers from the GA, the walk-forward report and the
registry agree):

* Input is a series of per-bar *simple* portfolio returns (``0.01`` = +1 %), 1-d for one strategy or 2-d
  ``(n_strategies, n_bars)`` for a population. Reductions run over the last axis, like numpy's ``axis=-1``:
  the population functions return one value per strategy (a 0-d array for a 1-d input).
* NaN or infinite inputs, returns below -100 %, and empty series are rejected with ``MetricsInputError``;
  a metric never silently absorbs a hole in the data.
* Equity starts at 1.0 *before* the first bar, so a loss on the first bar is a drawdown.
* A ratio whose risk denominator is zero (Sharpe and Sortino with no variation or no downside, Calmar with no
  drawdown, anything on fewer than two bars) is reported as 0.0: it is undefined, and reporting 0.0 rather
  than infinity or NaN keeps a degenerate series from winning a fitness comparison by a division by ~zero.
  "Zero" allows for floating-point noise: a volatility below ``1e-12 * max(1, |mean|)`` counts as zero.
* Annualisation uses ``periods_per_year``: callers pass their universe's (domain/study_windows.py); the
  default is daily exchange bars' 252. The annual risk-free rate is turned
  into a per-bar rate by compounding, ``(1 + rf) ** (1 / periods_per_year) - 1``.

The Sharpe ratios that feed the probabilistic and deflated Sharpe ratios (Bailey and Lopez de Prado) are
per bar, not annualised: those formulas are written in per-observation units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from emp_pipeline.domain.timeframes import EXCHANGE_DAYS_PER_YEAR

# The default annualisation factor: daily bars of an exchange, periods_per_year(D1, exchange).
DAILY_PERIODS_PER_YEAR = float(EXCHANGE_DAYS_PER_YEAR)

ZERO_VOLATILITY_TOLERANCE = 1e-12
"""A per-bar volatility at or below this (times max(1, |mean|)) is zero: ratios over it are undefined."""
_RECOVERY_TOLERANCE = 1e-12
_EULER_GAMMA = 0.5772156649015329


class MetricsInputError(ValueError):
    """Returns, positions or trade data handed to a metric are malformed; the message says which and where."""


# --------------------------------------------------------------------------------------------------------
# input validation


def _finite_array(values: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricsInputError(f"{what} must be numeric; could not convert to float64: {error}") from error
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise MetricsInputError(
            f"{what} contains NaN or infinite values (first at index {where}); fill or drop them upstream, "
            "metrics do not guess what a missing bar earned"
        )
    return array


def _returns_array(returns: object) -> np.ndarray:
    """Validated returns as float64, 1-d or 2-d (strategies on rows, bars on columns)."""
    array = _finite_array(returns, "returns")
    if array.ndim not in (1, 2):
        raise MetricsInputError(
            f"returns must be 1-d (n_bars,) or 2-d (n_strategies, n_bars); got shape {array.shape}"
        )
    if array.shape[-1] == 0:
        raise MetricsInputError("returns have no bars; metrics need at least one bar per strategy")
    below = array < -1.0
    if below.any():
        where = tuple(int(i) for i in np.argwhere(below)[0])
        raise MetricsInputError(
            f"returns contain a simple return below -100% at index {where} ({array[where]}); "
            "simple returns cannot lose more than the whole equity: check the backtest's position sizing"
        )
    return array


def _check_periods_per_year(periods_per_year: float) -> None:
    if not (periods_per_year > 0 and math.isfinite(periods_per_year)):
        raise MetricsInputError(f"periods_per_year must be a positive number; got {periods_per_year!r}")


def _per_period_rate(annual_rate: float, periods_per_year: float) -> float:
    if not (annual_rate > -1.0 and math.isfinite(annual_rate)):
        raise MetricsInputError(
            f"risk_free_rate must be a finite annual rate above -100%; got {annual_rate!r}"
        )
    return (1.0 + annual_rate) ** (1.0 / periods_per_year) - 1.0


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """numerator / denominator where ``defined``, 0.0 elsewhere, without division warnings."""
    out = np.zeros(np.broadcast(numerator, denominator, defined).shape)
    np.divide(numerator, denominator, out=out, where=defined)
    return out


# --------------------------------------------------------------------------------------------------------
# population (vectorised) metrics: one value per strategy, reductions over the last axis


def equity_curves(returns: object) -> np.ndarray:
    """Compounded equity after each bar, starting from 1.0 before the first bar (not included)."""
    return np.cumprod(1.0 + _returns_array(returns), axis=-1)


def total_returns(returns: object) -> np.ndarray:
    """Compounded return over the whole series: ``prod(1 + r) - 1``."""
    return equity_curves(returns)[..., -1] - 1.0


def cagrs(returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR) -> np.ndarray:
    """Compound annual growth rate, ``(1 + total) ** (periods_per_year / n_bars) - 1``.

    Short series annualise wildly (one +1 % day is +1,127 % a year); -1.0 once equity is wiped out.
    """
    _check_periods_per_year(periods_per_year)
    array = _returns_array(returns)
    growth = np.cumprod(1.0 + array, axis=-1)[..., -1]
    with np.errstate(divide="ignore", over="ignore"):
        return np.expm1(np.log(growth) * (periods_per_year / array.shape[-1]))


def annualised_volatilities(returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR) -> np.ndarray:
    """Sample standard deviation (ddof=1) of per-bar returns times sqrt(periods_per_year); 0.0 on one bar."""
    _check_periods_per_year(periods_per_year)
    array = _returns_array(returns)
    if array.shape[-1] < 2:
        return np.zeros(array.shape[:-1])
    return array.std(axis=-1, ddof=1) * math.sqrt(periods_per_year)


def sharpe_ratios(
    returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR, risk_free_rate: float = 0.0
) -> np.ndarray:
    """Annualised Sharpe ratio: mean excess return over its sample standard deviation, times sqrt(ppy).

    0.0 where undefined (fewer than two bars, or zero volatility, e.g. all-zero or constant returns). Pass
    ``periods_per_year=1`` for the per-bar Sharpe ratio that the PSR/DSR formulas expect.
    """
    _check_periods_per_year(periods_per_year)
    return _sharpe_of_valid(_returns_array(returns), periods_per_year, risk_free_rate)


def _sharpe_of_valid(array: np.ndarray, periods_per_year: float, risk_free_rate: float) -> np.ndarray:
    rate = _per_period_rate(risk_free_rate, periods_per_year)
    excess = array - rate if rate else array
    if excess.shape[-1] < 2:
        return np.zeros(excess.shape[:-1])
    mean, squares = _moments(excess)
    return _sharpe_of_moments(mean, squares, excess.shape[-1], periods_per_year)


def _sharpe_of_moments(
    mean: np.ndarray, squares: np.ndarray, n_bars: int, periods_per_year: float
) -> np.ndarray:
    std = np.sqrt(squares / (n_bars - 1))
    defined = std > ZERO_VOLATILITY_TOLERANCE * np.maximum(1.0, np.abs(mean))
    return _safe_ratio(mean, std, defined) * math.sqrt(periods_per_year)


def _moments(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per series (last axis): the mean and the sum of squared deviations from it.

    The same arithmetic as ``array.mean(axis=-1)`` and numpy's variance, bit for bit (numpy's pairwise
    summation order), in one compiled pass per series instead of four array passes.
    """
    rows = np.ascontiguousarray(array.reshape(-1, array.shape[-1]))
    mean, squares = _row_moments(rows)
    return mean.reshape(array.shape[:-1]), squares.reshape(array.shape[:-1])


@dataclass(frozen=True)
class ReturnStatistics:
    """What the GA reads of every strategy of every generation, from one validation of the returns.

    ``sharpe`` and ``max_drawdown`` equal ``sharpe_ratios`` and ``max_drawdowns`` bit for bit; ``mean`` and
    ``squared_deviations`` (sum of squared deviations from the mean) are the moments the Sharpe came from.
    """

    sharpe: np.ndarray
    max_drawdown: np.ndarray
    mean: np.ndarray
    squared_deviations: np.ndarray


def return_statistics(returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR) -> ReturnStatistics:
    """Sharpe ratio (no risk-free rate), max drawdown and moments of every series of ``returns``."""
    _check_periods_per_year(periods_per_year)
    array = _returns_array(returns)
    mean, squares = _moments(array)
    sharpe = (
        _sharpe_of_moments(mean, squares, array.shape[-1], periods_per_year)
        if array.shape[-1] >= 2
        else np.zeros(array.shape[:-1])
    )
    deepest = _deepest_drawdowns(np.ascontiguousarray(array.reshape(-1, array.shape[-1])))
    return ReturnStatistics(sharpe, deepest.reshape(array.shape[:-1]), mean, squares)


@njit(cache=True)
def _block_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's sum of at most 128 values: 8 interleaved accumulators (a plain loop below 8 values)."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = start + 8
    stop = start + n - n % 8
    while i < stop:
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        total += values[i]
        i += 1
    return total


@njit(cache=True)
def _pairwise_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's pairwise summation of ``values[start:start + n]``, bit for bit.

    numpy halves a range (rounded down to a multiple of 8) until it is at most 128 values long and adds
    the halves' sums; this walks the same tree with an explicit stack (numba cannot cache recursion).
    """
    node_start = np.empty(128, dtype=np.int64)
    node_size = np.empty(128, dtype=np.int64)
    node_split = np.empty(128, dtype=np.bool_)
    sums = np.empty(128)
    n_nodes = 1
    n_sums = 0
    node_start[0], node_size[0], node_split[0] = start, n, False
    while n_nodes:
        n_nodes -= 1
        first, size, split = node_start[n_nodes], node_size[n_nodes], node_split[n_nodes]
        if size <= 128:
            sums[n_sums] = _block_sum(values, first, size)
            n_sums += 1
        elif split:
            n_sums -= 1
            sums[n_sums - 1] = sums[n_sums - 1] + sums[n_sums]
        else:
            half = size // 2
            half -= half % 8
            # Popped in reverse: the left half first, then the right, then their sum.
            node_start[n_nodes], node_size[n_nodes], node_split[n_nodes] = first, size, True
            node_start[n_nodes + 1], node_size[n_nodes + 1], node_split[n_nodes + 1] = (
                first + half,
                size - half,
                False,
            )
            node_start[n_nodes + 2], node_size[n_nodes + 2], node_split[n_nodes + 2] = first, half, False
            n_nodes += 3
    return sums[0]


@njit(cache=True)
def _row_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_rows, n = rows.shape
    means = np.empty(n_rows)
    squares = np.empty(n_rows)
    deviations = np.empty(n)
    for s in range(n_rows):
        row = rows[s]
        # numpy's reduction adds the pairwise sum to the identity 0.0 (it turns a -0.0 sum into 0.0).
        mean = (0.0 + _pairwise_sum(row, 0, n)) / n
        for t in range(n):
            deviation = row[t] - mean
            deviations[t] = deviation * deviation
        means[s] = mean
        squares[s] = 0.0 + _pairwise_sum(deviations, 0, n)
    return means, squares


def sortino_ratios(
    returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR, risk_free_rate: float = 0.0
) -> np.ndarray:
    """Annualised Sortino ratio: mean excess return over the downside deviation, times sqrt(ppy).

    Downside deviation is the standard (Sortino and Price) one: ``sqrt(mean(min(r - target, 0) ** 2))`` over
    ALL bars, bars above the target counting as zero, with the target the per-bar risk-free rate (0 by
    default). Dividing by the number of losing bars instead would flatter strategies that lose rarely but
    hard. 0.0 where undefined (fewer than two bars, or no bar below the target).
    """
    _check_periods_per_year(periods_per_year)
    array = _returns_array(returns)
    excess = array - _per_period_rate(risk_free_rate, periods_per_year)
    if excess.shape[-1] < 2:
        return np.zeros(excess.shape[:-1])
    mean = excess.mean(axis=-1)
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2, axis=-1))
    defined = downside > ZERO_VOLATILITY_TOLERANCE * np.maximum(1.0, np.abs(mean))
    return _safe_ratio(mean, downside, defined) * math.sqrt(periods_per_year)


def max_drawdowns(returns: object) -> np.ndarray:
    """Deepest drawdown as a non-positive fraction of the peak equity (-0.25 = a 25 % fall); 0.0 if none.

    Compounded equity against its running peak (the initial 1.0 counts as a peak), in one compiled pass
    without the curves: the GA takes it for every strategy of every generation.
    """
    array = _returns_array(returns)
    return _deepest_drawdowns(np.ascontiguousarray(array.reshape(-1, array.shape[-1]))).reshape(
        array.shape[:-1]
    )


@njit(cache=True)
def _deepest_drawdowns(returns: np.ndarray) -> np.ndarray:
    """Per row: min over bars of equity / running peak - 1, taken per peak segment.

    Within a segment the peak is fixed and x / peak - 1 is monotonic in x even after rounding, so the
    segment's lowest equity gives its deepest drawdown bit for bit, with one division per segment.
    """
    deepest = np.zeros(returns.shape[0])
    for s in range(returns.shape[0]):
        equity = 1.0
        peak = 1.0
        trough = 1.0
        depth = 0.0
        for t in range(returns.shape[1]):
            equity = equity * (1.0 + returns[s, t])
            new_peak = equity > peak
            depth = min(depth, trough / peak - 1.0) if new_peak else depth
            trough = equity if new_peak else min(trough, equity)
            peak = max(peak, equity)
        deepest[s] = min(depth, trough / peak - 1.0)
    return deepest


def max_drawdown_durations(returns: object) -> np.ndarray:
    """Longest drawdown, in bars, from the peak bar to the recovery bar (first bar back at or above the peak).

    A drawdown not recovered by the last bar lasts from its peak to the last bar. The start of the series
    (before the first bar) counts as bar 0, so losing on bar 1 and recovering on bar 3 lasts 3 bars; a
    series that never leaves its peak has duration 0. Integer array.
    """
    equity = equity_curves(returns)
    flat = equity.reshape(-1, equity.shape[-1])
    n_bars = flat.shape[1]
    # Prepend the starting equity (bar 0) so a first-bar loss is measured from the start.
    with_start = np.concatenate([np.ones((flat.shape[0], 1)), flat], axis=1)
    peaks = np.maximum.accumulate(with_start, axis=1)
    underwater = with_start < peaks * (1.0 - _RECOVERY_TOLERANCE)
    index = np.arange(n_bars + 1)
    last_peak = np.maximum.accumulate(np.where(underwater, 0, index), axis=1)
    # At bar t >= 1, an episode is running (or just recovered) iff bar t-1 was under water; it has lasted
    # t minus the index of the last peak before bar t.
    elapsed = index[1:] - last_peak[:, :-1]
    in_episode = underwater[:, :-1] | underwater[:, 1:]
    durations = np.where(in_episode, elapsed, 0).max(axis=1, initial=0)
    return durations.reshape(equity.shape[:-1]).astype(np.int64)


def calmar_ratios(returns: object, periods_per_year: float = DAILY_PERIODS_PER_YEAR) -> np.ndarray:
    """CAGR divided by the magnitude of the maximum drawdown; 0.0 where there is no drawdown."""
    growth = cagrs(returns, periods_per_year)
    depth = -max_drawdowns(returns)
    with np.errstate(invalid="ignore"):
        defined = (depth > ZERO_VOLATILITY_TOLERANCE) & np.isfinite(growth)
    return _safe_ratio(growth, depth, defined)


def exposures(positions: object) -> np.ndarray:
    """Fraction of bars holding a non-zero position (long or short)."""
    array = _position_array(positions)
    return np.mean(array != 0.0, axis=-1)


def turnovers(positions: object) -> np.ndarray:
    """Mean absolute position change per bar, NOT annualised (multiply by periods_per_year for a yearly one).

    The position before the first bar is flat, so opening the first position counts as turnover; closing
    the position after the last bar does not (it has not happened). Units are those of ``positions``
    (with positions as fractions of equity, 1.0 = the whole equity traded once per bar).
    """
    array = _position_array(positions)
    return np.mean(np.abs(np.diff(array, axis=-1, prepend=0.0)), axis=-1)


def _position_array(positions: object) -> np.ndarray:
    array = _finite_array(positions, "positions")
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise MetricsInputError(
            f"positions must be 1-d (n_bars,) or 2-d (n_strategies, n_bars) with at least one bar; "
            f"got shape {array.shape}"
        )
    return array


# --------------------------------------------------------------------------------------------------------
# higher moments (inputs of the probabilistic and deflated Sharpe ratios)


def return_skewness(returns: object) -> np.ndarray:
    """Skewness of per-bar returns (population moments, as in Bailey and Lopez de Prado); 0.0 if constant."""
    array = _returns_array(returns)
    centred = array - array.mean(axis=-1, keepdims=True)
    variance = np.mean(centred**2, axis=-1)
    defined = variance > ZERO_VOLATILITY_TOLERANCE**2
    return _safe_ratio(np.mean(centred**3, axis=-1), variance**1.5, defined)


def return_kurtosis(returns: object) -> np.ndarray:
    """Kurtosis (NOT excess: 3.0 for a normal) of per-bar returns; 3.0 if constant, the normal's value."""
    array = _returns_array(returns)
    centred = array - array.mean(axis=-1, keepdims=True)
    variance = np.mean(centred**2, axis=-1)
    defined = variance > ZERO_VOLATILITY_TOLERANCE**2
    kurtosis = _safe_ratio(np.mean(centred**4, axis=-1), variance**2, defined)
    return np.where(defined, kurtosis, 3.0)


# --------------------------------------------------------------------------------------------------------
# one strategy: everything at once


@dataclass(frozen=True)
class TradeStatistics:
    """Trade-level figures; ``win_rate`` and ``profit_factor`` are 0.0 when there are no trades."""

    trade_count: int
    win_rate: float
    profit_factor: float


def trade_statistics(trade_returns: object) -> TradeStatistics:
    """Win rate and profit factor of closed trades (returns or PnLs: both figures are scale-free).

    Conventions as in ``win_rates`` and ``profit_factors``.
    """
    array = _finite_array(trade_returns, "trade_returns")
    if array.ndim != 1:
        raise MetricsInputError(f"trade_returns must be 1-d (one value per closed trade); got {array.shape}")
    count = int(array.size)
    return TradeStatistics(
        trade_count=count,
        win_rate=float(win_rates(np.count_nonzero(array > 0), count)),
        profit_factor=float(profit_factors(array[array > 0].sum(), -array[array < 0].sum())),
    )


def win_rates(winning_trades: object, trade_counts: object) -> np.ndarray:
    """Winning trades / all trades, element-wise; a trade at exactly 0 is not a win; 0.0 with no trades."""
    wins = _finite_array(winning_trades, "winning_trades")
    counts = _finite_array(trade_counts, "trade_counts")
    if (wins < 0).any() or (wins > counts).any():
        raise MetricsInputError("winning_trades must be between 0 and trade_counts for every strategy")
    return _safe_ratio(wins, counts, counts > 0)


def profit_factors(gross_profit: object, gross_loss: object) -> np.ndarray:
    """Gross profit / gross loss (both non-negative magnitudes), element-wise.

    ``inf`` when there are profits and no losses (the usual reporting convention; not JSON-safe, see
    ``PerformanceMetrics.as_dict``); 0.0 with no profits, including no trades at all, so a trade count is
    what tells "no trades" apart from "only losers".
    """
    profit = _finite_array(gross_profit, "gross_profit")
    loss = _finite_array(gross_loss, "gross_loss")
    if (profit < 0).any() or (loss < 0).any():
        raise MetricsInputError("gross_profit and gross_loss must be non-negative magnitudes")
    ratio = _safe_ratio(profit, loss, loss > 0)
    return np.where((loss == 0) & (profit > 0), math.inf, ratio)


@dataclass(frozen=True)
class PerformanceMetrics:
    """The metrics of one strategy over one window; definitions in the module docstring and functions.

    ``max_drawdown`` is a non-positive fraction, ``max_drawdown_duration`` is in bars, ``turnover`` is per bar
    (not annualised). Trade figures are None when no trade data was supplied, ``exposure`` and ``turnover``
    when no positions (or turnover series) were supplied: "not measured" is not "zero".
    """

    n_bars: int
    total_return: float
    cagr: float
    annualised_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration: int
    trade_count: int | None
    win_rate: float | None
    profit_factor: float | None
    exposure: float | None
    turnover: float | None

    def as_dict(self, finite_only: bool = False) -> dict[str, float | int | None]:
        """Plain dict; with ``finite_only`` non-finite floats (an infinite profit factor) become None,
        because JSON (and PostgreSQL's jsonb) has no infinity."""
        values = asdict(self)
        if finite_only:
            return {
                key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in values.items()
            }
        return values


def performance_metrics(
    returns: object,
    trade_returns: object | None = None,
    positions: object | None = None,
    turnover: object | None = None,
    periods_per_year: float = DAILY_PERIODS_PER_YEAR,
    risk_free_rate: float = 0.0,
) -> PerformanceMetrics:
    """All metrics of one strategy from its per-bar simple returns (1-d).

    ``positions`` (same length as ``returns``) gives exposure and, unless a per-bar ``turnover`` series
    (e.g. the absolute traded fraction of equity from the backtest) is supplied, turnover too.
    """
    array = _returns_array(returns)
    if array.ndim != 1:
        raise MetricsInputError(
            f"performance_metrics takes one strategy's 1-d returns; got shape {array.shape}: "
            "use the vectorised functions (sharpe_ratios, max_drawdowns, ...) for a population"
        )
    n_bars = array.shape[0]
    exposure: float | None = None
    mean_turnover: float | None = None
    if positions is not None:
        position_array = _position_array(positions)
        if position_array.shape != array.shape:
            raise MetricsInputError(
                f"positions have shape {position_array.shape} but returns have {array.shape}; "
                "pass one position per bar"
            )
        exposure = float(exposures(position_array))
        mean_turnover = float(turnovers(position_array))
    if turnover is not None:
        turnover_array = _finite_array(turnover, "turnover")
        if turnover_array.shape != array.shape or (turnover_array < 0).any():
            raise MetricsInputError(
                f"turnover must be one non-negative value per bar, shape {array.shape}; "
                f"got shape {turnover_array.shape}"
            )
        mean_turnover = float(turnover_array.mean())
    trades = trade_statistics(trade_returns) if trade_returns is not None else None
    return PerformanceMetrics(
        n_bars=n_bars,
        total_return=float(total_returns(array)),
        cagr=float(cagrs(array, periods_per_year)),
        annualised_volatility=float(annualised_volatilities(array, periods_per_year)),
        sharpe_ratio=float(sharpe_ratios(array, periods_per_year, risk_free_rate)),
        sortino_ratio=float(sortino_ratios(array, periods_per_year, risk_free_rate)),
        calmar_ratio=float(calmar_ratios(array, periods_per_year)),
        max_drawdown=float(max_drawdowns(array)),
        max_drawdown_duration=int(max_drawdown_durations(array)),
        trade_count=None if trades is None else trades.trade_count,
        win_rate=None if trades is None else trades.win_rate,
        profit_factor=None if trades is None else trades.profit_factor,
        exposure=exposure,
        turnover=mean_turnover,
    )


# --------------------------------------------------------------------------------------------------------
# the normal distribution (scipy-free) and the probabilistic / deflated Sharpe ratios

# Acklam's rational approximation of the inverse normal CDF (relative error < 1.15e-9 before refinement).
_ACKLAM_A = (
    -39.69683028665376,
    220.9460984245205,
    -275.9285104469687,
    138.3577518672690,
    -30.66479806614716,
    2.506628277459239,
)
_ACKLAM_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
_ACKLAM_C = (
    -0.007784894002430293,
    -0.3223964580411365,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
)
_ACKLAM_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
_ACKLAM_P_LOW = 0.02425


def normal_cdf(x: float) -> float:
    """Standard normal CDF via erfc (accurate in both tails, unlike 0.5 * (1 + erf))."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _polynomial(coefficients: tuple[float, ...], x: float) -> float:
    value = 0.0
    for coefficient in coefficients:
        value = value * x + coefficient
    return value


def normal_ppf(p: float) -> float:
    """Inverse standard normal CDF: Acklam's approximation polished by Halley steps to ~machine precision."""
    if not 0.0 < p < 1.0:
        raise MetricsInputError(f"normal_ppf needs a probability strictly between 0 and 1; got {p!r}")
    if p < _ACKLAM_P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = _polynomial(_ACKLAM_C, q) / (_polynomial(_ACKLAM_D, q) * q + 1.0)
    elif p <= 1.0 - _ACKLAM_P_LOW:
        q = p - 0.5
        r = q * q
        x = _polynomial(_ACKLAM_A, r) * q / (_polynomial(_ACKLAM_B, r) * r + 1.0)
    else:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -_polynomial(_ACKLAM_C, q) / (_polynomial(_ACKLAM_D, q) * q + 1.0)
    for _ in range(2):
        error = normal_cdf(x) - p
        u = error * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x -= u / (1.0 + 0.5 * x * u)
    return x


def _require_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise MetricsInputError(f"{name} must be finite; got {value!r}")


def probabilistic_sharpe_ratio(
    observed_sharpe: float,
    benchmark_sharpe: float,
    n_observations: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark_sharpe`` (Bailey and Lopez de Prado 2012).

    ``PSR = Z((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))``. Both Sharpe ratios are PER
    BAR (not annualised: divide an annual one by sqrt(periods_per_year)); ``kurtosis`` is NOT excess (3 for a
    normal); ``n_observations`` is T, the number of returns the observed Sharpe was measured on.
    """
    if n_observations < 2:
        raise MetricsInputError(f"the PSR needs at least 2 observations; got n_observations={n_observations}")
    _require_finite(
        observed_sharpe=observed_sharpe,
        benchmark_sharpe=benchmark_sharpe,
        skewness=skewness,
        kurtosis=kurtosis,
    )
    variance_factor = 1.0 - skewness * observed_sharpe + (kurtosis - 1.0) / 4.0 * observed_sharpe**2
    if variance_factor <= 0.0:
        raise MetricsInputError(
            f"1 - skew*SR + (kurt-1)/4*SR^2 = {variance_factor:.4g} is not positive for "
            f"SR={observed_sharpe}, "
            f"skew={skewness}, kurt={kurtosis}: are the Sharpe ratio per bar and the kurtosis non-excess?"
        )
    z = (observed_sharpe - benchmark_sharpe) * math.sqrt(n_observations - 1) / math.sqrt(variance_factor)
    return normal_cdf(z)


def expected_maximum_sharpe(sharpe_std: float, n_trials: int) -> float:
    """E[max SR] of ``n_trials`` trials with no skill whose Sharpe ratios have standard deviation sharpe_std.

    ``sqrt(V) ((1 - gamma) Z^-1(1 - 1/N) + gamma Z^-1(1 - 1/(N e)))``, gamma the Euler-Mascheroni constant
    (Bailey and Lopez de Prado 2014). In the units of ``sharpe_std`` (per bar for the DSR). One trial has no
    selection bias: 0.0.
    """
    if n_trials < 1 or sharpe_std < 0 or not math.isfinite(sharpe_std):
        raise MetricsInputError(
            f"expected_maximum_sharpe needs n_trials >= 1 and a finite sharpe_std >= 0; "
            f"got n_trials={n_trials}, sharpe_std={sharpe_std}"
        )
    if n_trials == 1:
        return 0.0
    return sharpe_std * (
        (1.0 - _EULER_GAMMA) * normal_ppf(1.0 - 1.0 / n_trials)
        + _EULER_GAMMA * normal_ppf(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    observed_sharpe: float,
    n_observations: int,
    *,
    n_trials: int | None = None,
    sharpe_std: float | None = None,
    trial_sharpes: object | None = None,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Probability that the selected strategy's true Sharpe beats the best of ``n_trials`` unskilled ones.

    DSR = PSR(SR0) with SR0 = ``expected_maximum_sharpe(sharpe_std, n_trials)`` (Bailey and Lopez de Prado
    2014). All Sharpe ratios PER BAR, kurtosis non-excess. Give either ``trial_sharpes`` (the per-bar Sharpe
    ratios of all trials; their sample std and, unless given, their count are used) or ``sharpe_std`` and
    ``n_trials``. Correlated trials (a GA population) count as fewer independent ones: passing the raw count
    makes the DSR conservative.
    """
    if trial_sharpes is not None:
        if sharpe_std is not None:
            raise MetricsInputError("give either trial_sharpes or sharpe_std, not both")
        sharpes = _finite_array(trial_sharpes, "trial_sharpes").ravel()
        if sharpes.size < 2:
            raise MetricsInputError(f"trial_sharpes needs at least 2 trials for a spread; got {sharpes.size}")
        sharpe_std = float(sharpes.std(ddof=1))
        n_trials = sharpes.size if n_trials is None else n_trials
    if sharpe_std is None or n_trials is None:
        raise MetricsInputError("deflated_sharpe_ratio needs trial_sharpes, or both sharpe_std and n_trials")
    benchmark = expected_maximum_sharpe(sharpe_std, n_trials)
    return probabilistic_sharpe_ratio(observed_sharpe, benchmark, n_observations, skewness, kurtosis)


def minimum_track_record_length(
    observed_sharpe: float,
    benchmark_sharpe: float,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
    confidence: float = 0.95,
) -> float:
    """Bars of track record needed before PSR(benchmark) reaches ``confidence`` (Bailey and Lopez de Prado
    2012): ``1 + (1 - skew SR + (kurt - 1) / 4 SR^2) (Z^-1(confidence) / (SR - SR*))^2``.

    Sharpe ratios PER BAR, kurtosis non-excess; infinite when the observed Sharpe does not exceed the
    benchmark (no track record, however long, makes it significant).
    """
    _require_finite(
        observed_sharpe=observed_sharpe,
        benchmark_sharpe=benchmark_sharpe,
        skewness=skewness,
        kurtosis=kurtosis,
    )
    if not 0.0 < confidence < 1.0:
        raise MetricsInputError(f"confidence must be strictly between 0 and 1; got {confidence!r}")
    if observed_sharpe <= benchmark_sharpe:
        return math.inf
    variance_factor = 1.0 - skewness * observed_sharpe + (kurtosis - 1.0) / 4.0 * observed_sharpe**2
    return 1.0 + variance_factor * (normal_ppf(confidence) / (observed_sharpe - benchmark_sharpe)) ** 2


@dataclass(frozen=True)
class DeflatedSharpe:
    """The DSR of one strategy picked from a population, with the figures it was computed from (per bar)."""

    selected_index: int
    deflated_sharpe_ratio: float
    observed_sharpe: float
    expected_maximum_sharpe: float
    sharpe_std: float
    n_trials: int
    n_observations: int
    skewness: float
    kurtosis: float


def population_deflated_sharpe(returns: object, selected_index: int | None = None) -> DeflatedSharpe:
    """DSR of one member (the highest Sharpe by default) of a population's 2-d per-bar returns.

    Every row is counted as a trial; the selected row's own skewness and kurtosis enter the PSR.
    """
    array = _returns_array(returns)
    if array.ndim != 2 or array.shape[0] < 2:
        raise MetricsInputError(
            "population_deflated_sharpe needs 2-d returns with at least 2 strategies; "
            f"got shape {array.shape}"
        )
    sharpes = sharpe_ratios(array, periods_per_year=1)
    index = int(np.argmax(sharpes)) if selected_index is None else selected_index
    if not 0 <= index < array.shape[0]:
        raise MetricsInputError(f"selected_index {index} is outside the population of {array.shape[0]}")
    sharpe_std = float(sharpes.std(ddof=1))
    skewness = float(return_skewness(array[index]))
    kurtosis = float(return_kurtosis(array[index]))
    benchmark = expected_maximum_sharpe(sharpe_std, array.shape[0])
    return DeflatedSharpe(
        selected_index=index,
        deflated_sharpe_ratio=probabilistic_sharpe_ratio(
            float(sharpes[index]), benchmark, array.shape[1], skewness, kurtosis
        ),
        observed_sharpe=float(sharpes[index]),
        expected_maximum_sharpe=benchmark,
        sharpe_std=sharpe_std,
        n_trials=array.shape[0],
        n_observations=array.shape[1],
        skewness=skewness,
        kurtosis=kurtosis,
    )
