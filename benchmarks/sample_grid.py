"""The research benchmarks' common input: the bundled sample universe on one date x symbol grid.

S&P 500, NASDAQ Composite and GOOG (real daily bars shipped with the package) over 1999-2018, features with
the bundled macro series, rule-based regimes, as the pipeline computes them. Imported by the benchmark
scripts beside it (run them from the repository root: python benchmarks/<script>.py).
"""

from __future__ import annotations

from pathlib import Path

from emp_pipeline.data.sample import SampleSource, load_sample_macro_frame
from emp_pipeline.domain.backtest import MarketArrays, market_arrays
from emp_pipeline.domain.genome import FeaturePanel, feature_panel
from emp_pipeline.domain.instruments import load_universe
from emp_pipeline.domain.regimes import make_classifier
from emp_pipeline.domain.sensory import SensoryCortex

UNIVERSE = Path(__file__).resolve().parent.parent / "emp_pipeline" / "data" / "universes" / "sample.yaml"
START, END = "1999-01-01", "2018-12-31"


def sample_grid() -> tuple[str, FeaturePanel, MarketArrays]:
    """(universe name, feature panel, market arrays) of the sample universe, aligned row for row."""
    universe = load_universe(UNIVERSE)
    bars = SampleSource().fetch(universe.symbols, START, END)
    features = SensoryCortex(universe.instruments).compute(bars, macro=load_sample_macro_frame())
    regimes = make_classifier().classify(bars, features)
    panel = feature_panel(features, regimes)
    return universe.name, panel, market_arrays(bars, features, dates=panel.dates, symbols=panel.symbols)
