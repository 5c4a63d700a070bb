"""The promotion gates of this package, as the Dagster checks and the `emp` commands run them.

Both gates read what the pipeline stored: the bars in the lake (``market_bars``) and the instruments and
strategies in the registry. They look at the last ``window_bars`` bars, with ``history_bars`` before them for
the features' warm-up and the signal state. The feature computation is named by an import path
(``module:factory``, the factory taking the instruments and returning ``bars -> features``) so an operator or
a test can put any implementation under the gates; empty means the project's `SensoryCortex`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Genome, genome_from_dict
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.lookahead import FeatureFunction, LookaheadReport, RegimeFunction, analyse_lookahead
from emp_pipeline.domain.regimes import RegimeConfig, make_classifier
from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.live.engine import BARS_DATASET
from emp_pipeline.parity.replay import ParityConfig, ParityReport, run_parity
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.research import get_strategy
from emp_pipeline.storage.parquet_frames import DatedFrameStore


class GateInputError(ValueError):
    """The lake or the registry lacks what the gates need; the message says what to materialise."""


@dataclass(frozen=True)
class GateSettings:
    window_bars: int = 252
    history_bars: int = 300
    lookahead_cuts: int = 8
    parity_audits: int = 8
    seed: int = 0
    feature_function: str = ""
    regime_kind: str = "rules"
    capital: float = 100_000.0
    fee_bps: float = 1.0
    slippage_bps: float = 1.0


@dataclass(frozen=True)
class GateData:
    bars: pd.DataFrame
    instruments: tuple[InstrumentMeta, ...]
    start: pd.Timestamp
    end: pd.Timestamp


def load_feature_function(path: str, instruments: Sequence[InstrumentMeta]) -> FeatureFunction:
    """``module:factory`` -> factory(instruments); empty -> SensoryCortex(instruments).compute."""
    if not path:
        return SensoryCortex(instruments).compute
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise GateInputError(f"feature function {path!r} must look like 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise GateInputError(f"feature function {path!r} cannot be imported: {error}") from error
    return factory(instruments)


def load_gate_data(data_dir: Path | str, engine: Engine, settings: GateSettings) -> GateData:
    """The last ``window_bars`` stored bars (plus history) of the symbols the registry has metadata for."""
    bars = DatedFrameStore(data_dir, BARS_DATASET).read_window()
    if bars.empty or "symbol" not in bars.columns:
        raise GateInputError(f"no market_bars under {data_dir}: materialise market_bars before promoting")
    with session_scope(engine) as session:
        instruments = tuple(load_instruments(session))
    known = {meta.symbol for meta in instruments}
    bars = bars.loc[bars["symbol"].isin(known)].reset_index(drop=True)
    if bars.empty:
        raise GateInputError(
            "no stored bars belong to a registered instrument: materialise instrument_universe"
        )
    dates = pd.DatetimeIndex(sorted(bars["date"].unique()))
    window = dates[-settings.window_bars :]
    first = dates[max(0, len(dates) - settings.window_bars - settings.history_bars)]
    bars = bars.loc[bars["date"] >= first].reset_index(drop=True)
    used = set(bars["symbol"])
    return GateData(
        bars=bars,
        instruments=tuple(meta for meta in instruments if meta.symbol in used),
        start=window[0],
        end=window[-1] + pd.Timedelta(days=1),
    )


def strategy_genome(engine: Engine, strategy_id: str) -> Genome:
    with session_scope(engine) as session:
        return genome_from_dict(get_strategy(session, strategy_id).genome)


def _regimes(kind: str) -> RegimeFunction:
    def compute(bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        return make_classifier(RegimeConfig(kind=kind)).fit(bars, features).classify(bars, features)

    return compute


def lookahead_gate(genome: Genome, data: GateData, settings: GateSettings) -> LookaheadReport:
    return analyse_lookahead(
        genome,
        data.bars,
        load_feature_function(settings.feature_function, data.instruments),
        _regimes(settings.regime_kind),
        n_cuts=settings.lookahead_cuts,
        seed=settings.seed,
        start=data.start,
        end=data.end,
    )


def parity_gate(
    genome: Genome, data: GateData, settings: GateSettings, limits: RiskLimits | None = None
) -> ParityReport:
    config = ParityConfig(
        costs=Costs(fee_bps=settings.fee_bps, slippage_bps=settings.slippage_bps),
        capital=settings.capital,
        limits=limits or RiskLimits(),
        audit=settings.parity_audits,
        seed=settings.seed,
    )
    return run_parity(
        genome,
        data.bars,
        data.instruments,
        data.start,
        data.end,
        load_feature_function(settings.feature_function, data.instruments),
        _regimes(settings.regime_kind),
        config=config,
    )
