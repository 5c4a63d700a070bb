"""The live concern: the execution job, its sensor, fallback schedule and failure alert, the broker and the
environment's risk limits."""

from __future__ import annotations

from dagster import Definitions

from emp_pipeline.defs.live.broker import live_broker_resource
from emp_pipeline.defs.live.job import live_execution_job
from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.live.triggers import (
    build_live_execution_sensor,
    live_execution_failure_sensor,
    live_execution_schedule,
)
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.environment import partition_plan
from emp_pipeline.settings import Settings


def live_definitions(settings: Settings, ctrader_token: CTraderTokenResource | None) -> Definitions:
    """`ctrader_token` is the token concern's resource (the same object), which the cTrader broker uses."""
    live = settings.live
    return Definitions(
        jobs=[live_execution_job],
        sensors=[
            build_live_execution_sensor(partition_plan(settings.data).timeframe),
            live_execution_failure_sensor,
        ],
        schedules=[live_execution_schedule],
        resources={
            "live_broker": live_broker_resource(settings, ctrader_token=ctrader_token),
            "risk_limits": RiskLimitsResource(
                max_position_fraction=live.max_position_fraction,
                max_gross_exposure=live.max_gross_exposure,
                daily_loss_limit=live.daily_loss_limit,
            ),
        },
    )
