"""The walk-forward study's arithmetic around the GA: seeds per period, which strategies to record, their
out-of-sample metrics, the stitched out-of-sample curve and the trial matrix the PBO is computed on.

The study's honest curve takes, for every period, the strategy that ranked first *by training fitness*
(rank 0 of the final population: the choice made before the period's data existed) and chains the
out-of-sample returns of those choices. The PBO (CSCV, Bailey et al. 2016) needs the same N trials over
the whole study; the trials here are the N *rank positions* of the final population ("the k-th best by
training fitness"), each one's out-of-sample returns chained over the periods like the honest curve. CSCV
then asks whether the rank that looks best on half of the study's out-of-sample bars stays above the median
on the other half: a PBO near 0.5 says the GA's in-sample ranking carries no out-of-sample information.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from emp_pipeline.domain.backtest import PopulationResult
from emp_pipeline.domain.baselines import NullComparison, PeriodBaselines, clean_returns, compare_with_null
from emp_pipeline.domain.evolution import EvolutionResult, StrategyRecord
from emp_pipeline.domain.metrics import (
    DAILY_PERIODS_PER_YEAR,
    MetricsInputError,
    expected_maximum_sharpe,
    max_drawdowns,
    minimum_track_record_length,
    performance_metrics,
    probabilistic_sharpe_ratio,
    profit_factors,
    return_kurtosis,
    return_skewness,
    sharpe_ratios,
)
from emp_pipeline.domain.overfitting import BacktestOverfitting, probability_of_backtest_overfitting

# The metrics module's names -> the registry's column names (the rest are the same in both).
REGISTRY_METRIC_NAMES: dict[str, str] = {
    "annualised_volatility": "volatility",
    "sharpe_ratio": "sharpe",
    "sortino_ratio": "sortino",
    "calmar_ratio": "calmar",
    "max_drawdown_duration": "max_drawdown_days",
}
OOS_COLUMNS: tuple[str, ...] = ("date", "period", "series", "rank", "strategy_id", "return")
# What a row of the out-of-sample frame measures: an evolved strategy (rank = its training rank), the
# period's buy-and-hold benchmark, or null genome number ``rank``.
STRATEGY, BUY_AND_HOLD, NULL = "strategy", "buy_and_hold", "null"
CURVE_COLUMNS: tuple[str, ...] = ("date", "period", "strategy_id", "return", "equity", "drawdown")


class StudyInputError(ValueError):
    """The out-of-sample frame does not have the study's shape; the message says what is missing."""


def period_seed(base_seed: int, period_key: str) -> int:
    """A seed per period, fixed by (configured seed, period key): re-running a period repeats its GA bit
    for bit, and neighbouring periods still draw independent populations. 31 bits fit any SQL integer."""
    digest = hashlib.sha256(f"{base_seed}:{period_key}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFF_FFFF


def lineage_closure(result: EvolutionResult) -> list[StrategyRecord]:
    """The final population and every ancestor of it, parents before children (the registry's lineage).

    Strategies that left no descendant in the final population are dropped: they were evaluated, but only
    the survivors and the line that led to them are worth keeping. Survivors carry their final fitness.
    """
    by_id = {record.strategy_id: record for record in result.records}
    final = {record.strategy_id: record for record in result.final_population}
    wanted: set[str] = set()
    frontier = list(final)
    while frontier:
        identity = frontier.pop()
        if identity in wanted:
            continue
        wanted.add(identity)
        frontier.extend(by_id[identity].parent_ids)
    return [
        final.get(record.strategy_id, record) for record in result.records if record.strategy_id in wanted
    ]


@dataclass(frozen=True)
class SearchTrials:
    """What a period's search tried, the N and V of its deflated Sharpe ratios.

    ``count`` is the number of distinct candidates the GA evaluated in the period (every generation,
    deduplicated by content: a genome's id is the hash of its canonical JSON), ``sharpe_variance`` the sample
    variance of their in-sample per-bar Sharpe ratios.
    """

    count: int
    sharpe_variance: float

    @property
    def expected_maximum_sharpe(self) -> float:
        """Per-bar Sharpe the best of ``count`` unskilled candidates would be expected to show: the hurdle."""
        if self.count < 2 or not math.isfinite(self.sharpe_variance):
            return 0.0
        return expected_maximum_sharpe(math.sqrt(max(self.sharpe_variance, 0.0)), self.count)


def search_trials(result: EvolutionResult, periods_per_year: float) -> SearchTrials:
    """The period's trials from every record of its GA run (not just the final population)."""
    sharpes = {record.strategy_id: record.metrics["sharpe"] for record in result.records}
    per_bar = np.array(list(sharpes.values()), dtype=np.float64) / math.sqrt(periods_per_year)
    variance = float(per_bar.var(ddof=1)) if per_bar.size >= 2 else math.nan
    return SearchTrials(count=len(sharpes), sharpe_variance=variance)


def deflation_metrics(returns: np.ndarray, trials: SearchTrials) -> dict[str, float | int | None]:
    """The deflated Sharpe of one track record (a strategy picked from ``trials``) and what it rests on.

    ``deflated_sharpe``: probability that the true Sharpe beats the hurdle the search sets (the expected
    maximum of ``trials.count`` unskilled Sharpe ratios with the search's variance), from the track's own
    per-bar Sharpe, length, skewness and kurtosis; ``dsr_trials``: the N used; ``min_track_record_bars``:
    bars of this track record needed for 95 % confidence of beating the hurdle (None when no length would
    do). Undefined figures (fewer than two bars, a degenerate track) are None.
    """
    row: dict[str, float | int | None] = {
        "deflated_sharpe": None,
        "dsr_trials": trials.count,
        "dsr_hurdle_sharpe": trials.expected_maximum_sharpe,
        "min_track_record_bars": None,
    }
    if returns.size < 2:
        return row
    observed = float(sharpe_ratios(returns, periods_per_year=1))
    skewness = float(return_skewness(returns))
    kurtosis = float(return_kurtosis(returns))
    hurdle = trials.expected_maximum_sharpe
    try:
        deflated = probabilistic_sharpe_ratio(observed, hurdle, returns.size, skewness, kurtosis)
        length = minimum_track_record_length(observed, hurdle, skewness, kurtosis)
    except MetricsInputError:
        return row
    row["deflated_sharpe"] = deflated
    row["min_track_record_bars"] = length if math.isfinite(length) else None
    return row


def out_of_sample_metrics(
    result: PopulationResult, trials: SearchTrials, periods_per_year: float = DAILY_PERIODS_PER_YEAR
) -> list[dict[str, Any]]:
    """Registry-named metrics of every strategy of an out-of-sample backtest, JSON-safe (no infinities).

    The deflated Sharpe of each strategy's out-of-sample track is judged against the hurdle of its period's
    search (``deflation_metrics``); turnover is per bar. The costs paid, each on its own (``fee_cost``,
    ``spread_cost``, ``swap_cost``: fractions of the initial capital; a negative swap cost was credited). A
    metric that cannot be defined on the window (fewer than two bars) is None.
    """
    returns = clean_returns(result.returns)
    n_strategies, n_bars = returns.shape
    factors = profit_factors(result.gross_profit, result.gross_loss)
    rows: list[dict[str, Any]] = []
    for k in range(n_strategies):
        trades = int(result.trade_counts[k])
        metrics = performance_metrics(returns[k], periods_per_year=periods_per_year)
        metrics = replace(
            metrics,
            trade_count=trades,
            win_rate=float(result.winning_trades[k] / trades) if trades else None,
            profit_factor=float(factors[k]) if trades else None,
            exposure=float(result.exposure[k]),
            turnover=float(result.turnover[k] / n_bars) if n_bars else None,
        )
        row = {REGISTRY_METRIC_NAMES.get(name, name): value for name, value in metrics.as_dict(True).items()}
        row.update(deflation_metrics(returns[k], trials))
        row.update(
            fee_cost=float(result.fees[k]),
            spread_cost=float(result.spread_costs[k]),
            swap_cost=float(result.swap_costs[k]),
        )
        rows.append(row)
    return rows


def population_deflation(
    result: PopulationResult, trials: SearchTrials
) -> list[dict[str, float | int | None]]:
    """``deflation_metrics`` of every strategy of a backtest (the in-sample tracks of a final population)."""
    return [deflation_metrics(track, trials) for track in clean_returns(result.returns)]


def _check_oos(oos: pd.DataFrame) -> None:
    missing = [column for column in OOS_COLUMNS if column not in oos.columns and column != "series"]
    if missing:
        raise StudyInputError(f"out-of-sample frame is missing columns {missing}; it has {list(oos.columns)}")


def series_rows(oos: pd.DataFrame, series: str) -> pd.DataFrame:
    """The rows of one series (frames stored before baselines were kept hold strategies only)."""
    _check_oos(oos)
    if "series" not in oos.columns:
        return oos if series == STRATEGY else oos.iloc[0:0]
    return oos.loc[oos["series"].fillna(STRATEGY) == series]


def period_frame(
    period: str,
    dates: pd.DatetimeIndex,
    ranks: np.ndarray,
    strategy_ids: list[str],
    strategy_returns: np.ndarray,
    baselines: PeriodBaselines,
) -> pd.DataFrame:
    """A period's out-of-sample returns, long: its strategies, buy-and-hold and every null genome."""
    n_bars = len(dates)
    n_null = baselines.null_returns.shape[0]
    blocks = [
        (STRATEGY, ranks, np.asarray(strategy_ids, dtype=object), clean_returns(strategy_returns)),
        (
            BUY_AND_HOLD,
            np.zeros(1, dtype=np.int64),
            np.array([BUY_AND_HOLD], dtype=object),
            baselines.buy_and_hold[None],
        ),
        (
            NULL,
            np.arange(n_null),
            np.array([f"null-{j}" for j in range(n_null)], dtype=object),
            baselines.null_returns,
        ),
    ]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "date": dates[np.tile(np.arange(n_bars), len(block_ids))],
                    "period": period,
                    "series": series,
                    "rank": np.repeat(np.asarray(block_ranks, dtype=np.int64), n_bars),
                    "strategy_id": np.repeat(block_ids, n_bars),
                    "return": block_returns.reshape(-1),
                }
            )
            for series, block_ranks, block_ids, block_returns in blocks
        ],
        ignore_index=True,
    ).loc[:, list(OOS_COLUMNS)]


def baseline_metrics(
    sharpe: float, baselines: PeriodBaselines, periods_per_year: float
) -> dict[str, float | None]:
    """One strategy's period against its benchmarks: null percentile and p-value of its Sharpe, the
    period's SPA p-value, and buy-and-hold's Sharpe and return."""
    comparison = baselines.against_null(sharpe)
    held = baselines.buy_and_hold
    return {
        "null_percentile": comparison.percentile,
        "null_p_value": comparison.p_value,
        "null_genomes": comparison.n_null,
        "spa_p_value": baselines.spa.consistent if baselines.spa is not None else None,
        "buy_and_hold_sharpe": float(sharpe_ratios(held, periods_per_year)),
        "buy_and_hold_return": float(np.prod(1.0 + held) - 1.0),
    }


def selected_curve(oos: pd.DataFrame) -> pd.DataFrame:
    """The study's honest equity curve: each period's rank-0 strategy, chained in date order.

    Equity starts at 1.0 before the first out-of-sample bar; drawdown is equity over its running peak - 1.
    """
    strategies = series_rows(oos, STRATEGY)
    chosen = (
        strategies.loc[strategies["rank"] == 0].sort_values("date", kind="mergesort").reset_index(drop=True)
    )
    if chosen["date"].duplicated().any():
        raise StudyInputError("two rank-0 returns on one date: periods overlap in the out-of-sample frame")
    returns = clean_returns(chosen["return"].to_numpy(dtype=np.float64))
    equity = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return pd.DataFrame(
        {
            "date": pd.to_datetime(chosen["date"], utc=True).astype("datetime64[ns, UTC]"),
            "period": chosen["period"].astype(str),
            "strategy_id": chosen["strategy_id"].astype(str),
            "return": returns,
            "equity": equity,
            "drawdown": equity / peak - 1.0,
        }
    )


def trial_matrix(oos: pd.DataFrame) -> pd.DataFrame:
    """T x N out-of-sample returns: a row per study bar, a column per rank held by every period."""
    wide = (
        series_rows(oos, STRATEGY)
        .pivot_table(index="date", columns="rank", values="return", aggfunc="first")
        .sort_index()
    )
    return wide.dropna(axis=1).apply(lambda column: clean_returns(column.to_numpy(dtype=np.float64)))


def usable_blocks(n_bars: int, max_blocks: int) -> int:
    """The most CSCV blocks (even, <= max_blocks) that leave every block two bars; 0 when fewer than 2."""
    blocks = min(max_blocks, n_bars // 2)
    blocks -= blocks % 2
    return blocks if blocks >= 2 else 0


def study_overfitting(
    matrix: pd.DataFrame, max_blocks: int = 16, periods_per_year: float = DAILY_PERIODS_PER_YEAR
) -> BacktestOverfitting | None:
    """PBO of the study's trial matrix, or None when it has fewer than 2 trials or 4 bars."""
    n_bars, n_trials = matrix.shape
    blocks = usable_blocks(n_bars, max_blocks)
    if n_trials < 2 or blocks == 0:
        return None
    return probability_of_backtest_overfitting(
        matrix.to_numpy(dtype=np.float64), n_blocks=blocks, periods_per_year=periods_per_year
    )


@dataclass(frozen=True)
class StitchedBaselines:
    """The study's benchmarks over the honest curve's bars: buy-and-hold chained period after period, each
    null genome index chained likewise (a random pick every period), and the pick's place among them."""

    buy_and_hold: np.ndarray
    null_sharpes: np.ndarray
    pick_against_null: NullComparison


def stitched_baselines(
    oos: pd.DataFrame, curve: pd.DataFrame, periods_per_year: float = DAILY_PERIODS_PER_YEAR
) -> StitchedBaselines | None:
    """None when some period of the curve has no baseline rows (measured before baselines were kept)."""
    dates = pd.DatetimeIndex(curve["date"])
    held = series_rows(oos, BUY_AND_HOLD).drop_duplicates("date").set_index("date")["return"]
    null = series_rows(oos, NULL).pivot_table(index="date", columns="rank", values="return", aggfunc="first")
    if not dates.isin(held.index).all() or not dates.isin(null.index).all():
        return None
    null = null.reindex(dates).dropna(axis=1)
    if null.shape[1] == 0:
        return None
    null_sharpes = sharpe_ratios(clean_returns(null.to_numpy(dtype=np.float64).T), periods_per_year)
    pick = float(sharpe_ratios(curve["return"].to_numpy(dtype=np.float64), periods_per_year))
    return StitchedBaselines(
        buy_and_hold=clean_returns(held.reindex(dates).to_numpy(dtype=np.float64)),
        null_sharpes=null_sharpes,
        pick_against_null=compare_with_null(pick, null_sharpes),
    )


def period_comparisons(
    oos: pd.DataFrame, curve: pd.DataFrame, periods_per_year: float = DAILY_PERIODS_PER_YEAR
) -> pd.DataFrame:
    """Per period of the honest curve: the pick's return and Sharpe beside buy-and-hold's, where the pick's
    Sharpe falls in the period's null distribution (NaN when the period has no null rows), and whether it
    beat the median of its own population out of sample."""
    strategies = series_rows(oos, STRATEGY)
    held = series_rows(oos, BUY_AND_HOLD)
    null = series_rows(oos, NULL)
    rows = []
    for period, part in curve.groupby("period", sort=True):
        returns = part["return"].to_numpy(dtype=np.float64)
        sharpe = float(sharpe_ratios(returns, periods_per_year))
        totals = (
            strategies.loc[strategies["period"] == period]
            .groupby("rank")["return"]
            .apply(lambda r: float(np.prod(1.0 + r) - 1.0))
        )
        period_held = held.loc[held["period"] == period, "return"].to_numpy(dtype=np.float64)
        period_null = null.loc[null["period"] == period].pivot_table(
            index="rank", columns="date", values="return", aggfunc="first"
        )
        comparison = (
            compare_with_null(sharpe, sharpe_ratios(period_null.to_numpy(dtype=np.float64), periods_per_year))
            if len(period_null) and period_null.shape[1] >= 2
            else None
        )
        total = _total(returns)
        rows.append(
            {
                "period": period,
                "strategy_id": part["strategy_id"].iloc[0],
                "bars": len(part),
                "return": total,
                "sharpe": sharpe,
                "max_drawdown": float(max_drawdowns(returns)),
                "beats_median_trial": bool(total > float(totals.median())),
                "buy_and_hold_return": float(np.prod(1.0 + period_held) - 1.0)
                if period_held.size
                else np.nan,
                "buy_and_hold_sharpe": float(sharpe_ratios(period_held, periods_per_year))
                if period_held.size
                else np.nan,
                "null_percentile": comparison.percentile if comparison else np.nan,
                "null_p_value": comparison.p_value if comparison else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _total(returns: np.ndarray) -> float:
    return float(np.prod(1.0 + returns) - 1.0) if returns.size else np.nan
