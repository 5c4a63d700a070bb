"""The token concern: the cTrader OAuth token kept fresh, present only where a cTrader app is configured."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from emp_pipeline.defs.token.refresh import (
    TOKEN_RESOURCE_KEY,
    ctrader_token_failure_sensor,
    ctrader_token_sensor,
    token_refresh_job,
)
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.settings import Settings


def env_or(variable: str, default: str | None) -> str | EnvVar | None:
    """EnvVar when the variable is set, so a secret is resolved at run time and never stored in config."""
    return EnvVar(variable) if os.environ.get(variable) else default


def ctrader_token_resource(settings: Settings) -> CTraderTokenResource | None:
    """The token resource, or None without a cTrader app (the paper broker needs no token)."""
    if not settings.ctrader_client_id:
        return None
    return CTraderTokenResource(
        client_id=EnvVar("CTRADER_CLIENT_ID"),
        client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        token_key=env_or("EMP_TOKEN_KEY", None),
        redis_url=env_or("REDIS_URL", settings.redis_url),
        token_url=settings.ctrader_token_url,
        key_prefix=settings.token_key_prefix,
        refresh_margin_seconds=settings.ctrader_refresh_margin_s,
        request_method=settings.ctrader_token_request_method,
    )


def token_definitions(ctrader_token: CTraderTokenResource | None) -> Definitions:
    if ctrader_token is None:
        return Definitions()
    return Definitions(
        jobs=[token_refresh_job],
        sensors=[ctrader_token_sensor, ctrader_token_failure_sensor],
        resources={TOKEN_RESOURCE_KEY: ctrader_token},
    )
