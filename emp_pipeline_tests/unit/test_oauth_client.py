"""Token-endpoint answers, error classification, redaction and backoff: pure, no network."""

from __future__ import annotations

import logging

import pytest

from emp_pipeline.auth.commands import code_from_input
from emp_pipeline.auth.errors import TerminalTokenError, TokenRequestMethodError, TransientTokenError
from emp_pipeline.auth.oauth_client import CTraderOAuthClient, parse_token_response, token_request_method
from emp_pipeline.auth.redaction import SecretRedactingFilter, fingerprint, redact_secrets
from emp_pipeline.auth.token_manager import RetrySchedule
from emp_pipeline.endpoint_security import InsecureEndpointError


def test_camel_case_answer_is_parsed() -> None:
    grant = parse_token_response(
        200,
        {
            "accessToken": "A1",
            "refreshToken": "R1",
            "expiresIn": 2628000,
            "tokenType": "bearer",
            "errorCode": None,
            "description": None,
        },
    )
    assert (grant.access_token, grant.refresh_token, grant.expires_in, grant.token_type) == (
        "A1",
        "R1",
        2628000.0,
        "bearer",
    )


def test_snake_case_answer_is_the_fallback() -> None:
    grant = parse_token_response(200, {"access_token": "A2", "refresh_token": "R2", "expires_in": 60})
    assert (grant.access_token, grant.refresh_token, grant.expires_in) == ("A2", "R2", 60.0)


def test_camel_case_wins_over_snake_case() -> None:
    body = {"accessToken": "camel", "access_token": "snake", "refreshToken": "R", "expiresIn": 1}
    assert parse_token_response(200, body).access_token == "camel"


def test_error_code_with_http_200_is_terminal() -> None:
    body = {"accessToken": None, "refreshToken": None, "errorCode": "ACCESS_DENIED", "description": "used"}
    with pytest.raises(TerminalTokenError, match="ACCESS_DENIED") as raised:
        parse_token_response(200, body)
    assert raised.value.error_code == "ACCESS_DENIED"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_errors_and_rate_limits_are_transient(status: int) -> None:
    with pytest.raises(TransientTokenError) as raised:
        parse_token_response(status, {"description": "busy"})
    assert raised.value.request_may_have_been_processed is False


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_terminal(status: int) -> None:
    with pytest.raises(TerminalTokenError, match=f"HTTP {status}"):
        parse_token_response(status, None)


def test_answer_without_tokens_or_error_code_is_terminal() -> None:
    with pytest.raises(TerminalTokenError, match="refreshToken"):
        parse_token_response(200, {"accessToken": "A", "expiresIn": 5})


def test_grant_repr_hides_tokens() -> None:
    grant = parse_token_response(200, {"accessToken": "SECRET-A", "refreshToken": "SECRET-R", "expiresIn": 5})
    assert "SECRET" not in repr(grant)


def test_redaction_covers_every_secret_parameter() -> None:
    line = (
        "GET /apps/token?grant_type=refresh_token&refresh_token=r3fr35h&client_id=app&client_secret=s3cr3t"
        "&code=c0d3&accessToken=acc355 HTTP/1.1"
    )
    redacted = redact_secrets(line)
    for secret in ("r3fr35h", "s3cr3t", "c0d3", "acc355"):
        assert secret not in redacted
    assert "grant_type=refresh_token" in redacted and "client_id=app" in redacted


def test_redacting_filter_rewrites_formatted_records() -> None:
    record = logging.LogRecord(
        "urllib3.connectionpool",
        logging.DEBUG,
        __file__,
        1,
        '"%s %s"',
        ("GET", "/x?refresh_token=abc123"),
        None,
    )
    assert SecretRedactingFilter().filter(record) is True
    assert "abc123" not in record.getMessage() and "refresh_token=<redacted>" in record.getMessage()


def test_fingerprint_is_stable_and_not_the_token() -> None:
    assert fingerprint("token-1") == fingerprint("token-1") != fingerprint("token-2")
    assert "token" not in fingerprint("token-1") and len(fingerprint("token-1")) == 12


@pytest.mark.parametrize(("method", "other"), [("POST", "GET"), ("GET", "POST")])
def test_a_refused_method_is_a_configuration_error_not_a_refused_token(method: str, other: str) -> None:
    with pytest.raises(TokenRequestMethodError) as raised:
        parse_token_response(405, {"description": "not allowed"}, method)
    assert not isinstance(raised.value, TerminalTokenError)
    assert f"does not accept {method} requests (HTTP 405): set CTRADER_TOKEN_REQUEST_METHOD={other}" in str(
        raised.value
    )


def test_the_token_url_must_use_tls_off_loopback() -> None:
    with pytest.raises(InsecureEndpointError, match=r"CTRADER_TOKEN_URL=http://openapi\.ctrader\.com"):
        CTraderOAuthClient("my-app", "secret", base_url="http://openapi.ctrader.com")
    assert CTraderOAuthClient("my-app", "secret", base_url="http://127.0.0.1:8080").token_url == (
        "http://127.0.0.1:8080/apps/token"
    )


@pytest.mark.parametrize(("configured", "method"), [("get", "GET"), ("POST", "POST"), ("Post", "POST")])
def test_the_request_method_setting_is_read_case_blind(configured: str, method: str) -> None:
    assert token_request_method(configured) == method
    assert CTraderOAuthClient("my-app", "secret", method=configured).method == method  # type: ignore[arg-type]


def test_an_unknown_request_method_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="CTRADER_TOKEN_REQUEST_METHOD must be GET or POST, not 'PUT'"):
        token_request_method("PUT")


def test_consent_url_carries_client_redirect_and_scope() -> None:
    client = CTraderOAuthClient("my-app", "secret", base_url="https://openapi.ctrader.com/")
    url = client.authorization_url("https://example.org/cb", "trading")
    assert url == (
        "https://openapi.ctrader.com/apps/auth?client_id=my-app&redirect_uri=https%3A%2F%2Fexample.org%2Fcb"
        "&scope=trading"
    )
    assert "secret" not in url


def test_client_needs_id_and_secret() -> None:
    with pytest.raises(ValueError, match="CTRADER_CLIENT_SECRET"):
        CTraderOAuthClient("my-app", "")


def test_backoff_doubles_within_jitter_and_bounds_the_lock_ttl() -> None:
    schedule = RetrySchedule(max_attempts=4, base_delay_s=1.0, max_delay_s=3.0)
    delays = [schedule.delay_before(attempt) for attempt in (2, 3, 4)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 1.5 <= delays[2] <= 3.0
    assert schedule.worst_case_s(request_timeout_s=10.0) == 4 * 2 * 10.0 + 1.0 + 2.0 + 3.0


@pytest.mark.parametrize(
    "typed, code",
    [
        ("abc-123\n", "abc-123"),
        ("https://example.org/cb?code=xyz-9&state=1\n", "xyz-9"),
        ("  code=only  ", "only"),
    ],
)
def test_code_is_taken_from_a_bare_code_or_the_redirect_url(typed: str, code: str) -> None:
    assert code_from_input(typed) == code
