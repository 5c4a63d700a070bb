"""Parity replay speed: one strategy, 10 instruments x 5 years of daily bars, stepped bar by bar.

The replay writes the bars, features and regimes into a Parquet lake and reads them back once, runs the live
path on every bar (signal, sleeves, targets, risk, paper fills and resting stops in a SQLite registry),
audits 8 bars point in time, and cross-checks the engine's `decide_orders` at the last bar. It must stay
under 60 s so it can run at every promotion. The instruments get a fine volume grid so the live quantities
equal the kernel's units. One strategy on one instrument for one bar is a strategy-bar;
``strategy_bars_per_s`` is the window's strategy-bars over the replay's median time (issue 12 asks for
about 2,200/s: a year of H1 bars on 10 symbols, ~62,000 strategy-bars, in under 30 s).

``--window-bars 6200`` replays that many bars instead (a year of H1 bars in count; the synthetic market's
bars are daily-spaced, which the replay does not depend on).

Run: .venv/bin/python benchmarks/parity.py [--repeats 3] [--window-bars 1260]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence

import pandas as pd

from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.lookahead import FeatureFunction, RegimeFunction, default_regimes
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.parity.replay import ParityConfig, run_parity
from emp_pipeline.parity.report import ParityReport

N_INSTRUMENTS = 10
WINDOW_BARS = 1260  # five years of daily bars
WARMUP_BARS = 300  # history before the window: the features' look-back


# RSI crossings, long and short, protective exits: a strategy that trades often enough to exercise fills.
PARITY_GENOME = Genome(
    direction="both",
    long_entry=Condition("what_rsi_14", "crosses_above", 55.0),
    short_entry=Condition("what_rsi_14", "crosses_below", 45.0),
    exit=None,
    regimes=REGIME_LABELS,
    risk=RiskGenes(stop_atr=2.5, take_profit_atr=5.0, position_fraction=0.5, max_holding_bars=40),
)


def replay_parity(
    bars: pd.DataFrame,
    instruments: Sequence[InstrumentMeta],
    start: pd.Timestamp,
    end: pd.Timestamp,
    compute_features: FeatureFunction,
    compute_regimes: RegimeFunction,
    repeats: int,
) -> tuple[float, ParityReport]:
    """Median seconds of `repeats` replays of PARITY_GENOME over [start, end), and the last report.

    The instruments get a fine volume grid: live quantities are the kernel's units, so the whole replay can
    be identical."""
    fine = [dataclasses.replace(m, step_volume=1e-10, min_volume=1e-10) for m in instruments]
    timings = []
    report = None
    for _ in range(repeats):
        began = time.perf_counter()
        report = run_parity(
            PARITY_GENOME, bars, fine, start, end, compute_features, compute_regimes, ParityConfig()
        )
        timings.append(time.perf_counter() - began)
    assert report is not None
    return statistics.median(timings), report


def main(repeats: int, window_bars: int) -> None:
    market = generate_market(n_instruments=N_INSTRUMENTS, n_bars=window_bars + WARMUP_BARS, seed=21)
    dates = pd.DatetimeIndex(sorted(market.bars["date"].unique()))
    start, end = dates[WARMUP_BARS], dates[-1] + pd.Timedelta(days=1)
    cortex = SensoryCortex(market.instruments)
    seconds, report = replay_parity(
        market.bars, market.instruments, start, end, cortex.compute, default_regimes, repeats
    )
    print(report.describe())
    print(f"bars={report.n_bars}")
    print(f"instruments={len(report.symbols)}")
    print(f"backtest_trades={len(report.backtest_trades)}")
    print(f"decision_parity={report.decision_passed}")
    print(f"parity_passed={report.passed}")
    print(f"runs={repeats}")
    print(f"parity_replay_s={seconds:.1f}")
    print(f"strategy_bars_per_s={report.n_bars * len(report.symbols) / seconds:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--window-bars", type=int, default=WINDOW_BARS)
    args = parser.parse_args()
    main(args.repeats, args.window_bars)
