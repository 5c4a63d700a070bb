"""The market-data resource: where bars come from and which instruments they cover."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dagster import ConfigurableResource

from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.data.ctrader import CTraderAccess
from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.domain.instruments import Universe
from emp_pipeline.environment import configured_source, configured_universe, universe_with_venue_terms
from emp_pipeline.settings import DEFAULT_UNIVERSE_FILES, DataSettings


class CTraderAccountResource(ConfigurableResource):
    """The cTrader account market data is read from; client id and secret come as EnvVar, the access
    token from the `ctrader_token` resource's store."""

    url: str = "wss://demo.ctraderapi.com:5036"
    account_id: int
    client_id: str
    client_secret: str
    token: CTraderTokenResource

    def access(self) -> CTraderAccess:
        config = CTraderConfig(
            url=self.url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            account_id=self.account_id,
            allow_plaintext_loopback=True,  # ws:// stays refused off loopback (and by the settings)
        )
        return CTraderAccess(config, self.token.manager())


class MarketDataResource(ConfigurableResource):
    """The data section of the settings (EMP_DATA_SOURCE, EMP_UNIVERSE_FILE, EMP_CSV_DIR) as run config.

    The universe of a CSV folder without a universe file is inferred when a run asks for it, so a bad file
    fails that run, never the loading of the definitions.
    """

    source: str = "sample"
    universe_file: str | None = None
    csv_dir: str | None = None
    ctrader_symbol_map: dict[str, str] = {}  # our symbol -> the broker's name, where they differ
    ctrader: CTraderAccountResource | None = None  # with source=ctrader

    @classmethod
    def from_settings(
        cls, data: DataSettings, ctrader: CTraderAccountResource | None = None
    ) -> MarketDataResource:
        return cls(
            source=data.source,
            universe_file=str(data.universe_file) if data.universe_file else None,
            csv_dir=str(data.csv_dir) if data.csv_dir else None,
            ctrader_symbol_map=dict(data.ctrader_symbol_map),
            ctrader=ctrader,
        )

    def data_settings(self) -> DataSettings:
        return DataSettings(
            source=self.source,
            universe_file=Path(self.universe_file)
            if self.universe_file
            else DEFAULT_UNIVERSE_FILES.get(self.source),
            csv_dir=Path(self.csv_dir) if self.csv_dir else None,
            ctrader_symbol_map=tuple(self.ctrader_symbol_map.items()),
        )

    def _ctrader_access(self) -> CTraderAccess | None:
        return self.ctrader.access() if self.ctrader is not None else None

    def universe(self) -> Universe:
        return configured_universe(self.data_settings())

    def universe_with_terms(self) -> Universe:
        """The universe as stored in the registry: with the cTrader source, the venue's current terms."""
        return universe_with_venue_terms(self.data_settings(), self._ctrader_access())

    def universe_origin(self) -> str:
        """Which file the universe's terms come from, with its digest (recorded with every term change)."""
        path = self.data_settings().universe_file
        if path is None:
            return f"{self.source} universe"
        origin = f"universe file {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})"
        if self.ctrader is not None:
            origin += f" with the symbol details of cTrader account {self.ctrader.account_id}"
        return origin

    def build_source(self) -> MarketDataSource:
        return configured_source(self.data_settings(), self._ctrader_access())
