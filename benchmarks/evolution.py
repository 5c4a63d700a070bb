"""How long the genetic algorithm takes: 50 generations x 200 strategies on the bundled sample universe,
and how long one period's null model (1,000 random genomes) takes.

The sample universe (S&P 500, NASDAQ Composite, GOOG; real daily bars shipped with the package) over the
indices' full history 1999-2018, features with the bundled macro series, rule-based regimes. The timed part
is ``evolve`` alone: genome signals, the population backtest and fitness for every generation. Preparation
(reading bars, features, regimes) is reported separately. ``null_model_s`` times ``period_baselines`` for the
last month of the history (gene pool from the 756 training bars before it, 1,000 random genomes, buy-and-hold
and the SPA test of the final population against it). ``evolution_cpu_s`` is the process CPU time of the
evolution (steadier than wall time on a shared machine). The kernel comes from numba's cache after the
first run on a machine (a first-ever run adds its ~4 s compilation, see backtest_throughput's cold_start_s).

Run: .venv/bin/python benchmarks/evolution.py [--generations 50] [--population 200] [--seed 0]
The machine is shared: the figure is an upper bound.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from sample_grid import sample_grid

from emp_pipeline.domain.baselines import NULL_GENOMES, backtest_genomes, period_baselines
from emp_pipeline.domain.evolution import EvolutionConfig, evolve
from emp_pipeline.domain.genome import genome_to_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    universe, panel, market = sample_grid()
    prepare_seconds = time.perf_counter() - start
    print(
        f"universe={universe} symbols={','.join(panel.symbols)} bars={len(panel.dates)} "
        f"features={len(panel.names)} {panel.dates[0].date()}..{panel.dates[-1].date()}"
    )

    config = EvolutionConfig(population_size=args.population, generations=args.generations)
    gc.collect()  # each timed part starts with no garbage: a full collection left over is not its cost
    start, cpu_start = time.perf_counter(), time.process_time()
    result = evolve(panel, market, config, seed=args.seed)
    evolution_seconds = time.perf_counter() - start
    evolution_cpu_seconds = time.process_time() - cpu_start

    dates = panel.dates
    test_start = dates[dates >= dates[-1].replace(day=1)][0]
    first_test = int(dates.searchsorted(test_start))
    training = panel.window(dates[first_test - 5 - 756], dates[first_test - 5])
    test_panel, test_market = panel.window(test_start, None), market.window(test_start, None)
    genomes = [record.genome for record in result.final_population]
    gc.collect()
    start = time.perf_counter()
    candidates = backtest_genomes(genomes, test_panel, test_market, config.costs)
    baselines = period_baselines(
        training, test_panel, test_market, candidates.returns, config, seed=args.seed, n_null=NULL_GENOMES
    )
    null_seconds = time.perf_counter() - start
    strategy_bars = len(result.records) * len(panel.dates) * len(panel.symbols)

    best = result.best
    print(f"best strategy {best.strategy_id}: {genome_to_json(best.genome)}")
    print(f"best metrics: { {name: round(value, 4) for name, value in best.metrics.items()} }")
    for summary in result.history[:: max(1, len(result.history) // 10)]:
        print(
            f"generation {summary.generation:3d}: best {summary.best_fitness:+.3f} "
            f"mean {summary.mean_fitness:+.3f} niches {summary.niches}"
        )
    print(f"prepare_s={prepare_seconds:.2f}")
    print(f"generations={args.generations}")
    print(f"population={args.population}")
    print(f"strategies_evaluated={len(result.records)}")
    print(f"evolution_s={evolution_seconds:.2f}")
    print(f"evolution_cpu_s={evolution_cpu_seconds:.2f}")
    print(f"evaluated_strategy_bars_per_s={strategy_bars / evolution_seconds:.0f}")
    print(f"best_fitness={best.fitness:.4f}")
    print(f"best_sharpe={best.metrics['sharpe']:.4f}")
    print(f"final_unique_strategies={len({r.strategy_id for r in result.final_population})}")
    print(f"mean_final_fitness={np.mean([r.fitness for r in result.final_population]):.4f}")
    print(f"null_genomes={baselines.null_returns.shape[0]}")
    print(f"null_period={test_start.date()}..{dates[-1].date()}")
    print(f"spa_p_value={baselines.spa.consistent if baselines.spa is not None else float('nan'):.3f}")
    print(f"null_model_s={null_seconds:.2f}")


if __name__ == "__main__":
    main()
