"""The market-data resource: where bars come from and which instruments they cover."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dagster import ConfigurableResource

from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.domain.instruments import Universe
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.settings import DEFAULT_UNIVERSE_FILES, DataSettings


class MarketDataResource(ConfigurableResource):
    """The data section of the settings (EMP_DATA_SOURCE, EMP_UNIVERSE_FILE, EMP_CSV_DIR) as run config.

    The universe of a CSV folder without a universe file is inferred when a run asks for it, so a bad file
    fails that run, never the loading of the definitions.
    """

    source: str = "sample"
    universe_file: str | None = None
    csv_dir: str | None = None

    @classmethod
    def from_settings(cls, data: DataSettings) -> MarketDataResource:
        return cls(
            source=data.source,
            universe_file=str(data.universe_file) if data.universe_file else None,
            csv_dir=str(data.csv_dir) if data.csv_dir else None,
        )

    def data_settings(self) -> DataSettings:
        return DataSettings(
            source=self.source,
            universe_file=Path(self.universe_file)
            if self.universe_file
            else DEFAULT_UNIVERSE_FILES.get(self.source),
            csv_dir=Path(self.csv_dir) if self.csv_dir else None,
        )

    def universe(self) -> Universe:
        return configured_universe(self.data_settings())

    def universe_origin(self) -> str:
        """Which file the universe's terms come from, with its digest (recorded with every term change)."""
        path = self.data_settings().universe_file
        if path is None:
            return f"{self.source} universe"
        return f"universe file {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})"

    def build_source(self) -> MarketDataSource:
        return configured_source(self.data_settings())
