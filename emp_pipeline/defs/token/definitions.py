"""The token concern: the cTrader OAuth token kept fresh, present only where a cTrader app is configured."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from emp_pipeline.defs.secrets import env_var_or
from emp_pipeline.defs.token.refresh import (
    TOKEN_RESOURCE_KEY,
    ctrader_token_failure_sensor,
    ctrader_token_sensor,
    token_refresh_job,
)
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.settings import Settings


def ctrader_token_resource(settings: Settings) -> CTraderTokenResource | None:
    """The token resource, or None without a cTrader app (the paper broker needs no token)."""
    if not settings.token.client_id:
        return None
    return CTraderTokenResource(
        client_id=EnvVar("CTRADER_CLIENT_ID"),
        client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        token_key=env_var_or("EMP_TOKEN_KEY", None),
        redis_url=env_var_or("REDIS_URL", settings.redis_url),
        token_url=settings.token.token_url,
        key_prefix=settings.token.key_prefix,
        refresh_margin_seconds=settings.token.refresh_margin_s,
        request_method=settings.token.request_method,
    )


def token_definitions(ctrader_token: CTraderTokenResource | None) -> Definitions:
    if ctrader_token is None:
        return Definitions()
    return Definitions(
        jobs=[token_refresh_job],
        sensors=[ctrader_token_sensor, ctrader_token_failure_sensor],
        resources={TOKEN_RESOURCE_KEY: ctrader_token},
    )
