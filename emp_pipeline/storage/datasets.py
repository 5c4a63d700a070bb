"""Every dataset of the lake, named once, and the one way each is read and written.

A dataset is a folder of dated Parquet files under the lake directory (EMP_DATA_DIR), kept by a
`DatedFrameStore`. The asset datasets share their name with the Dagster asset that materialises them, so the
IO manager, the assets and their checks, the live job, the parity replay and the promotion gates all reach
the same files through the constants below. The live journal's datasets are kept per account (`part`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emp_pipeline.storage.parquet_frames import DatedFrameStore

QUARANTINE_DIR = "_quarantine"  # frames a blocking check refused: <lake>/_quarantine/<dataset>/<run id>/


class UnknownDatasetError(KeyError):
    """A name that is no dataset of the lake; the message lists the ones there are."""


@dataclass(frozen=True)
class Dataset:
    """One dataset: its name is its folder under the lake and, for an asset's output, the asset's key."""

    name: str
    description: str

    def store(self, lake_dir: Path | str, part: str | None = None) -> DatedFrameStore:
        """The store of the dataset, or of one part of it (e.g. ``account_3`` of a live journal)."""
        return DatedFrameStore(lake_dir, self.name if part is None else f"{self.name}/{part}")

    def read(
        self,
        lake_dir: Path | str,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
    ) -> pd.DataFrame:
        """Rows dated in [start, end) (either side open when None); an empty frame when nothing is stored."""
        return self.store(lake_dir).read_window(start, end)

    def quarantine_store(self, lake_dir: Path | str, run_id: str) -> DatedFrameStore:
        """Where a run's frame goes when a blocking check refuses it; nothing downstream reads it."""
        return DatedFrameStore(Path(lake_dir) / QUARANTINE_DIR / self.name, run_id)


MARKET_BARS = Dataset("market_bars", "validated OHLCV bars per symbol and bar (canonical bar frame)")
SENSORY_FEATURES = Dataset("sensory_features", "the five-dimension causal features per symbol and bar")
MARKET_REGIMES = Dataset("market_regimes", "causal regime label and probabilities per symbol and bar")
EVOLVED_STRATEGIES = Dataset("evolved_strategies", "each walk-forward period's final GA population, ranked")
STRATEGY_PERFORMANCE = Dataset("strategy_performance", "out-of-sample returns per period and strategy")
WALK_FORWARD_REPORT = Dataset("walk_forward_report", "the stitched out-of-sample study, one row per bar")
LIVE_EQUITY = Dataset("live_equity", "the live account's equity and cash at each bar (per account)")
LIVE_RISK_DECISIONS = Dataset("live_risk_decisions", "every live risk decision and its reason (per account)")
LIVE_RISK_LIMITS = Dataset("live_risk_limits", "the risk limits each live run traded under (per account)")

# What a strategy reads at a bar: the live job, the parity replay and the research assets read these three.
PERCEPTION_INPUTS = (MARKET_BARS, SENSORY_FEATURES, MARKET_REGIMES)
DATASETS = (
    *PERCEPTION_INPUTS,
    EVOLVED_STRATEGIES,
    STRATEGY_PERFORMANCE,
    WALK_FORWARD_REPORT,
    LIVE_EQUITY,
    LIVE_RISK_DECISIONS,
    LIVE_RISK_LIMITS,
)
_BY_NAME = {dataset.name: dataset for dataset in DATASETS}


def dataset_named(name: str) -> Dataset:
    """The dataset of that name (the IO manager maps an asset key to its dataset with it)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownDatasetError(
            f"{name!r} is no dataset of the lake; the datasets are {', '.join(_BY_NAME)} "
            "(add a new one to emp_pipeline/storage/datasets.py)"
        ) from None
