"""The one Definitions object: every asset, check, job, schedule, sensor and resource of the project.

Which resources an environment gets is decided here from `Settings` (embedded defaults: SQLite registry,
Parquet under EMP_DATA_DIR, bundled sample data, paper broker). Secrets reach resources through EnvVar.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, load_asset_checks_from_modules, load_assets_from_modules

from emp_pipeline.defs.assets import champions, market_data, perception, performance, strategies
from emp_pipeline.defs.io_managers import ParquetFrameIOManager
from emp_pipeline.defs.jobs import daily_update_job, evolution_job, freshness_job, research_job, universe_job
from emp_pipeline.defs.live import (
    live_broker_resource,
    live_execution_failure_sensor,
    live_execution_job,
    live_execution_schedule,
    live_execution_sensor,
)
from emp_pipeline.defs.promotion_gates import PromotionGatesResource, promotion_gate_checks
from emp_pipeline.defs.resources import (
    CTraderTokenResource,
    DatabaseResource,
    DataLakeResource,
    FredResource,
    MarketDataResource,
    RegimeClassifierResource,
    WalkForwardResource,
)
from emp_pipeline.defs.schedules import daily_update_schedule, evolution_schedule, freshness_schedule
from emp_pipeline.defs.token_refresh import (
    TOKEN_RESOURCE_KEY,
    ctrader_token_failure_sensor,
    ctrader_token_sensor,
    token_refresh_job,
)
from emp_pipeline.settings import Settings

ASSET_MODULES = [market_data, perception, strategies, performance, champions]


def _env_or(variable: str, default: str | None) -> str | EnvVar | None:
    """EnvVar when the variable is set, so a secret is resolved at run time and never stored in config."""
    return EnvVar(variable) if os.environ.get(variable) else default


def build_resources(settings: Settings) -> dict[str, object]:
    # A URL from the environment may hold a password: pass it as EnvVar so it never lands in run config.
    database_url = _env_or("EMP_DATABASE_URL", None) or _env_or("DATABASE_URL", settings.database_url)
    resources: dict[str, object] = {
        "database": DatabaseResource(url=database_url),
        "market_data": MarketDataResource(
            source=settings.data_source,
            universe_file=str(settings.universe_file) if settings.universe_file else None,
            csv_dir=str(settings.csv_dir) if settings.csv_dir else None,
        ),
        "lake": DataLakeResource(base_dir=str(settings.data_dir)),
        "frame_io_manager": ParquetFrameIOManager(base_dir=str(settings.data_dir)),
        # --- perception: the FRED key only as EnvVar, and only when it is set (else WHY uses no FRED) ---
        "fred": FredResource(api_key=EnvVar("FRED_API_KEY") if settings.fred_api_key else None),
        "regime_classifier": RegimeClassifierResource(kind=settings.regime_classifier),
        # --- end perception ---
        # --- walk-forward research: the GA per period and the champion gates ---
        "walk_forward": WalkForwardResource(
            seed=settings.evolution_seed,
            population_size=settings.evolution_population,
            generations=settings.evolution_generations,
            gate_min_sharpe=settings.gate_min_sharpe,
            gate_min_deflated_sharpe=settings.gate_min_deflated_sharpe,
            gate_max_drawdown=settings.gate_max_drawdown,
            gate_min_trades=settings.gate_min_trades,
            max_champions=settings.max_champions,
        ),
        # --- end walk-forward research ---
        "promotion_gates": PromotionGatesResource(),
    }
    if settings.ctrader_client_id:
        resources[TOKEN_RESOURCE_KEY] = CTraderTokenResource(
            client_id=EnvVar("CTRADER_CLIENT_ID"),
            client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
            token_key=_env_or("EMP_TOKEN_KEY", None),
            redis_url=_env_or("REDIS_URL", settings.redis_url),
            token_url=settings.ctrader_token_url,
            key_prefix=settings.token_key_prefix,
            refresh_margin_seconds=settings.ctrader_refresh_margin_s,
        )
    resources["live_broker"] = live_broker_resource(settings, ctrader_token=resources.get(TOKEN_RESOURCE_KEY))
    return resources


def build_definitions(settings: Settings) -> Definitions:
    jobs = [universe_job, daily_update_job, freshness_job, evolution_job, research_job]
    jobs.append(live_execution_job)
    sensors = [live_execution_sensor, live_execution_failure_sensor]
    schedules = [daily_update_schedule, evolution_schedule, freshness_schedule, live_execution_schedule]
    # The token lifecycle exists only where a cTrader app is configured: the paper broker needs no token.
    if settings.ctrader_client_id:
        jobs.append(token_refresh_job)
        sensors.extend([ctrader_token_sensor, ctrader_token_failure_sensor])
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=[*load_asset_checks_from_modules(ASSET_MODULES), *promotion_gate_checks],
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
