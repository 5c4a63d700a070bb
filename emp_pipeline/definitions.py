"""The one Definitions object: each concern's Definitions (`defs/<concern>/`) merged with the shared storage.

`build_definitions(settings)` builds every asset, partition, resource, sensor and schedule from the one
`Settings` it is handed; nothing under `defs/` reads the environment again. `defs` below is what
`dagster dev` and the code server load. Loading never reads bar data, so a bad data file fails only the
run that reads it. Secrets reach resources through EnvVar.
"""

from __future__ import annotations

from dagster import Definitions

from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.io_managers import ParquetFrameIOManager
from emp_pipeline.defs.live.definitions import live_definitions
from emp_pipeline.defs.market_data.definitions import market_data_definitions
from emp_pipeline.defs.partitions import build_partitions
from emp_pipeline.defs.perception.definitions import perception_definitions
from emp_pipeline.defs.research.definitions import research_definitions
from emp_pipeline.defs.secrets import env_var_or
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.defs.token.definitions import ctrader_token_resource, token_definitions
from emp_pipeline.settings import Settings


def shared_definitions(settings: Settings) -> Definitions:
    """The registry, the Parquet lake and the alert webhook, which every concern shares."""
    # A URL from the environment may hold a password: pass it as EnvVar so it never lands in run config.
    database_url = env_var_or("EMP_DATABASE_URL", None) or env_var_or("DATABASE_URL", settings.database_url)
    webhook = env_var_or("EMP_ALERT_WEBHOOK_URL", settings.live.alert_webhook_url)
    return Definitions(
        resources={
            "database": DatabaseResource(url=database_url),
            "lake": DataLakeResource(base_dir=str(settings.data_dir)),
            "frame_io_manager": ParquetFrameIOManager(base_dir=str(settings.data_dir)),
            "alerts": AlertWebhookResource(webhook_url=webhook),
        }
    )


def build_definitions(settings: Settings) -> Definitions:
    partitions = build_partitions(settings)
    ctrader_token = ctrader_token_resource(settings)
    return Definitions.merge(
        shared_definitions(settings),
        market_data_definitions(settings, partitions, ctrader_token),
        perception_definitions(settings, partitions),
        research_definitions(settings, partitions),
        live_definitions(settings, ctrader_token),
        token_definitions(ctrader_token),
    )


defs = build_definitions(Settings.from_env())
