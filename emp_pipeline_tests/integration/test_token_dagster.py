"""The Dagster side of the token: the sensor (Redis only, one run per needed refresh) and the refresh job."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from dagster import (
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)

from emp_pipeline.auth.build import build_token_store
from emp_pipeline.auth.token_store import TokenStatus
from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.token.definitions import ctrader_token_resource
from emp_pipeline.defs.token.refresh import (
    build_token_refresh_job,
    ctrader_token_failure_sensor,
    ctrader_token_sensor,
    token_refresh_job,
)
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.settings import Settings
from emp_pipeline_tests.fakes.ctrader_token_server import EXPIRES_IN_S, FakeCTraderTokenServer
from emp_pipeline_tests.integration.token_fixtures import CLIENT_ID, CLIENT_SECRET, REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def make_resource(base_url: str, key_prefix: str, **overrides: object) -> CTraderTokenResource:
    config: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redis_url": REDIS_URL,
        "token_url": base_url,
        "key_prefix": key_prefix,
        "refresh_margin_seconds": 3600.0,
        "http_timeout_seconds": 3.0,
        "max_attempts": 2,
        "retry_base_delay_seconds": 0.01,
    }
    config.update(overrides)
    return CTraderTokenResource(**config)  # type: ignore[arg-type]


def evaluate(
    resource: CTraderTokenResource, instance: DagsterInstance, cursor: str | None
) -> SensorResult | SkipReason:
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"ctrader_token": resource})
    return ctrader_token_sensor(context)


def run_requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def authorize(resource: CTraderTokenResource, server: FakeCTraderTokenServer, expires_in: int) -> None:
    server.state.expires_in = expires_in
    resource.manager().authorize_with_code(server.issue_code(), "http://127.0.0.1/cb")
    server.state.expires_in = EXPIRES_IN_S


def test_sensor_requests_exactly_one_run_per_needed_refresh(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix)
    nothing_stored = evaluate(resource, instance, None)
    assert isinstance(nothing_stored, SkipReason) and "emp token authorize" in (
        nothing_stored.skip_message or ""
    )

    authorize(resource, token_server, expires_in=600)  # ten minutes left, inside the one-hour margin
    requests_before = token_server.count("requests")
    first = evaluate(resource, instance, None)
    assert isinstance(first, SensorResult)
    (request,) = run_requests(first)
    assert request.run_key == f"ctrader-token-{CLIENT_ID}-v1-f0"
    again = evaluate(resource, instance, first.cursor)
    assert isinstance(again, SkipReason) and run_requests(again) == []
    assert token_server.count("requests") == requests_before  # the sensor never called the token endpoint

    result = token_refresh_job.execute_in_process(
        instance=instance, resources={"ctrader_token": resource}, tags=request.tags
    )
    assert result.success and token_server.count("refreshes") == 1
    assert result.output_for_node("refresh_ctrader_token") is None
    fresh = evaluate(resource, instance, first.cursor)
    assert isinstance(fresh, SkipReason) and "version 2" in (fresh.skip_message or "")

    wide_margin = make_resource(
        token_server.base_url, key_prefix, refresh_margin_seconds=float(EXPIRES_IN_S * 2)
    )
    second = evaluate(wide_margin, instance, first.cursor)
    (next_request,) = run_requests(second)
    assert next_request.run_key == f"ctrader-token-{CLIENT_ID}-v2-f0"
    assert run_requests(evaluate(wide_margin, instance, second.cursor)) == []  # type: ignore[union-attr]


def test_sensor_requests_again_after_a_recorded_failure(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix, max_attempts=1)
    authorize(resource, token_server, expires_in=600)
    first = evaluate(resource, instance, None)
    token_server.fail_next(1, status=503)
    with pytest.raises(Exception, match="HTTP 503"):
        resource.manager().refresh_if_needed()
    (retry_request,) = run_requests(evaluate(resource, instance, first.cursor))  # type: ignore[union-attr]
    assert retry_request.run_key == f"ctrader-token-{CLIENT_ID}-v1-f1"


def test_sensor_requests_a_run_to_settle_a_stale_in_flight_marker(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix)
    authorize(resource, token_server, expires_in=EXPIRES_IN_S)  # a month left: outside the margin
    store = build_token_store(client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None)
    store.mark_refresh_in_flight("0123456789ab", "other-host:1:1", time.time())
    assert isinstance(evaluate(resource, instance, None), SkipReason)  # a refresh may be running right now
    store.mark_refresh_in_flight("0123456789ab", "other-host:1:1", time.time() - 3600)
    (request,) = run_requests(evaluate(resource, instance, None))
    assert request.run_key == f"ctrader-token-{CLIENT_ID}-v1-f0"


def test_sensor_skips_quickly_with_the_reason_when_redis_is_down(instance: DagsterInstance) -> None:
    resource = make_resource("http://127.0.0.1:1", "emp:test:", redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    result = evaluate(resource, instance, None)
    assert time.monotonic() - started < 3
    assert isinstance(result, SkipReason) and "redis://127.0.0.1:1/0" in (result.skip_message or "")


def test_sensor_skips_when_reauthorisation_is_needed(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix)
    authorize(resource, token_server, expires_in=600)
    store = build_token_store(client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None)
    store.record_failure("refused", reauth_required=True, keep_in_flight=False)
    result = evaluate(resource, instance, None)
    assert isinstance(result, SkipReason) and "re-authorisation" in (result.skip_message or "")


def test_terminal_error_fails_the_run_once_with_the_authorize_instruction(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix)
    authorize(resource, token_server, expires_in=600)
    requests_before = token_server.count("requests")
    token_server.refuse_next("ACCESS_DENIED")

    result = build_token_refresh_job(retry_delay_s=0).execute_in_process(
        instance=instance, resources={"ctrader_token": resource}, raise_on_error=False
    )

    assert not result.success
    failure = result.failure_data_for_node("refresh_ctrader_token")
    assert failure is not None and "emp token authorize" in failure.error.message
    assert token_server.count("requests") == requests_before + 1  # the retry policy did not fire


def test_transient_failure_is_retried_by_the_job(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    resource = make_resource(token_server.base_url, key_prefix, max_attempts=2)
    authorize(resource, token_server, expires_in=600)
    token_server.fail_next(2, status=503)  # exhausts the first op attempt's own two tries

    result = build_token_refresh_job(retry_delay_s=0).execute_in_process(
        instance=instance, resources={"ctrader_token": resource}
    )

    assert result.success
    assert token_server.count("injected_failures") == 2 and token_server.count("refreshes") == 1
    restarts = [event for event in result.all_events if event.event_type_value == "STEP_RESTARTED"]
    assert len(restarts) == 1


def _failed_run_alert(
    resource: CTraderTokenResource, instance: DagsterInstance, webhook: tuple[str, list[dict]]
) -> dict:
    """Run the refresh job to its failure, hand that to the failure sensor, return the one alert it sent."""
    url, received = webhook
    result = build_token_refresh_job(retry_delay_s=0).execute_in_process(
        instance=instance, resources={"ctrader_token": resource}, raise_on_error=False
    )
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name="ctrader_token_failure_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"alerts": AlertWebhookResource(webhook_url=url)},
    ).for_run_failure()
    ctrader_token_failure_sensor(context)
    (alert,) = received
    return alert


def test_a_terminal_refresh_failure_alerts_with_the_authorize_instruction(
    token_server: FakeCTraderTokenServer,
    key_prefix: str,
    instance: DagsterInstance,
    webhook: tuple[str, list[dict]],
) -> None:
    resource = make_resource(token_server.base_url, key_prefix)
    authorize(resource, token_server, expires_in=600)
    token_server.refuse_next("ACCESS_DENIED")

    alert = _failed_run_alert(resource, instance, webhook)

    assert alert["title"] == "emp cTrader token refresh failed"
    assert "emp token authorize" in alert["details"]["action"]
    assert "ACCESS_DENIED" in alert["details"]["error"]  # the step's own reason, not just "run failed"
    stored = build_token_store(
        client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None
    ).read()
    assert stored is not None
    assert stored.access_token not in json.dumps(alert) and stored.refresh_token not in json.dumps(alert)


def test_a_malformed_token_key_fails_the_job_at_once_with_the_key_error(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    authorize(make_resource(token_server.base_url, key_prefix), token_server, expires_in=600)
    requests_before = token_server.count("requests")
    malformed = make_resource(token_server.base_url, key_prefix, token_key="not-a-fernet-key")
    started = time.monotonic()

    result = token_refresh_job.execute_in_process(  # the real job: 30 s, 60 s, 120 s between retries
        instance=instance, resources={"ctrader_token": malformed}, raise_on_error=False
    )

    assert not result.success and time.monotonic() - started < 20
    assert not [event for event in result.all_events if event.event_type_value == "STEP_RESTARTED"]
    failure = result.failure_data_for_node("refresh_ctrader_token")
    assert failure is not None and "EMP_TOKEN_KEY is not a valid Fernet key" in failure.error.message
    assert token_server.count("requests") == requests_before


@pytest.mark.parametrize("cause", ["HTTP 503", "Redis down", "key error"])
def test_the_failure_alert_carries_the_cause_not_only_exceeded_max_retries(
    cause: str,
    token_server: FakeCTraderTokenServer,
    key_prefix: str,
    instance: DagsterInstance,
    webhook: tuple[str, list[dict]],
) -> None:
    resource = make_resource(token_server.base_url, key_prefix, max_attempts=1)
    authorize(resource, token_server, expires_in=600)
    if cause == "HTTP 503":
        token_server.fail_next(10, status=503)
        expected = ["Exceeded max_retries of 3", "token endpoint answered HTTP 503"]
    elif cause == "Redis down":
        resource = make_resource(token_server.base_url, key_prefix, redis_url="redis://127.0.0.1:1/0")
        expected = [
            "Exceeded max_retries of 3",
            "the token store (Redis at redis://127.0.0.1:1/0) is unavailable",
        ]
    else:
        resource = make_resource(token_server.base_url, key_prefix, token_key="not-a-fernet-key")
        expected = ["TokenKeyError: EMP_TOKEN_KEY is not a valid Fernet key"]

    error = _failed_run_alert(resource, instance, webhook)["details"]["error"]

    for text in expected:
        assert text in error, error


def test_the_job_and_the_sensor_warn_while_tokens_are_stored_in_plaintext(
    token_server: FakeCTraderTokenServer,
    key_prefix: str,
    instance: DagsterInstance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plaintext = make_resource(token_server.base_url, key_prefix)
    authorize(plaintext, token_server, expires_in=600)
    result = token_refresh_job.execute_in_process(instance=instance, resources={"ctrader_token": plaintext})
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and not entry.is_dagster_event
    ]
    assert any("stored in Redis in plaintext" in message for message in warnings), warnings

    def sensor_warnings(resource: CTraderTokenResource) -> list[str]:
        context = build_sensor_context(instance=instance, resources={"ctrader_token": resource})
        caplog.clear()
        context.log.addHandler(caplog.handler)  # the tick's own logger, shown with the tick in the UI
        ctrader_token_sensor(context)
        return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]

    assert any("stored in Redis in plaintext" in message for message in sensor_warnings(plaintext))
    encrypted = make_resource(token_server.base_url, key_prefix, token_key=Fernet.generate_key().decode())
    assert sensor_warnings(encrypted) == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_request_method_setting_reaches_the_token_endpoint(
    method: str,
    token_server: FakeCTraderTokenServer,
    key_prefix: str,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    environment = {
        "EMP_HOME": str(tmp_path),
        "REDIS_URL": REDIS_URL,
        "CTRADER_CLIENT_ID": CLIENT_ID,
        "CTRADER_CLIENT_SECRET": CLIENT_SECRET,
        "CTRADER_TOKEN_URL": token_server.base_url,
        "EMP_TOKEN_KEY_PREFIX": key_prefix,
        "CTRADER_TOKEN_REQUEST_METHOD": method.lower(),
    }
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    resource = ctrader_token_resource(Settings.from_env())  # what definitions.py builds (EnvVar secrets)
    assert resource is not None and resource.request_method == method
    authorize(make_resource(token_server.base_url, key_prefix), token_server, expires_in=600)
    sent_before = token_server.count(f"requests_{method}")

    result = token_refresh_job.execute_in_process(instance=instance, resources={"ctrader_token": resource})

    assert result.success and token_server.count("refreshes") == 1
    assert token_server.count(f"requests_{method}") == sent_before + 1


def test_a_venue_refusing_the_method_gets_a_configuration_error_and_keeps_the_token(
    token_server: FakeCTraderTokenServer, key_prefix: str, instance: DagsterInstance
) -> None:
    authorize(make_resource(token_server.base_url, key_prefix), token_server, expires_in=600)
    token_server.accept_only("GET")
    posting = make_resource(token_server.base_url, key_prefix, request_method="POST")

    result = token_refresh_job.execute_in_process(
        instance=instance, resources={"ctrader_token": posting}, raise_on_error=False
    )

    assert not result.success
    assert not [event for event in result.all_events if event.event_type_value == "STEP_RESTARTED"]
    failure = result.failure_data_for_node("refresh_ctrader_token")
    assert failure is not None
    assert (
        "does not accept POST requests (HTTP 405): set CTRADER_TOKEN_REQUEST_METHOD=GET"
        in failure.error.message
    )
    state = build_token_store(
        client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None
    ).read_state()
    assert state is not None and state.status is not TokenStatus.REAUTH_REQUIRED
    # Nothing was spent: the same stored refresh token works with the method the venue accepts.
    outcome = make_resource(token_server.base_url, key_prefix).manager().refresh_if_needed()
    assert outcome.refreshed and token_server.count("refreshes") == 1
