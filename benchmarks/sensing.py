"""Time the sensory cortex and both regime classifiers on 10 instruments x 20 years of daily bars.

Run on one core: `taskset -c 0 .venv/bin/python benchmarks/sensing.py`. The data is the seeded
synthetic regime-switching market (domain/synthetic.py), so accuracy is measured against the true regimes:
the HMM is fitted on each instrument's first 10 years and both classifiers are scored on the last 10
(out of sample), warm-up rows excluded. Timings are medians of several runs; the first HMM run also pays
numba's compilation (cached on disk afterwards) and is reported separately. The machine may be shared, so
expect some noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from emp_pipeline.domain.regimes import HmmRegimeClassifier, RuleRegimeClassifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import balanced_accuracy, generate_market

N_INSTRUMENTS = 10
YEARS = 20
BARS_PER_YEAR = 252
SEED = 2024
REPEATS = 5


def _median_seconds(action: Callable[[], object], repeats: int) -> tuple[float, object]:
    timings: list[float] = []
    result: object = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


def main() -> None:
    n_bars = YEARS * BARS_PER_YEAR
    market = generate_market(n_instruments=N_INSTRUMENTS, n_bars=n_bars, seed=SEED)
    bars = market.bars
    cortex = SensoryCortex(market.instruments)
    rules = RuleRegimeClassifier()
    position = bars.groupby("symbol").cumcount().to_numpy()
    train_bars = bars.loc[position < n_bars // 2].reset_index(drop=True)
    out_of_sample = position >= n_bars // 2

    def features_and_rules() -> tuple[pd.DataFrame, pd.DataFrame]:
        features = cortex.compute(bars)
        return features, rules.classify(bars, features)

    def hmm_fit_and_classify() -> pd.DataFrame:
        return HmmRegimeClassifier().fit(train_bars).classify(bars)

    features_s, (features, rule_regimes) = _median_seconds(features_and_rules, REPEATS)
    features_only_s, _ = _median_seconds(lambda: cortex.compute(bars), REPEATS)
    first_hmm_s, _ = _median_seconds(hmm_fit_and_classify, 1)
    hmm_s, hmm_regimes = _median_seconds(hmm_fit_and_classify, 3)

    truth = market.true_regimes["regime"].to_numpy()
    scored = out_of_sample & ~rule_regimes["warmup"].to_numpy() & ~hmm_regimes["warmup"].to_numpy()
    rules_accuracy = balanced_accuracy(truth[scored], rule_regimes["regime"].to_numpy()[scored])
    hmm_accuracy = balanced_accuracy(truth[scored], hmm_regimes["regime"].to_numpy()[scored])

    print(
        f"bars: {len(bars)} ({N_INSTRUMENTS} instruments x {n_bars} daily bars), columns: {features.shape[1]}"
    )
    print(f"scored bars (out of sample, past warm-up): {int(scored.sum())}")
    print(f"features only: {features_only_s:.3f} s (median of {REPEATS})")
    print(f"features + rule regimes: {features_s:.3f} s (median of {REPEATS}; target < 2 s)")
    print(f"HMM fit (10 x {n_bars // 2} bars) + filter: {hmm_s:.3f} s (median of 3)")
    print(f"first HMM run incl. any numba compilation: {first_hmm_s:.3f} s")
    print(f"features + rules + HMM: {features_s + hmm_s:.3f} s (target < 10 s)")
    print("rule regimes vs truth:")
    print(
        pd.crosstab(
            pd.Series(truth[scored], name="true"),
            pd.Series(rule_regimes["regime"].to_numpy()[scored], name="rules"),
        )
    )
    print("HMM regimes vs truth:")
    print(
        pd.crosstab(
            pd.Series(truth[scored], name="true"),
            pd.Series(hmm_regimes["regime"].to_numpy()[scored], name="hmm"),
        )
    )
    print(f"features_and_rules_s={features_s:.3f}")
    print(f"hmm_s={hmm_s:.3f}")
    print(f"rules_balanced_accuracy={rules_accuracy:.3f}")
    print(f"hmm_balanced_accuracy={hmm_accuracy:.3f}")
    np.testing.assert_array_equal(features["symbol"].to_numpy(), bars["symbol"].to_numpy())


if __name__ == "__main__":
    main()
