"""The one Definitions object: each concern's Definitions (`defs/<concern>/`) merged with the shared storage.

Which resources an environment gets is decided here and in each concern's builder from `Settings`
(embedded defaults: SQLite registry, Parquet under EMP_DATA_DIR, bundled sample data, paper broker).
Secrets reach resources through EnvVar.
"""

from __future__ import annotations

from dagster import Definitions

from emp_pipeline.defs.io_managers import ParquetFrameIOManager
from emp_pipeline.defs.live.definitions import live_definitions
from emp_pipeline.defs.market_data.definitions import market_data_definitions
from emp_pipeline.defs.perception.definitions import perception_definitions
from emp_pipeline.defs.research.definitions import research_definitions
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.defs.token.definitions import ctrader_token_resource, env_or, token_definitions
from emp_pipeline.settings import Settings


def storage_definitions(settings: Settings) -> Definitions:
    """The registry and the Parquet lake, which every concern shares."""
    # A URL from the environment may hold a password: pass it as EnvVar so it never lands in run config.
    database_url = env_or("EMP_DATABASE_URL", None) or env_or("DATABASE_URL", settings.database_url)
    return Definitions(
        resources={
            "database": DatabaseResource(url=database_url),
            "lake": DataLakeResource(base_dir=str(settings.data_dir)),
            "frame_io_manager": ParquetFrameIOManager(base_dir=str(settings.data_dir)),
        }
    )


def build_definitions(settings: Settings) -> Definitions:
    ctrader_token = ctrader_token_resource(settings)
    return Definitions.merge(
        storage_definitions(settings),
        market_data_definitions(settings),
        perception_definitions(settings),
        research_definitions(settings),
        live_definitions(settings, ctrader_token),
        token_definitions(ctrader_token),
    )


defs = build_definitions(Settings.from_env())
