"""The market-data resource: where bars come from and which instruments they cover."""

from __future__ import annotations

import hashlib

from dagster import ConfigurableResource

from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.domain.instruments import Universe
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.settings import Settings


class MarketDataResource(ConfigurableResource):
    """Where bars come from (sample, csv or yahoo) and which instruments they cover."""

    source: str = "sample"
    universe_file: str | None = None
    csv_dir: str | None = None

    def _settings(self) -> Settings:
        environ = {"EMP_DATA_SOURCE": self.source}
        if self.universe_file:
            environ["EMP_UNIVERSE_FILE"] = self.universe_file
        if self.csv_dir:
            environ["EMP_CSV_DIR"] = self.csv_dir
        return Settings.from_env(environ)

    def universe(self) -> Universe:
        return configured_universe(self._settings())

    def universe_origin(self) -> str:
        """Which file the universe's terms come from, with its digest (recorded with every term change)."""
        path = self._settings().universe_file
        if path is None:
            return f"{self.source} universe"
        return f"universe file {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})"

    def build_source(self) -> MarketDataSource:
        return configured_source(self._settings())
