"""Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation (CSCV).

Bailey, Borwein, Lopez de Prado and Zhu (2016), "The probability of backtest overfitting". The rows of a
T x N matrix of per-period returns of N trials (strategies, parameter sets, GA individuals) are cut into S
contiguous blocks. For every way of choosing S/2 blocks as the in-sample set (the rest out of sample), the
trial with the best in-sample performance is "selected", and its out-of-sample rank among all N trials is
turned into a logit ``lambda = ln(w / (1 - w))`` with ``w = rank / (N + 1)`` (rank 1 = worst, N = best).
PBO is the fraction of combinations with ``lambda <= 0``: how often the in-sample winner is no better than
the median out of sample. Pure noise gives about 0.5; genuine, persistent skill gives about 0.

Note the orientation: time runs down the ROWS here, as in the paper, while the metrics module and the
backtest put strategies on rows; pass ``population_returns.T``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from emp_pipeline.domain.metrics import DAILY_PERIODS_PER_YEAR, ZERO_VOLATILITY_TOLERANCE

PerformanceMetric = Callable[[np.ndarray], np.ndarray]
"""Maps a (rows, N) block of per-period returns to one figure per trial (column), higher = better."""

_COMBINATION_CHUNK = 2048


class OverfittingInputError(ValueError):
    """The trial matrix or the CSCV settings cannot give a meaningful PBO; the message says what to change."""


@dataclass(frozen=True, eq=False)
class BacktestOverfitting:
    """CSCV result; the per-combination arrays are in ``itertools.combinations`` order of in-sample blocks.

    ``degradation_slope``/``degradation_intercept`` fit out-of-sample on in-sample performance of the selected
    trial across combinations (a slope near or below 0 means in-sample success does not carry over); NaN if
    the in-sample figures do not vary. Performance figures are in the metric's units (annualised Sharpe by
    default).
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int
    n_blocks: int
    n_trials: int
    selected_trials: np.ndarray
    in_sample_performance: np.ndarray
    out_of_sample_performance: np.ndarray
    degradation_slope: float
    degradation_intercept: float
    probability_out_of_sample_loss: float

    def summary(self) -> dict[str, float | int]:
        """Scalar figures only (for run metadata and the registry)."""
        return {
            "pbo": self.pbo,
            "n_combinations": self.n_combinations,
            "n_blocks": self.n_blocks,
            "n_trials": self.n_trials,
            "median_logit": float(np.median(self.logits)),
            "mean_in_sample_performance": float(self.in_sample_performance.mean()),
            "mean_out_of_sample_performance": float(self.out_of_sample_performance.mean()),
            "degradation_slope": self.degradation_slope,
            "degradation_intercept": self.degradation_intercept,
            "probability_out_of_sample_loss": self.probability_out_of_sample_loss,
        }


def _validated_matrix(performance: object, n_blocks: int) -> np.ndarray:
    try:
        matrix = np.asarray(performance, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise OverfittingInputError(f"performance must be a numeric T x N matrix: {error}") from error
    if matrix.ndim != 2:
        raise OverfittingInputError(
            f"performance must be 2-d (T periods x N trials); got shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        row, column = (int(i) for i in np.argwhere(~np.isfinite(matrix))[0])
        raise OverfittingInputError(
            f"performance has a NaN or infinite value at period {row}, trial {column}; "
            "fill or drop it upstream (a trial with no position earns 0.0, not NaN)"
        )
    n_periods, n_trials = matrix.shape
    if n_trials < 2:
        raise OverfittingInputError(f"PBO ranks trials against each other: need at least 2, got {n_trials}")
    if n_blocks < 2 or n_blocks % 2:
        raise OverfittingInputError(f"n_blocks must be an even number >= 2; got {n_blocks}")
    if n_periods < 2 * n_blocks:
        raise OverfittingInputError(
            f"{n_periods} periods cannot make {n_blocks} blocks of at least 2 periods each; "
            "use fewer blocks or a longer history"
        )
    return matrix


def _sharpe_from_sums(
    sums: np.ndarray, squares: np.ndarray, counts: np.ndarray, offset: np.ndarray, periods_per_year: float
) -> np.ndarray:
    """Sharpe ratios (combinations, trials) from sums of centred returns; ``offset`` is the centring mean."""
    n = counts[:, None]
    centred_mean = sums / n
    variance = np.maximum(squares - n * centred_mean**2, 0.0) / (n - 1)
    std = np.sqrt(variance)
    mean = centred_mean + offset
    defined = std > ZERO_VOLATILITY_TOLERANCE * np.maximum(1.0, np.abs(mean))
    sharpe = np.zeros_like(mean)
    np.divide(mean, std, out=sharpe, where=defined)
    return sharpe * math.sqrt(periods_per_year)


def _logits(oos: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Logit of the selected trial's out-of-sample relative rank; ties share their mid-rank."""
    chosen = oos[np.arange(oos.shape[0]), selected][:, None]
    below = np.count_nonzero(oos < chosen, axis=1)
    tied = np.count_nonzero(oos == chosen, axis=1)
    rank = below + (tied + 1) / 2.0
    relative = rank / (oos.shape[1] + 1)
    return np.log(relative / (1.0 - relative))


def probability_of_backtest_overfitting(
    performance: object,
    n_blocks: int = 16,
    metric: PerformanceMetric | None = None,
    periods_per_year: float = DAILY_PERIODS_PER_YEAR,
) -> BacktestOverfitting:
    """PBO of selecting the best of N trials, from a T x N matrix of per-period returns (time on rows).

    Blocks are contiguous and as equal as possible (sizes differ by at most one period: no period is
    dropped). The default metric is the annualised Sharpe ratio with the metrics module's conventions
    (0.0 on zero volatility), computed for all C(S, S/2) combinations at once from per-block sums, so
    N=200, T=2,500, S=16 (12,870 combinations) takes a second or two. A custom ``metric`` is called twice
    per combination on the concatenated rows: slower, but anything goes. The first best trial wins ties.
    """
    matrix = _validated_matrix(performance, n_blocks)
    if not (periods_per_year > 0 and math.isfinite(periods_per_year)):
        raise OverfittingInputError(f"periods_per_year must be a positive number; got {periods_per_year!r}")
    n_periods, n_trials = matrix.shape
    blocks = np.array_split(np.arange(n_periods), n_blocks)
    in_sample_sets = np.array(list(combinations(range(n_blocks), n_blocks // 2)), dtype=np.intp)
    membership = np.zeros((len(in_sample_sets), n_blocks))
    np.put_along_axis(membership, in_sample_sets, 1.0, axis=1)

    if metric is None:
        in_sample, out_of_sample = _sharpe_performance(matrix, blocks, membership, periods_per_year)
    else:
        in_sample, out_of_sample = _metric_performance(matrix, blocks, membership, metric)

    selected = np.argmax(in_sample, axis=1)
    logits = _logits(out_of_sample, selected)
    rows = np.arange(len(selected))
    selected_is = in_sample[rows, selected]
    selected_oos = out_of_sample[rows, selected]
    if np.ptp(selected_is) > 0:
        slope, intercept = np.polyfit(selected_is, selected_oos, 1)
    else:
        slope, intercept = math.nan, math.nan
    return BacktestOverfitting(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_combinations=len(selected),
        n_blocks=n_blocks,
        n_trials=n_trials,
        selected_trials=selected,
        in_sample_performance=selected_is,
        out_of_sample_performance=selected_oos,
        degradation_slope=float(slope),
        degradation_intercept=float(intercept),
        probability_out_of_sample_loss=float(np.mean(selected_oos < 0.0)),
    )


def _sharpe_performance(
    matrix: np.ndarray, blocks: list[np.ndarray], membership: np.ndarray, periods_per_year: float
) -> tuple[np.ndarray, np.ndarray]:
    """In- and out-of-sample Sharpe ratios (combinations, trials) from per-block sufficient statistics.

    Returns are centred per trial first, so the sum-of-squares variance does not lose precision to a mean
    that is large against the spread.
    """
    offset = matrix.mean(axis=0)
    centred = matrix - offset
    block_sums = np.stack([centred[rows].sum(axis=0) for rows in blocks])
    block_squares = np.stack([(centred[rows] ** 2).sum(axis=0) for rows in blocks])
    block_counts = np.array([len(rows) for rows in blocks], dtype=np.float64)
    total_sums, total_squares = block_sums.sum(axis=0), block_squares.sum(axis=0)
    total_count = float(matrix.shape[0])
    in_sample = np.empty((membership.shape[0], matrix.shape[1]))
    out_of_sample = np.empty_like(in_sample)
    for start in range(0, membership.shape[0], _COMBINATION_CHUNK):
        chunk = membership[start : start + _COMBINATION_CHUNK]
        sums, squares, counts = chunk @ block_sums, chunk @ block_squares, chunk @ block_counts
        window = slice(start, start + len(chunk))
        in_sample[window] = _sharpe_from_sums(sums, squares, counts, offset, periods_per_year)
        out_of_sample[window] = _sharpe_from_sums(
            total_sums - sums, total_squares - squares, total_count - counts, offset, periods_per_year
        )
    return in_sample, out_of_sample


def _metric_performance(
    matrix: np.ndarray, blocks: list[np.ndarray], membership: np.ndarray, metric: PerformanceMetric
) -> tuple[np.ndarray, np.ndarray]:
    in_sample = np.empty((membership.shape[0], matrix.shape[1]))
    out_of_sample = np.empty_like(in_sample)
    for index, members in enumerate(membership.astype(bool)):
        in_rows = np.concatenate([rows for rows, member in zip(blocks, members, strict=True) if member])
        out_rows = np.concatenate([rows for rows, member in zip(blocks, members, strict=True) if not member])
        in_sample[index] = _metric_values(metric, matrix[in_rows], matrix.shape[1])
        out_of_sample[index] = _metric_values(metric, matrix[out_rows], matrix.shape[1])
    return in_sample, out_of_sample


def _metric_values(metric: PerformanceMetric, rows: np.ndarray, n_trials: int) -> np.ndarray:
    values = np.asarray(metric(rows), dtype=np.float64)
    if values.shape != (n_trials,) or not np.isfinite(values).all():
        raise OverfittingInputError(
            f"the performance metric must return {n_trials} finite values (one per trial); "
            f"got shape {values.shape}"
        )
    return values
