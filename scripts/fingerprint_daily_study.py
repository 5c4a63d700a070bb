"""Fingerprints of the daily sample study: run it before and after a change that must keep daily results
bit-identical, and compare the printed lines (one ``name=value`` per line).

It runs the same functions the assets run, on the bundled daily sample: features of 2007-2008 computed year
by year, rule and HMM regimes of 2009, one walk-forward period (2010-01) evolved with the demo's GA, its
out-of-sample backtest, null model and registry metrics. Each frame is hashed bit for bit (values, columns
and dtypes), so any change of a float's last bit changes its line.

    .venv/bin/python scripts/fingerprint_daily_study.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd

from emp_pipeline.data.sample import SampleSource, load_sample_macro_frame
from emp_pipeline.defs.research.strategies import walk_forward_grid
from emp_pipeline.domain.anchored_perception import classify_by_year, compute_features_by_year
from emp_pipeline.domain.baselines import period_baselines
from emp_pipeline.domain.evolution import EvolutionConfig, backtest_fold, evolve_fold
from emp_pipeline.domain.genome import genome_to_json
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.walkforward_study import out_of_sample_metrics, period_seed, search_trials
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, load_universe

PERIOD = "2010-01"
SEED = 7
NULL_GENOMES = 50


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's values (bit for bit), column names and dtypes; the index is ignored."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def array_digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()[:16]


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def main() -> None:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    bars = SampleSource().fetch(universe.symbols, universe.start_date, universe.end_date)
    cortex = SensoryCortex(universe.instruments)
    windows = StudyWindows.for_universe(universe.timeframe, universe.calendars.values())
    macro = load_sample_macro_frame()

    features = compute_features_by_year(cortex, bars, macro, utc("2004-01-01"), utc("2011-01-01"))
    in_2007_2008 = features["date"].between(utc("2007-01-01"), utc("2008-12-31"))
    print(f"features_2007_2008={frame_digest(features.loc[in_2007_2008])}")
    print(f"features_rows={len(features)}")
    for kind in ("rules", "hmm"):
        regimes = classify_by_year(
            kind, bars, features, utc("2009-01-01"), utc("2010-01-01"), windows=windows
        )
        print(f"regimes_{kind}_2009={frame_digest(regimes)}")
    regimes = classify_by_year("rules", bars, features, utc("2005-01-01"), utc("2011-01-01"), windows=windows)
    print(f"regimes_rules_2005_2010={frame_digest(regimes)}")

    panel, market, fold = walk_forward_grid(
        bars, features, regimes, PERIOD, windows, {meta.symbol: meta for meta in universe.instruments}
    )
    print(f"fold={fold.train_start.date()}..{fold.train_end.date()}:{fold.n_train_bars}+{fold.embargo_bars}")
    config = EvolutionConfig(
        population_size=40, generations=8, periods_per_year=float(windows.periods_per_year)
    ).validate()
    print(
        f"evolution_config={text_digest(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))}"
    )
    result = evolve_fold(panel, market, fold, config, period_seed(SEED, PERIOD))
    genomes = [record.genome for record in result.final_population]
    print(f"genomes={text_digest('|'.join(genome_to_json(genome) for genome in genomes))}")
    print(f"fitness={array_digest(np.array([record.fitness for record in result.final_population]))}")
    trials = search_trials(result, config.periods_per_year)
    print(f"search_trials={trials.count}:{trials.sharpe_variance!r}")

    dates, oos = backtest_fold(genomes, panel, market, fold, config)
    print(f"oos_returns={array_digest(oos.returns)}:{len(dates)}")
    baselines = period_baselines(
        panel.window(fold.train_start, fold.train_end),
        panel.window(fold.test_start, fold.test_end),
        market.window(fold.test_start, fold.test_end),
        oos.returns,
        config,
        seed=period_seed(SEED, f"{PERIOD}:null"),
        n_null=NULL_GENOMES,
    )
    print(f"null_sharpes={array_digest(baselines.null_sharpes)}")
    metrics = out_of_sample_metrics(oos, trials, config.periods_per_year)
    # The costs paid (fee_cost, spread_cost, swap_cost) print on their own line, so oos_metrics stays
    # comparable with fingerprints taken before the kernel reported them.
    costs = [{name: row.pop(name) for name in ("fee_cost", "spread_cost", "swap_cost")} for row in metrics]
    print(f"oos_metrics={text_digest(json.dumps(metrics, sort_keys=True))}")
    print(f"oos_costs={text_digest(json.dumps(costs, sort_keys=True))}")
    print(f"oos_best_sharpe={metrics[0]['sharpe']!r}")


if __name__ == "__main__":
    main()
