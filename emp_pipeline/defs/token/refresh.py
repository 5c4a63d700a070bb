"""Keeping the cTrader token fresh: a sensor that only reads the stored expiry, and a job that refreshes.

The sensor never calls the network (short Redis timeouts; Redis down means a skip with the reason) and asks
for one run per token version and failure count, so a needed refresh is requested once, and again only after
a recorded failure. The job refreshes under the Redis lock; transient failures (network, HTTP 5xx/429, Redis
down, the lock held elsewhere) are retried by the op's retry policy; anything a retry cannot fix (a refused
token, an unusable EMP_TOKEN_KEY, a lost rotated pair, a bad URL) fails the run at once, and the failure
alert carries the cause, not Dagster's "Exceeded max_retries". Both warn while tokens sit in Redis in
plaintext.
"""

# No `from __future__ import annotations`: Dagster inspects the context and resource annotations at runtime.
import time

from dagster import (
    Backoff,
    DefaultSensorStatus,
    Failure,
    Jitter,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryPolicy,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    sensor,
)
from dagster._utils.error import SerializableErrorInfo

from emp_pipeline.auth.errors import TokenError, TokenStoreUnavailableError, TransientTokenError
from emp_pipeline.auth.token_store import PLAINTEXT_AT_REST_WARNING, TokenStatus
from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.token.resources import CTraderTokenResource

TOKEN_RESOURCE_KEY = "ctrader_token"  # what the op and sensor parameter `ctrader_token` binds to
SENSOR_INTERVAL_S = 300
JOB_NAME = "token_refresh_job"


def refresh_run_key(client_id: str, version: int, consecutive_failures: int) -> str:
    """One key per (token version, failure count): Dagster launches a run key once."""
    return f"ctrader-token-{client_id}-v{version}-f{consecutive_failures}"


@op(
    name="refresh_ctrader_token",
    description="Refresh the cTrader token under the Redis lock if less than the margin is left.",
)
def refresh_ctrader_token(context: OpExecutionContext, ctrader_token: CTraderTokenResource) -> Output[None]:
    if not ctrader_token.token_key:
        context.log.warning(PLAINTEXT_AT_REST_WARNING)
    try:
        outcome = ctrader_token.manager().refresh_if_needed()
    except (TransientTokenError, TokenStoreUnavailableError):
        raise  # the retry policy tries again: the same refresh token is still good
    except (TokenError, ValueError) as exc:
        # A retry would spend nothing but time: a person must act (re-authorise, fix EMP_TOKEN_KEY or a URL).
        raise Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from None
    state = outcome.token.state
    context.log.info(
        f"token version {state.version} {'refreshed' if outcome.refreshed else 'was already fresh'}; "
        f"{(state.expires_at - time.time()) / 3600:.1f} h left"
    )
    return Output(
        None,
        metadata={
            "refreshed": outcome.refreshed,
            "version": state.version,
            "expires_at": MetadataValue.timestamp(state.expires_at),
            "hours_to_expiry": round((state.expires_at - time.time()) / 3600, 2),
        },
    )


def build_token_refresh_job(retry_delay_s: float = 30.0) -> JobDefinition:
    """The job; its op retries transient failures (network, 5xx/429, Redis down) after `retry_delay_s`."""

    @job(
        name=JOB_NAME,
        description="Refresh the cTrader OAuth token stored in Redis (requested by ctrader_token_sensor).",
        tags={"concern": "ctrader_token"},
    )
    def token_refresh_job() -> None:
        refresh_ctrader_token.with_retry_policy(
            RetryPolicy(
                max_retries=3, delay=retry_delay_s, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
            )
        )()

    return token_refresh_job


token_refresh_job = build_token_refresh_job()


@sensor(
    name="ctrader_token_sensor",
    job_name=JOB_NAME,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Requests token_refresh_job when the stored cTrader token has less than the margin left.",
)
def ctrader_token_sensor(
    context: SensorEvaluationContext, ctrader_token: CTraderTokenResource
) -> SensorResult | SkipReason:
    if not ctrader_token.token_key:
        context.log.warning(PLAINTEXT_AT_REST_WARNING)
    try:
        state = ctrader_token.read_state()
    except TokenStoreUnavailableError as exc:
        return SkipReason(f"cannot read the token expiry: {exc}")
    if state is None:
        return SkipReason(
            f"no cTrader token stored for client {ctrader_token.client_id}: run `emp token authorize`"
        )
    if state.status is TokenStatus.REAUTH_REQUIRED:
        return SkipReason(
            f"the cTrader token needs re-authorisation ({state.last_error}); a refresh run cannot help"
        )
    now = time.time()
    seconds_left = state.expires_at - now
    # A marker older than a sensor interval belongs to a refresh that died or lost its answer: settle it.
    stale_marker = (
        state.inflight_started_at is not None and now - state.inflight_started_at > SENSOR_INTERVAL_S
    )
    if seconds_left >= ctrader_token.refresh_margin_seconds and not stale_marker:
        return SkipReason(
            f"token version {state.version} has {seconds_left / 3600:.1f} h left; refreshing under "
            f"{ctrader_token.refresh_margin_seconds / 3600:.1f} h"
        )
    run_key = refresh_run_key(ctrader_token.client_id, state.version, state.consecutive_failures)
    if context.cursor == run_key:
        return SkipReason(f"refresh of token version {state.version} already requested ({run_key})")
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, tags={"ctrader_token_version": str(state.version)})],
        cursor=run_key,
    )


def failure_with_cause(error: SerializableErrorInfo) -> str:
    """The step's error and its innermost cause: after the retries are spent, Dagster's own message is only
    "Exceeded max_retries of 3" and the reason (HTTP 503, Redis down, ...) is in the cause chain."""
    root = error
    while root.cause is not None:
        root = root.cause
    message, cause = error.message.strip(), root.message.strip()
    return message if root is error else f"{message}: {cause}"


@run_failure_sensor(
    name="ctrader_token_failure_sensor",
    monitored_jobs=[token_refresh_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Alert (log + EMP_ALERT_WEBHOOK_URL) when a token refresh fails: after a terminal error "
    "a person must run `emp token authorize` before the token expires.",
)
def ctrader_token_failure_sensor(context: RunFailureSensorContext, alerts: AlertWebhookResource) -> None:
    step_errors = [
        failure_with_cause(event.step_failure_data.error)
        for event in context.get_step_failure_events()
        if event.step_failure_data and event.step_failure_data.error
    ]
    failure = ("; ".join(step_errors) or context.failure_event.message or "run failed")[:2000]
    alerts.send(
        "emp cTrader token refresh failed",
        {
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "error": failure,
            "action": "run `emp token status`; if it says reauth_required, run `emp token authorize`",
        },
    )
