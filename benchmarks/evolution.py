"""How long the genetic algorithm takes: 50 generations x 200 strategies on the bundled sample universe.

The sample universe (S&P 500, NASDAQ Composite, GOOG; real daily bars shipped with the package) over the
indices' full history 1999-2018, features with the bundled macro series, rule-based regimes. The timed part
is ``evolve`` alone: genome signals, the population backtest and fitness for every generation. Preparation
(reading bars, features, regimes) is reported separately. The kernel comes from numba's cache after the
first run on a machine (a first-ever run adds its ~4 s compilation, see backtest_throughput's cold_start_s).

Run: /work/venv/bin/python benchmarks/evolution.py [--generations 50] [--population 200] [--seed 0]
The machine is shared: the figure is an upper bound.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from emp_pipeline.data.sample import SampleSource, load_sample_macro_frame
from emp_pipeline.domain.backtest import market_arrays
from emp_pipeline.domain.evolution import EvolutionConfig, evolve
from emp_pipeline.domain.genome import feature_panel, genome_to_json
from emp_pipeline.domain.instruments import load_universe
from emp_pipeline.domain.regimes import make_classifier
from emp_pipeline.domain.sensory import SensoryCortex

UNIVERSE = Path(__file__).resolve().parent.parent / "emp_pipeline" / "data" / "universes" / "sample.yaml"
START, END = "1999-01-01", "2018-12-31"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    universe = load_universe(UNIVERSE)
    bars = SampleSource().fetch(universe.symbols, START, END)
    features = SensoryCortex(universe.instruments).compute(bars, macro=load_sample_macro_frame())
    regimes = make_classifier().classify(bars, features)
    panel = feature_panel(features, regimes)
    market = market_arrays(bars, features, dates=panel.dates, symbols=panel.symbols)
    prepare_seconds = time.perf_counter() - start
    print(
        f"universe={universe.name} symbols={','.join(panel.symbols)} bars={len(panel.dates)} "
        f"features={len(panel.names)} {panel.dates[0].date()}..{panel.dates[-1].date()}"
    )

    config = EvolutionConfig(population_size=args.population, generations=args.generations)
    start = time.perf_counter()
    result = evolve(panel, market, config, seed=args.seed)
    evolution_seconds = time.perf_counter() - start
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
    print(f"evaluated_strategy_bars_per_s={strategy_bars / evolution_seconds:.0f}")
    print(f"best_fitness={best.fitness:.4f}")
    print(f"best_sharpe={best.metrics['sharpe']:.4f}")
    print(f"final_unique_strategies={len({r.strategy_id for r in result.final_population})}")
    print(f"mean_final_fitness={np.mean([r.fitness for r in result.final_population]):.4f}")


if __name__ == "__main__":
    main()
