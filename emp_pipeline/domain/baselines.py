"""What a period's pick is judged against: doing nothing clever, and the same search without skill.

* **Buy-and-hold**: equal weight of the period's instruments, bought at the first possible fill and held to
  the end, through the same kernel and the same ``Costs`` as the strategies (a long signal on every bar, no
  stop, no take profit, no holding limit, the whole sleeve invested): whatever the strategies pay to enter,
  it pays too.
* **Flat**: no position, a zero return on every bar.
* **The null model**: N random genomes drawn from the period's gene pool (the training window's features and
  threshold grids, the GA's own random-genome generator, its risk-gene ranges) and backtested with the same
  costs on the same bars. If the GA found nothing, its pick looks like a draw from this distribution; the
  pick's percentile and p-value say how unusual it is.
* **Superior predictive ability** (Hansen 2005) of the period's candidates against buy-and-hold, with
  ``arch.bootstrap.SPA`` (stationary bootstrap, studentized): the p-value that no candidate beats the
  benchmark once the whole candidate set is accounted for.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from arch.bootstrap import SPA

from emp_pipeline.domain.backtest import MarketArrays, PopulationResult, RiskArrays, simulate_population
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.evolution import EvolutionConfig, FeatureSpace, feature_space, random_genome
from emp_pipeline.domain.genome import POSITION_FRACTION_BOUNDS, FeaturePanel, Genome, population_signals
from emp_pipeline.domain.metrics import sharpe_ratios
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.walkforward import WalkForwardFold

NULL_GENOMES = 1_000
SPA_REPETITIONS = 1_000
MIN_SPA_BARS = 10


class BaselineInputError(ValueError):
    """A baseline cannot be computed from what was given; the message says what to change."""


def buy_and_hold(market: MarketArrays, costs: Costs) -> PopulationResult:
    """Equal-weight buy-and-hold of every instrument of ``market`` through the backtest kernel."""
    n_bars, n_instruments = market.close.shape
    signals = np.ones((1, n_bars, n_instruments), dtype=np.int8)
    hold = RiskArrays(
        stop_atr=np.array([math.inf]),
        take_profit_atr=np.array([math.inf]),
        position_fraction=np.array([1.0]),
        max_holding_bars=np.array([n_bars + 1], dtype=np.int64),
    )
    return simulate_population(signals, market, hold, costs)


def null_genomes(
    space: FeatureSpace,
    count: int,
    seed: int,
    max_conditions: int,
    max_position_fraction: float = POSITION_FRACTION_BOUNDS[1],
) -> list[Genome]:
    """``count`` random genomes from the gene pool (sizing under the same ceiling), as the GA's first
    generation draws them."""
    if count < 1:
        raise BaselineInputError(f"the null model needs at least one genome; got {count}")
    stream = RandomStream(seed)
    return [random_genome(stream, space, max_conditions, max_position_fraction) for _ in range(count)]


def backtest_genomes(
    genomes: Sequence[Genome], panel: FeaturePanel, market: MarketArrays, costs: Costs
) -> PopulationResult:
    """Genomes on the panel's bars alone (signals start flat), with the given costs."""
    return simulate_population(
        population_signals(genomes, panel), market, RiskArrays.from_genomes(genomes), costs
    )


@dataclass(frozen=True)
class NullComparison:
    """Where one figure falls in the null distribution of the same figure.

    ``percentile``: share of null draws below it (ties count half), 0..100; ``p_value``: the one-sided
    permutation p-value ``(1 + #null >= value) / (N + 1)`` (never 0: N draws cannot prove more).
    """

    value: float
    percentile: float
    p_value: float
    n_null: int


def compare_with_null(value: float, null_values: np.ndarray) -> NullComparison:
    null = np.asarray(null_values, dtype=np.float64)
    if null.ndim != 1 or null.size == 0 or not np.isfinite(null).all():
        raise BaselineInputError(f"null values must be a non-empty 1-d finite array; got shape {null.shape}")
    if not math.isfinite(value):
        raise BaselineInputError(f"the compared value must be finite; got {value!r}")
    below = int(np.count_nonzero(null < value))
    tied = int(np.count_nonzero(null == value))
    return NullComparison(
        value=float(value),
        percentile=100.0 * (below + 0.5 * tied) / null.size,
        p_value=(1 + null.size - below) / (null.size + 1),
        n_null=int(null.size),
    )


@dataclass(frozen=True)
class SpaResult:
    """Hansen's SPA p-values (lower, consistent, upper) that no candidate beats the benchmark."""

    lower: float
    consistent: float
    upper: float
    n_candidates: int
    n_bars: int


def superior_predictive_ability(
    benchmark_returns: np.ndarray,
    candidate_returns: np.ndarray,
    seed: int,
    repetitions: int = SPA_REPETITIONS,
    block_size: int | None = None,
) -> SpaResult | None:
    """SPA test of candidates (rows of per-bar returns) against a benchmark on the same bars.

    Losses are negative returns; ``block_size`` defaults to sqrt(bars) (at least 2). None when there are
    fewer than MIN_SPA_BARS bars or every candidate's excess return is constant (nothing to bootstrap).
    """
    benchmark = np.asarray(benchmark_returns, dtype=np.float64)
    candidates = np.atleast_2d(np.asarray(candidate_returns, dtype=np.float64))
    if benchmark.ndim != 1 or candidates.shape[1] != benchmark.size:
        raise BaselineInputError(
            f"benchmark ({benchmark.shape}) and candidates ({candidates.shape}) must cover the same bars"
        )
    if not (np.isfinite(benchmark).all() and np.isfinite(candidates).all()):
        raise BaselineInputError("benchmark and candidate returns must be finite")
    n_bars = benchmark.size
    excess = candidates - benchmark
    varying = excess.std(axis=1) > 1e-15
    if n_bars < MIN_SPA_BARS or not varying.any():
        return None
    block = block_size or max(2, round(math.sqrt(n_bars)))
    test = SPA(-benchmark, -candidates[varying].T, block_size=block, reps=repetitions, seed=seed)
    with warnings.catch_warnings():
        # arch warns when a candidate's loss differential has a tiny variance; the test stays valid.
        warnings.simplefilter("ignore", RuntimeWarning)
        test.compute()
    p_values = test.pvalues
    return SpaResult(
        lower=float(p_values["lower"]),
        consistent=float(p_values["consistent"]),
        upper=float(p_values["upper"]),
        n_candidates=int(candidates.shape[0]),
        n_bars=n_bars,
    )


@dataclass(frozen=True)
class PeriodBaselines:
    """A period's benchmarks on its out-of-sample bars: per-bar returns of buy-and-hold and of every null
    genome, the null's annualised Sharpe ratios, and the SPA test of the period's candidates."""

    buy_and_hold: np.ndarray
    null_returns: np.ndarray
    null_sharpes: np.ndarray
    spa: SpaResult | None

    def against_null(self, sharpe: float) -> NullComparison:
        return compare_with_null(sharpe, self.null_sharpes)


def period_baselines(
    training_panel: FeaturePanel,
    test_panel: FeaturePanel,
    test_market: MarketArrays,
    candidate_returns: np.ndarray,
    config: EvolutionConfig,
    seed: int,
    n_null: int = NULL_GENOMES,
) -> PeriodBaselines:
    """Buy-and-hold, the null model (gene pool of ``training_panel``) and SPA on the test bars."""
    space = feature_space(training_panel, config.excluded_features)
    genomes = null_genomes(space, n_null, seed, config.max_conditions, config.max_position_fraction)
    null = backtest_genomes(genomes, test_panel, test_market, config.costs)
    null_returns = clean_returns(null.returns)
    held = clean_returns(buy_and_hold(test_market, config.costs).returns[0])
    return PeriodBaselines(
        buy_and_hold=held,
        null_returns=null_returns,
        null_sharpes=sharpe_ratios(null_returns, config.periods_per_year),
        spa=superior_predictive_ability(held, clean_returns(candidate_returns), seed),
    )


def clean_returns(returns: np.ndarray) -> np.ndarray:
    """A ruined strategy's equity hits zero and its later returns are 0/0: it lost all, then nothing more."""
    return np.clip(np.where(np.isfinite(returns), returns, 0.0), -1.0, None)


def fold_baselines(
    panel: FeaturePanel,
    market: MarketArrays,
    fold: WalkForwardFold,
    candidate_returns: np.ndarray,
    config: EvolutionConfig,
    seed: int,
    n_null: int = NULL_GENOMES,
) -> PeriodBaselines:
    """``period_baselines`` of a walk-forward fold: gene pool from its training window, its test bars."""
    return period_baselines(
        panel.window(fold.train_start, fold.train_end),
        panel.window(fold.test_start, fold.test_end),
        market.window(fold.test_start, fold.test_end),
        candidate_returns,
        config,
        seed,
        n_null,
    )
