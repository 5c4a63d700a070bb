"""Which fitness generalises: the sample walk-forward study run once per fitness, judged out of sample.

The bundled sample universe (S&P 500, NASDAQ Composite, GOOG; daily bars 1999-2018), features with the
bundled macro series, rule-based regimes. For each of the last ``--months`` months: the GA trains on the 756
trading days ending 5 days before the month (seed fixed by the seed and the month, as the pipeline does), the
final population is measured on the month, and so are buy-and-hold and the null model (``--null`` random
genomes from the month's gene pool). The same study runs with every fitness in ``evolution.FITNESSES``:

* ``oos_sharpe_<fitness>``: annualised Sharpe of the honest curve (each month's rank-0 pick, chained);
* ``oos_total_return_<fitness>``: its compounded return;
* ``is_oos_rank_correlation_<fitness>``: Spearman correlation, within a month's final population, between the
  training-fitness ranking and the out-of-sample Sharpe, averaged over the months (0 = the training ranking
  says nothing about the month after);
* ``periods_beating_null_<fitness>``: share of months whose pick's Sharpe has a null p-value <= 0.05;
* ``periods_above_null_median_<fitness>``: share of months whose pick beats the median random genome;
* ``stitched_null_percentile_<fitness>`` / ``stitched_null_p_value_<fitness>``: the honest curve against the
  null genomes chained over the same months;
* ``buy_and_hold_sharpe``: the equal-weight buy-and-hold over the same bars;
* ``best_fitness_by_oos_sharpe``: the fitness with the higher out-of-sample Sharpe of the honest curve.

Run: .venv/bin/python benchmarks/research_fitness.py [--months 24] [--population 200] [--generations 50]
     [--null 1000] [--seed 7] [--max-position-fraction 0.25]
It evolves 2 x months GA runs: minutes on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd
from sample_grid import sample_grid

from emp_pipeline.domain.baselines import NULL_GENOMES, fold_baselines
from emp_pipeline.domain.evolution import FITNESSES, EvolutionConfig, backtest_fold, evolve_fold
from emp_pipeline.domain.metrics import sharpe_ratios
from emp_pipeline.domain.risk import position_fraction_ceiling
from emp_pipeline.domain.walkforward import build_fold, period_keys
from emp_pipeline.domain.walkforward_study import (
    period_comparisons,
    period_frame,
    period_seed,
    selected_curve,
    stitched_baselines,
)
from emp_pipeline.settings import LiveSettings

TRAIN_BARS, EMBARGO_BARS = 756, 5


def run_study(panel, market, months: list[str], config: EvolutionConfig, seed: int, n_null: int) -> dict:
    frames, correlations = [], []
    for month in months:
        fold = build_fold(panel.dates, month, "monthly", train_bars=TRAIN_BARS, embargo_bars=EMBARGO_BARS)
        result = evolve_fold(panel, market, fold, config, period_seed(seed, month))
        genomes = [record.genome for record in result.final_population]
        dates, measured = backtest_fold(genomes, panel, market, fold, config)
        baselines = fold_baselines(
            panel,
            market,
            fold,
            measured.returns,
            config,
            seed=period_seed(seed, f"{month}:null"),
            n_null=n_null,
        )
        ids = [record.strategy_id for record in result.final_population]
        frames.append(period_frame(month, dates, np.arange(len(ids)), ids, measured.returns, baselines))
        out_of_sample = pd.Series(sharpe_ratios(np.nan_to_num(measured.returns), config.periods_per_year))
        training_rank = pd.Series(-np.arange(len(ids), dtype=np.float64))  # rank 0 = best by training
        correlations.append(training_rank.corr(out_of_sample, method="spearman"))
    oos = pd.concat(frames, ignore_index=True)
    curve = selected_curve(oos)
    table = period_comparisons(oos, curve, config.periods_per_year)
    stitched = stitched_baselines(oos, curve, config.periods_per_year)
    returns = curve["return"].to_numpy(dtype=np.float64)
    return {
        "oos_sharpe": float(sharpe_ratios(returns, config.periods_per_year)),
        "oos_total_return": float(np.prod(1.0 + returns) - 1.0),
        "is_oos_rank_correlation": float(np.nanmean(correlations)),
        "periods_beating_null": float((table["null_p_value"] <= 0.05).mean()),
        "periods_above_null_median": float((table["null_percentile"] > 50.0).mean()),
        "stitched_null_percentile": stitched.pick_against_null.percentile if stitched else float("nan"),
        "stitched_null_p_value": stitched.pick_against_null.p_value if stitched else float("nan"),
        "buy_and_hold_sharpe": float(sharpe_ratios(stitched.buy_and_hold, config.periods_per_year))
        if stitched
        else float("nan"),
        "periods_without_trades": int((table["return"] == 0.0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--null", type=int, default=NULL_GENOMES)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--max-position-fraction",
        type=float,
        default=position_fraction_ceiling(LiveSettings().risk_limits()),
        help="the sizing gene's ceiling; default: the pipeline's, from the default live risk limits",
    )
    args = parser.parse_args()

    _, panel, market = sample_grid()
    months = period_keys(panel.dates[0], panel.dates[-1] + pd.Timedelta(days=1))[-args.months :]
    print(f"study: {months[0]}..{months[-1]} ({len(months)} months), {','.join(panel.symbols)}")

    base = EvolutionConfig(
        population_size=args.population,
        generations=args.generations,
        max_position_fraction=args.max_position_fraction,
    )
    results = {}
    for fitness in FITNESSES:
        start = time.perf_counter()
        results[fitness] = run_study(
            panel, market, months, dataclasses.replace(base, fitness=fitness), args.seed, args.null
        )
        print(f"{fitness}: {time.perf_counter() - start:.0f} s")
    print(f"months={len(months)}")
    print(f"population={args.population}")
    print(f"generations={args.generations}")
    print(f"null_genomes={args.null}")
    print(f"max_position_fraction={args.max_position_fraction}")
    for fitness, figures in results.items():
        for name, value in figures.items():
            if name != "buy_and_hold_sharpe":
                print(
                    f"{name}_{fitness}={value:.4f}"
                    if isinstance(value, float)
                    else f"{name}_{fitness}={value}"
                )
    print(f"buy_and_hold_sharpe={results[FITNESSES[0]]['buy_and_hold_sharpe']:.4f}")
    best = max(FITNESSES, key=lambda fitness: results[fitness]["oos_sharpe"])
    print(f"best_fitness_by_oos_sharpe={best}")


if __name__ == "__main__":
    main()
