"""Random feature panels for the rule tests: rounded values (so comparisons tie), holes, unusable bars and
unknown regimes, everything the compiled rule evaluator must handle."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emp_pipeline.domain.genome import FeaturePanel
from emp_pipeline.domain.regimes import REGIME_LABELS


def random_feature_panel(
    names: tuple[str, ...], n_bars: int, n_instruments: int, seed: int, start: str
) -> FeaturePanel:
    """Daily bars from `start`; 5% of values NaN, 10% of bars unusable, regime codes -1 (unknown) and up."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(len(names), n_bars, n_instruments)).round(1)
    values[rng.random(values.shape) < 0.05] = np.nan
    return FeaturePanel(
        dates=pd.date_range(start, periods=n_bars, freq="D", tz="UTC"),
        symbols=tuple(f"S{i}" for i in range(n_instruments)),
        names=names,
        values=values,
        usable=rng.random((n_bars, n_instruments)) > 0.1,
        regime_codes=rng.integers(-1, len(REGIME_LABELS), size=(n_bars, n_instruments)).astype(np.int8),
    )
