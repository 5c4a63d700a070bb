"""A small live book for the live-execution tests: a bar/feature/regime store and a registry with a champion.

The frames are made by the real domain code (synthetic bars -> SensoryCortex -> rule regimes) and written
with the same store the assets use, so the live job reads them exactly as it reads production data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes, genome_to_dict
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.regimes import REGIME_LABELS, make_classifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.instruments import store_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.records import NewStrategy
from emp_pipeline.registry.research import record_evolution_run, record_strategies, set_strategy_status
from emp_pipeline.storage.parquet_frames import DatedFrameStore

N_BARS = 290  # the sensory cortex warms up for 252 bars
# Always long once the features are usable: the decision at the anchor bar is an entry.
ALWAYS_LONG = Genome(
    direction="long",
    long_entry=Condition("what_rsi_14", ">", -1.0),
    short_entry=None,
    exit=None,
    regimes=REGIME_LABELS,
    risk=RiskGenes(stop_atr=2.0, take_profit_atr=4.0, position_fraction=0.4, max_holding_bars=100),
)


@dataclass(frozen=True)
class LiveMarket:
    bars: pd.DataFrame
    features: pd.DataFrame
    regimes: pd.DataFrame
    instruments: tuple[InstrumentMeta, ...]

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(sorted(self.bars["date"].unique()))


def make_market(
    symbols: tuple[str, ...] = ("SYN00", "SYN01"), start_price: float = 100.0, volume_step: float = 1.0
) -> LiveMarket:
    market = generate_market(n_instruments=len(symbols), n_bars=N_BARS, seed=7, start_price=start_price)
    rename = dict(zip(sorted(market.bars["symbol"].unique()), symbols, strict=True))
    bars = market.bars.assign(symbol=market.bars["symbol"].map(rename))
    instruments = tuple(
        replace(meta, symbol=rename[meta.symbol], min_volume=volume_step, step_volume=volume_step)
        for meta in market.instruments
    )
    features = SensoryCortex(instruments).compute(bars)
    regimes = make_classifier().fit(bars, features).classify(bars, features)
    return LiveMarket(bars, features, regimes, instruments)


def write_frames(data_dir: Path, market: LiveMarket, until: pd.Timestamp) -> None:
    """Store every row up to and including `until` (what the assets would have materialized by then)."""
    for name, frame in (
        ("market_bars", market.bars),
        ("sensory_features", market.features),
        ("market_regimes", market.regimes),
    ):
        rows = frame.loc[frame["date"] <= until]
        DatedFrameStore(data_dir, name).write_window(rows, rows["date"].min(), until + pd.Timedelta(days=1))


def prepare_registry(
    database_url: str, market: LiveMarket, genome: Genome = ALWAYS_LONG, costs: Costs | None = None
) -> str:
    """Migrate, store the instruments and one active strategy measured with `costs` (default: the default
    Costs); returns the strategy id."""
    upgrade_database(database_url)
    engine = shared_engine(database_url)
    with session_scope(engine) as session:
        store_instruments(session, market.instruments, origin="test market")
        run_id = record_evolution_run(
            session,
            period="2001-01",
            train_start=dt.date(2000, 1, 3),
            train_end=dt.date(2000, 12, 29),
            embargo_days=0,
            seed=1,
            config={"test": True},
            costs=costs or Costs(),
        )
        (strategy_id,) = record_strategies(
            session, run_id, [NewStrategy(genome_to_dict(genome), 1, 0, "seed", 1.0)]
        )
        set_strategy_status(session, strategy_id, "active", reason="test champion")
    return strategy_id
