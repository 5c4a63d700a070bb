"""The look-ahead gate on the demo's own data: one strategy, the bundled daily sample (^GSPC, ^IXIC, GOOG on
the NYSE calendar), cut at the gate's 8 seeded points as `champions_free_of_lookahead` and the champions'
promotion do.

The gate recomputes the year-anchored features of every cut, and each computation asks the exchange's
published holiday schedule for the same years again (the calendar-leak fix of issue 13.4 made features read
it); ``lookahead_gate_s`` is the gate's median time and ``scheduled_days_s`` the median time of the
schedule's questions alone (300 ranges of up to two years, as the gate's cuts ask them).

Run: .venv/bin/python benchmarks/lookahead_gate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.domain.anchored_perception import window_features, window_regimes
from emp_pipeline.domain.calendars import scheduled_trading_days
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.instruments import load_universe
from emp_pipeline.domain.lookahead import analyse_lookahead
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.timeframes import EXCHANGE_DAYS_PER_YEAR

UNIVERSE = SAMPLE_DIR.parent / "universes" / "sample.yaml"
GATE_CUTS = 8  # GateSettings.lookahead_cuts
GATE_WINDOW = ("2012-03-01", "2013-03-01")  # the year before the demo's last bar, as the gate reads it
GENOME = Genome(
    direction="both",
    long_entry=Condition("what_rsi_14", "crosses_above", 55.0),
    short_entry=Condition("what_rsi_14", "crosses_below", 45.0),
    exit=None,
    regimes=REGIME_LABELS,
    risk=RiskGenes(stop_atr=2.5, take_profit_atr=5.0, position_fraction=0.2, max_holding_bars=40),
)


def _median_seconds(action: Callable[[], object], repeats: int) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings), result


def main(repeats: int) -> None:
    universe = load_universe(UNIVERSE)
    instruments = list(universe.instruments)
    symbols = [instrument.symbol for instrument in instruments]
    bars = SampleSource().fetch(symbols, "2004-08-19", GATE_WINDOW[1])
    start, end = (pd.Timestamp(day, tz="UTC") for day in GATE_WINDOW)
    features = window_features(SensoryCortex(instruments))
    regimes = window_regimes("rules", StudyWindows(EXCHANGE_DAYS_PER_YEAR))

    def gate() -> object:
        return analyse_lookahead(
            GENOME, bars, features, regimes, n_cuts=GATE_CUTS, seed=0, start=start, end=end
        )

    rng = np.random.default_rng(0)
    ranges = [
        (first, first + pd.Timedelta(days=int(rng.integers(30, 730))))
        for first in pd.Timestamp("2004-01-01") + pd.to_timedelta(rng.integers(0, 3000, 300), unit="D")
    ]

    def schedule() -> int:
        return sum(len(scheduled_trading_days("XNYS", first, last)) for first, last in ranges)

    gate_s, report = _median_seconds(gate, repeats)
    schedule_s, days = _median_seconds(schedule, repeats)
    print(f"bars={len(bars)}")
    print(f"symbols={','.join(symbols)}")
    print(f"lookahead_passed={report.passed}")
    print(f"scheduled_days_total={days}")
    print(f"runs={repeats}")
    print(f"lookahead_gate_s={gate_s:.2f}")
    print(f"scheduled_days_s={schedule_s:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
