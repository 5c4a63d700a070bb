"""Dagster resources: the thin, configurable handles assets use to reach storage, data and services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from emp_pipeline.auth.build import build_token_manager, build_token_store
from emp_pipeline.auth.token_manager import CTraderTokenManager, RetrySchedule
from emp_pipeline.auth.token_store import TokenState
from emp_pipeline.data.fred import FRED_BASE_URL, FredSource
from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.domain.evolution import EvolutionConfig
from emp_pipeline.domain.instruments import Universe
from emp_pipeline.domain.promotion import PromotionGates
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.repository import session_scope, shared_engine
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore


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

    def build_source(self) -> MarketDataSource:
        return configured_source(self._settings())


class DataLakeResource(ConfigurableResource):
    """The Parquet datasets the IO manager writes, for checks and jobs that read them directly."""

    base_dir: str

    def store(self, name: str) -> DatedFrameStore:
        return DatedFrameStore(Path(self.base_dir), name)


# --- cTrader OAuth token (emp_pipeline/auth) ---


class CTraderTokenResource(ConfigurableResource):
    """The cTrader OAuth token kept fresh in Redis; secrets (client id/secret, token key) come as EnvVar."""

    client_id: str
    client_secret: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    token_url: str = "https://openapi.ctrader.com"
    key_prefix: str = "emp:"
    token_key: str | None = None
    refresh_margin_seconds: float = 3600.0
    http_timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_base_delay_seconds: float = 1.0
    request_method: str = "GET"  # GET (as the official SDKs) or POST
    sensor_socket_timeout_seconds: float = 2.0

    def manager(self) -> CTraderTokenManager:
        """A token manager for this process (the lock in Redis makes several of them safe together)."""
        return build_token_manager(
            client_id=self.client_id,
            client_secret=self.client_secret,
            redis_url=self.redis_url,
            token_url=self.token_url,
            key_prefix=self.key_prefix,
            token_key=self.token_key,
            refresh_margin_s=self.refresh_margin_seconds,
            http_timeout_s=self.http_timeout_seconds,
            retry=RetrySchedule(max_attempts=self.max_attempts, base_delay_s=self.retry_base_delay_seconds),
            method="POST" if self.request_method.upper() == "POST" else "GET",
        )

    def get_access_token(self) -> str:
        return self.manager().get_access_token()

    def read_state(self) -> TokenState | None:
        """Expiry, version and status only, over a connection with short timeouts: all a sensor may afford."""
        store = build_token_store(
            client_id=self.client_id,
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            token_key=None,
            socket_timeout_s=self.sensor_socket_timeout_seconds,
        )
        return store.read_state()


# --- end cTrader OAuth token ---


# --- registry database (emp_pipeline/registry) ---


class DatabaseResource(ConfigurableResource):
    """The strategy registry: a SQLite file in the embedded mode, PostgreSQL in production (same schema)."""

    url: str

    def engine(self) -> Engine:
        """One pooled engine per process and URL, shared by every asset op running in that process."""
        return shared_engine(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work that commits when the block succeeds and rolls back when it raises."""
        with session_scope(self.engine()) as session:
            yield session

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply the Alembic migrations up to `revision`; returns the revision the database is now at."""
        return upgrade_database(self.url, revision)


# --- end registry database ---


# --- perception: FRED macro series (emp_pipeline/data/fred.py) and the regime classifier ---


class FredResource(ConfigurableResource):
    """FRED's API for the WHY features; the key arrives as EnvVar("FRED_API_KEY"), None when it is unset."""

    api_key: str | None = None
    base_url: str = FRED_BASE_URL
    timeout_seconds: float = 15.0

    @property
    def is_configured(self) -> bool:
        return bool(self.api_key)

    def source(self) -> FredSource:
        return FredSource(self.api_key, base_url=self.base_url, timeout_seconds=self.timeout_seconds)


class RegimeClassifierResource(ConfigurableResource):
    """Which regime classifier `market_regimes` runs: "rules" (default) or "hmm" (EMP_REGIME_CLASSIFIER)."""

    kind: str = "rules"


# --- end perception ---


# --- walk-forward research (defs/assets/strategies.py, performance.py, champions.py) ---


class WalkForwardResource(ConfigurableResource):
    """How each period's GA runs and the gates a champion must pass out of sample (from Settings)."""

    seed: int = 7
    population_size: int = 200
    generations: int = 50
    gate_min_sharpe: float = 0.5
    gate_min_deflated_sharpe: float = 0.5
    gate_max_drawdown: float = 0.15
    gate_min_trades: int = 2
    max_champions: int = 3

    def evolution_config(self) -> EvolutionConfig:
        return EvolutionConfig(population_size=self.population_size, generations=self.generations).validate()

    def gates(self) -> PromotionGates:
        return PromotionGates(
            min_sharpe=self.gate_min_sharpe,
            min_deflated_sharpe=self.gate_min_deflated_sharpe,
            max_drawdown=self.gate_max_drawdown,
            min_trades=self.gate_min_trades,
        ).validate()


# --- end walk-forward research ---
