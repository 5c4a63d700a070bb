"""How long the population metrics and the PBO take at GA scale (200 strategies, 2,500 daily bars).

Run: .venv/bin/python benchmarks/metrics_overfitting.py. Medians of several runs; the machine is shared,
so treat the figures as upper bounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from emp_pipeline.domain.metrics import (
    max_drawdown_durations,
    max_drawdowns,
    population_deflated_sharpe,
    sharpe_ratios,
    sortino_ratios,
)
from emp_pipeline.domain.overfitting import probability_of_backtest_overfitting

N_STRATEGIES, N_BARS, N_BLOCKS, REPEATS = 200, 2500, 16, 5


def median_seconds(task: Callable[[], object]) -> float:
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        task()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    returns = np.random.default_rng(0).normal(0.0, 0.01, size=(N_STRATEGIES, N_BARS))

    def fitness_metrics() -> None:
        sharpe_ratios(returns)
        sortino_ratios(returns)
        max_drawdowns(returns)
        max_drawdown_durations(returns)

    metrics_seconds = median_seconds(fitness_metrics)
    dsr_seconds = median_seconds(lambda: population_deflated_sharpe(returns))
    pbo_seconds = median_seconds(lambda: probability_of_backtest_overfitting(returns.T, n_blocks=N_BLOCKS))
    result = probability_of_backtest_overfitting(returns.T, n_blocks=N_BLOCKS)
    print(f"population={N_STRATEGIES}x{N_BARS} pbo_blocks={N_BLOCKS} repeats={REPEATS}")
    print(f"fitness_metrics_median_ms={metrics_seconds * 1000:.1f}")
    print(f"population_dsr_median_ms={dsr_seconds * 1000:.1f}")
    print(f"pbo_combinations={result.n_combinations}")
    print(f"pbo_median_s={pbo_seconds:.3f}")
    print(f"pbo_pure_noise={result.pbo:.3f}")


if __name__ == "__main__":
    main()
