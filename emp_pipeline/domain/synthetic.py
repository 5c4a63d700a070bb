"""Seeded regime-switching markets: prices whose true regime is known, so classifiers can be scored.

Each instrument follows its own Markov chain over regimes; within a regime daily log returns are Gaussian
with that regime's drift and volatility. Bars come out in the canonical bar frame, the true labels in a
frame with the same (symbol, date) rows, so accuracy is a join away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.regimes import REGIME_LABELS


@dataclass(frozen=True)
class RegimeSpec:
    """One regime's daily log-return law and its typical length (mean duration in bars)."""

    label: str
    drift: float
    volatility: float
    mean_duration: float


# Well separated: the trends differ in drift and volatility, the high-volatility regime in volatility.
WELL_SEPARATED_REGIMES: tuple[RegimeSpec, ...] = (
    RegimeSpec("bull_trend", drift=0.0020, volatility=0.008, mean_duration=80.0),
    RegimeSpec("bear_trend", drift=-0.0025, volatility=0.014, mean_duration=60.0),
    RegimeSpec("range", drift=0.0, volatility=0.005, mean_duration=70.0),
    RegimeSpec("high_volatility", drift=0.0, volatility=0.030, mean_duration=40.0),
)


class SyntheticMarketError(ValueError):
    """The requested synthetic market is ill-defined (unknown label, non-positive volatility, ...)."""


@dataclass(frozen=True)
class SyntheticMarket:
    """Bars in the canonical frame plus the regime that generated each bar."""

    bars: pd.DataFrame
    true_regimes: pd.DataFrame
    regimes: tuple[RegimeSpec, ...]

    @property
    def instruments(self) -> tuple[InstrumentMeta, ...]:
        """Metadata for the synthetic symbols: index-like, quoted in USD, trading Monday to Friday."""
        return tuple(synthetic_instrument(str(symbol)) for symbol in pd.unique(self.bars["symbol"]))


def synthetic_instrument(
    symbol: str,
    *,
    name: str | None = None,
    asset_class: AssetClass = AssetClass.INDEX,
    calendar: str = CALENDAR_24X5,
) -> InstrumentMeta:
    """Plain contract terms (USD, cent ticks, one-unit lots) for a made-up symbol that no broker defines."""
    return InstrumentMeta(
        symbol=symbol,
        name=f"synthetic {symbol}" if name is None else name,
        asset_class=asset_class,
        quote_currency="USD",
        tick_size=0.01,
        pip_position=2,
        lot_size=1.0,
        min_volume=1.0,
        step_volume=1.0,
        calendar=calendar,
    )


def transition_matrix(regimes: tuple[RegimeSpec, ...]) -> np.ndarray:
    """Stay with probability 1 - 1/duration, otherwise move uniformly to another regime."""
    count = len(regimes)
    matrix = np.empty((count, count))
    for row, spec in enumerate(regimes):
        leave = 1.0 / spec.mean_duration
        matrix[row, :] = leave / (count - 1)
        matrix[row, row] = 1.0 - leave
    return matrix


def _validate(regimes: tuple[RegimeSpec, ...], n_instruments: int, n_bars: int) -> None:
    if n_instruments < 1 or n_bars < 2:
        raise SyntheticMarketError(f"need at least 1 instrument and 2 bars, got {n_instruments} x {n_bars}")
    if len(regimes) < 2:
        raise SyntheticMarketError("need at least two regimes for a regime-switching market")
    for spec in regimes:
        if spec.label not in REGIME_LABELS:
            raise SyntheticMarketError(f"regime label {spec.label!r} is not one of {REGIME_LABELS}")
        if spec.volatility <= 0 or spec.mean_duration <= 1:
            raise SyntheticMarketError(
                f"regime {spec.label!r} needs volatility > 0 and mean_duration > 1, "
                f"got {spec.volatility} and {spec.mean_duration}"
            )


def _regime_paths(
    rng: np.random.Generator, matrix: np.ndarray, n_instruments: int, n_bars: int
) -> np.ndarray:
    """Markov chains for all instruments at once: one step of the loop advances every instrument.

    Sampling by inverse CDF on the transition row; the start state is drawn uniformly.
    """
    cumulative = np.cumsum(matrix, axis=1)
    cumulative[:, -1] = 1.0
    uniforms = rng.random((n_bars, n_instruments))
    states = np.empty((n_bars, n_instruments), dtype=np.int64)
    states[0] = rng.integers(0, matrix.shape[0], size=n_instruments)
    for t in range(1, n_bars):
        rows = cumulative[states[t - 1]]
        states[t] = (uniforms[t][:, None] > rows).sum(axis=1)
    return states


def generate_market(
    n_instruments: int = 3,
    n_bars: int = 2520,
    seed: int = 0,
    regimes: tuple[RegimeSpec, ...] = WELL_SEPARATED_REGIMES,
    start: str = "2000-01-03",
    start_price: float = 100.0,
) -> SyntheticMarket:
    """A seeded market of `n_instruments` symbols (SYN00, SYN01, ...) on business days from `start`.

    The same arguments give the same frames, bit for bit.
    """
    _validate(regimes, n_instruments, n_bars)
    rng = np.random.default_rng(seed)
    states = _regime_paths(rng, transition_matrix(regimes), n_instruments, n_bars)
    drift = np.array([spec.drift for spec in regimes])[states]
    sigma = np.array([spec.volatility for spec in regimes])[states]
    shocks = rng.standard_normal((n_bars, n_instruments))
    log_returns = drift - 0.5 * sigma**2 + sigma * shocks
    log_returns[0] = 0.0
    close = start_price * np.exp(np.cumsum(log_returns, axis=0))
    gap = 0.2 * sigma * rng.standard_normal((n_bars, n_instruments))
    previous_close = np.vstack([close[:1], close[:-1]])
    open_ = previous_close * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(
        0.5 * sigma * np.abs(rng.standard_normal((n_bars, n_instruments)))
    )
    low = np.minimum(open_, close) * np.exp(
        -0.5 * sigma * np.abs(rng.standard_normal((n_bars, n_instruments)))
    )
    volume = np.round(1e6 * (sigma / 0.01) * np.exp(0.3 * rng.standard_normal((n_bars, n_instruments))))

    dates = pd.bdate_range(start=start, periods=n_bars, tz="UTC")
    symbols = [f"SYN{index:02d}" for index in range(n_instruments)]
    # Column-major ravel puts each symbol's bars together, matching the canonical (symbol, date) order.
    bars = pd.DataFrame(
        {
            "date": np.tile(dates, n_instruments),
            "symbol": np.repeat(symbols, n_bars),
            "open": open_.ravel(order="F"),
            "high": high.ravel(order="F"),
            "low": low.ravel(order="F"),
            "close": close.ravel(order="F"),
            "adj_close": close.ravel(order="F"),
            "volume": volume.ravel(order="F"),
        }
    )
    bars = normalise_bars(bars)
    labels = np.array([spec.label for spec in regimes], dtype=object)
    true_regimes = pd.DataFrame(
        {"date": bars["date"], "symbol": bars["symbol"], "regime": labels[states.ravel(order="F")]}
    )
    return SyntheticMarket(bars=bars, true_regimes=true_regimes, regimes=regimes)


def balanced_accuracy(true_labels: np.ndarray | pd.Series, predicted: np.ndarray | pd.Series) -> float:
    """Mean per-class recall over the classes present in `true_labels` (chance is 1 / classes)."""
    truth = np.asarray(true_labels, dtype=object)
    guess = np.asarray(predicted, dtype=object)
    if truth.shape != guess.shape or truth.size == 0:
        raise SyntheticMarketError(
            f"need two equal-length non-empty label arrays, got {truth.shape}, {guess.shape}"
        )
    recalls = [float(np.mean(guess[truth == label] == label)) for label in np.unique(truth)]
    return float(np.mean(recalls))
