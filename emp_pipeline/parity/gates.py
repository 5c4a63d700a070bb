"""The promotion gates of this package, as the Dagster checks and the `emp` commands run them.

Both gates read what the pipeline stored: the bars in the lake (``market_bars``) and the instruments and
strategies in the registry. They look at the last ``window_bars`` bars (by default a year of bars of the
universe's timeframe: 252 daily exchange bars, 6,240 FX H1 bars), with ``history_bars`` before them for the
features' warm-up and the signal state (a count of bars: the longest feature look-back is 252 bars on every
timeframe). Features and regimes are computed by the very functions the
perception assets store them with (`domain.anchored_perception`), so the gates judge the pipeline's own
computation. A test puts another feature implementation under the gates through the Python API: the
`features` argument (a factory taking the instruments and returning ``bars -> features``).

The parity gate replays a strategy with the costs it was measured with (its evolution run's, stored with it
in the registry: `stored_strategy`), as the live job trades it, whatever the cost settings say now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from emp_pipeline.domain.anchored_perception import window_features, window_regimes
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
from emp_pipeline.domain.genome import Genome, genome_from_dict
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.lookahead import FeatureFunction, LookaheadReport, analyse_lookahead
from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.timeframes import EXCHANGE_DAYS_PER_YEAR
from emp_pipeline.parity.replay import ParityConfig, ParityReport, run_parity
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.research import get_strategy
from emp_pipeline.storage.datasets import MARKET_BARS


class GateInputError(ValueError):
    """The lake or the registry lacks what the gates need; the message says what to materialise."""


GATE_WINDOW_YEARS = 1  # the span the gates judge when no window is given


@dataclass(frozen=True)
class GateSettings:
    window_bars: int | None = None  # None: GATE_WINDOW_YEARS of bars of the timeframe (`window`)
    history_bars: int = 300
    lookahead_cuts: int = 8
    parity_audits: int = 8
    seed: int = 0
    regime_kind: str = "rules"
    # The universe's bars per year: the regimes the gates recompute use the asset's windows (study_windows).
    periods_per_year: int = EXCHANGE_DAYS_PER_YEAR
    capital: float = DEFAULT_CAPITAL  # account currency behind 1.0 of the strategy's kernel equity

    @property
    def window(self) -> int:
        """The bars judged: ``window_bars``, or a span of time in bars of the timeframe (study_windows)."""
        if self.window_bars is not None:
            return self.window_bars
        return StudyWindows(self.periods_per_year).bars_in_years(GATE_WINDOW_YEARS)


@dataclass(frozen=True)
class GateData:
    bars: pd.DataFrame
    instruments: tuple[InstrumentMeta, ...]
    start: pd.Timestamp
    end: pd.Timestamp


FeatureFactory = Callable[[Sequence[InstrumentMeta]], FeatureFunction]


def sensory_features(instruments: Sequence[InstrumentMeta]) -> FeatureFunction:
    """The sensory cortex's features, computed as the sensory_features asset computes them."""
    return window_features(SensoryCortex(instruments))


def load_gate_data(data_dir: Path | str, engine: Engine, settings: GateSettings) -> GateData:
    """The newest ``settings.window`` stored bars (and history) of the symbols the registry knows."""
    bars = MARKET_BARS.read(data_dir)
    if bars.empty or "symbol" not in bars.columns:
        raise GateInputError(
            f"no {MARKET_BARS.name} under {data_dir}: materialise {MARKET_BARS.name} before promoting"
        )
    with session_scope(engine) as session:
        instruments = tuple(load_instruments(session))
    known = {meta.symbol for meta in instruments}
    bars = bars.loc[bars["symbol"].isin(known)].reset_index(drop=True)
    if bars.empty:
        raise GateInputError(
            "no stored bars belong to a registered instrument: materialise instrument_universe"
        )
    dates = pd.DatetimeIndex(sorted(bars["date"].unique()))
    window = dates[-settings.window :]
    first = dates[max(0, len(dates) - settings.window - settings.history_bars)]
    bars = bars.loc[bars["date"] >= first].reset_index(drop=True)
    used = set(bars["symbol"])
    return GateData(
        bars=bars,
        instruments=tuple(meta for meta in instruments if meta.symbol in used),
        start=window[0],
        end=window[-1] + pd.Timedelta(days=1),
    )


@dataclass(frozen=True)
class GatedStrategy:
    """A stored strategy as the gates judge it: its genome and the costs it was measured with."""

    genome: Genome
    costs: Costs


def stored_strategy(engine: Engine, strategy_id: str) -> GatedStrategy:
    with session_scope(engine) as session:
        record = get_strategy(session, strategy_id)
    return GatedStrategy(genome_from_dict(record.genome), record.costs)


def lookahead_gate(
    genome: Genome, data: GateData, settings: GateSettings, features: FeatureFactory = sensory_features
) -> LookaheadReport:
    return analyse_lookahead(
        genome,
        data.bars,
        features(data.instruments),
        window_regimes(settings.regime_kind, StudyWindows(settings.periods_per_year)),
        n_cuts=settings.lookahead_cuts,
        seed=settings.seed,
        start=data.start,
        end=data.end,
    )


def parity_gate(
    strategy: GatedStrategy,
    data: GateData,
    settings: GateSettings,
    limits: RiskLimits | None = None,
    features: FeatureFactory = sensory_features,
) -> ParityReport:
    config = ParityConfig(
        costs=strategy.costs,
        capital=settings.capital,
        limits=limits or RiskLimits(),
        audit=settings.parity_audits,
        seed=settings.seed,
    )
    return run_parity(
        strategy.genome,
        data.bars,
        data.instruments,
        data.start,
        data.end,
        features(data.instruments),
        window_regimes(settings.regime_kind, StudyWindows(settings.periods_per_year)),
        config=config,
    )
