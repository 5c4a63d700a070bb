"""The token manager against the real Redis and a local cTrader token server over loopback HTTP."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from cryptography.fernet import Fernet

from emp_pipeline.auth.build import build_token_store
from emp_pipeline.auth.errors import (
    ReauthRequiredError,
    RotatedPairLostError,
    TerminalTokenError,
    TokenKeyError,
    TokenNotAuthorizedError,
    TokenStoreUnavailableError,
    TransientTokenError,
)
from emp_pipeline.auth.oauth_client import CTraderOAuthClient, HttpMethod
from emp_pipeline.auth.redaction import fingerprint
from emp_pipeline.auth.token_manager import CTraderTokenManager
from emp_pipeline.auth.token_store import RedisTokenStore, TokenStatus
from emp_pipeline_tests.fakes.ctrader_token_server import EXPIRES_IN_S, FakeCTraderTokenServer
from emp_pipeline_tests.fakes.tcp_proxy import CuttableTcpProxy
from emp_pipeline_tests.integration.token_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    REDIS_URL,
    make_manager,
)

pytestmark = pytest.mark.redis


def authorize_expiring_soon(manager: CTraderTokenManager, server: FakeCTraderTokenServer) -> None:
    """Store a pair with 10 minutes left (inside the one-hour margin); later grants get the full lifetime."""
    server.state.expires_in = 600
    manager.authorize_with_code(server.issue_code(), REDIRECT_URI)
    server.state.expires_in = EXPIRES_IN_S


def raw_hash(key_prefix: str) -> dict[str, str]:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True).hgetall(f"{key_prefix}token:{CLIENT_ID}")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_refresh_rotates_both_tokens_and_the_old_refresh_token_is_refused(
    token_server: FakeCTraderTokenServer, key_prefix: str, method: HttpMethod
) -> None:
    manager = make_manager(token_server.base_url, key_prefix, method=method)
    authorize_expiring_soon(manager, token_server)
    before = raw_hash(key_prefix)

    new_access = manager.get_access_token()

    after = raw_hash(key_prefix)
    assert new_access == after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert int(after["version"]) == int(before["version"]) + 1
    assert after["status"] == "valid" and after["consecutive_failures"] == "0"
    assert float(after["expires_at"]) == pytest.approx(time.time() + EXPIRES_IN_S, abs=30)
    assert token_server.count("refreshes") == 1
    assert not token_server.is_valid_refresh_token(before["refresh_token"])
    assert token_server.is_valid_refresh_token(after["refresh_token"])
    oauth = CTraderOAuthClient(CLIENT_ID, CLIENT_SECRET, base_url=token_server.base_url)
    with pytest.raises(TerminalTokenError, match="ACCESS_DENIED"):
        oauth.refresh(before["refresh_token"])


def test_token_outside_the_margin_is_returned_without_any_request(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix)
    manager.authorize_with_code(token_server.issue_code(), REDIRECT_URI)
    requests_after_authorize = token_server.count("requests")
    assert manager.get_access_token() == raw_hash(key_prefix)["access_token"]
    assert manager.refresh_if_needed().refreshed is False
    assert token_server.count("requests") == requests_after_authorize


def test_force_refresh_rotates_a_token_outside_the_margin_once_for_all_callers(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix)
    manager.authorize_with_code(token_server.issue_code(), REDIRECT_URI)
    rejected = manager.get_access_token()
    fresh = manager.force_refresh(rejected)
    assert fresh != rejected and fresh == raw_hash(key_prefix)["access_token"]
    assert token_server.count("refreshes") == 1
    # A second caller that saw the same rejected token, and asks only now, gets the new one without another
    # refresh (it used to read the store at call time, find the new token and refresh that one again).
    other = make_manager(token_server.base_url, key_prefix)
    assert other.force_refresh(rejected) == fresh
    assert token_server.count("refreshes") == 1


def test_concurrent_callers_that_saw_one_rejected_token_cost_one_refresh(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    first = make_manager(token_server.base_url, key_prefix)
    first.authorize_with_code(token_server.issue_code(), REDIRECT_URI)
    rejected = first.get_access_token()
    token_server.set_delay(0.2)  # every caller is waiting while the refresh is in flight
    managers = [make_manager(token_server.base_url, key_prefix) for _ in range(8)]
    with ThreadPoolExecutor(len(managers)) as pool:
        tokens = list(pool.map(lambda manager: manager.force_refresh(rejected), managers))
    assert len(set(tokens)) == 1 and tokens[0] != rejected
    assert token_server.count("refreshes") == 1
    assert tokens[0] == raw_hash(key_prefix)["access_token"]


def _wait_for(probe: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_short_redis_outage_while_a_refresh_is_in_flight_loses_nothing(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    with CuttableTcpProxy("127.0.0.1", 6379) as proxy:
        manager = make_manager(
            token_server.base_url, key_prefix, redis_url=f"redis://127.0.0.1:{proxy.port}/0"
        )
        authorize_expiring_soon(manager, token_server)
        requests_before = token_server.count("requests")
        token_server.set_delay(0.5)
        with ThreadPoolExecutor(1) as pool:
            refreshing = pool.submit(manager.refresh_if_needed)
            _wait_for(lambda: token_server.count("requests") > requests_before)  # the request is in flight
            proxy.cut()  # Redis goes away before cTrader answers
            _wait_for(lambda: token_server.count("refreshes") == 1)
            time.sleep(3.0)  # cTrader rotated the pair; every write attempt in these seconds fails
            proxy.restore()
            outcome = refreshing.result(timeout=60)

    assert outcome.refreshed
    _, rotated_refresh = token_server.state.issued[-1]
    stored = raw_hash(key_prefix)
    assert stored["refresh_token"] == rotated_refresh and token_server.is_valid_refresh_token(rotated_refresh)
    assert stored["status"] == "valid" and "inflight_fingerprint" not in stored
    assert token_server.count("refreshes") == 1


def test_a_redis_outage_longer_than_the_lock_lease_says_exactly_what_was_lost(
    token_server: FakeCTraderTokenServer, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with CuttableTcpProxy("127.0.0.1", 6379) as proxy:
        manager = make_manager(
            token_server.base_url, key_prefix, redis_url=f"redis://127.0.0.1:{proxy.port}/0", lock_ttl_s=22.0
        )
        authorize_expiring_soon(manager, token_server)
        old_refresh = raw_hash(key_prefix)["refresh_token"]
        requests_before = token_server.count("requests")
        token_server.set_delay(0.5)
        with ThreadPoolExecutor(1) as pool:
            refreshing = pool.submit(manager.refresh_if_needed)
            _wait_for(lambda: token_server.count("requests") > requests_before)
            proxy.cut()
            with pytest.raises(RotatedPairLostError) as raised:
                refreshing.result(timeout=60)  # Redis stays away until the manager gives up
            proxy.restore()

    message = str(raised.value)
    access, rotated_refresh = token_server.state.issued[-1]
    assert f"cTrader rotated refresh token {fingerprint(old_refresh)}" in message
    assert f"(refresh token {fingerprint(rotated_refresh)})" in message
    assert "stayed unreachable" in message and "lease ran out" in message and "emp token authorize" in message
    for secret in (access, rotated_refresh, old_refresh):
        assert secret not in message
        assert all(secret not in record.getMessage() for record in caplog.records)
    stored = raw_hash(key_prefix)  # nothing could be written: the marker tells the next attempt
    assert stored["refresh_token"] == old_refresh and stored["inflight_fingerprint"] == fingerprint(
        old_refresh
    )


def test_snake_case_answers_are_stored_too(token_server: FakeCTraderTokenServer, key_prefix: str) -> None:
    token_server.set_snake_case(True)
    manager = make_manager(token_server.base_url, key_prefix)
    authorize_expiring_soon(manager, token_server)
    assert manager.get_access_token() == token_server.state.issued[-1][0]


def test_two_503s_then_success_is_retried_to_one_refresh(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix, attempts=3)
    authorize_expiring_soon(manager, token_server)
    token_server.fail_next(2, status=503)

    token = manager.get_access_token()

    assert token == raw_hash(key_prefix)["access_token"]
    assert token_server.count("injected_failures") == 2 and token_server.count("refreshes") == 1
    health = manager.health()
    assert health is not None and health.consecutive_failures == 0 and health.status is TokenStatus.VALID


def test_transient_failures_beyond_the_attempts_keep_the_old_pair_usable(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix, attempts=2)
    authorize_expiring_soon(manager, token_server)
    old = raw_hash(key_prefix)
    token_server.fail_next(2, status=429)

    with pytest.raises(TransientTokenError, match="HTTP 429"):
        manager.get_access_token()

    state = raw_hash(key_prefix)
    assert state["consecutive_failures"] == "1" and state["status"] == "valid"
    assert "inflight_fingerprint" not in state  # the server answered: nothing was spent
    assert token_server.is_valid_refresh_token(old["refresh_token"])
    assert manager.get_access_token() != old["access_token"]  # the next try succeeds with the same token
    assert raw_hash(key_prefix)["consecutive_failures"] == "0"


def test_terminal_error_is_not_retried_and_sets_reauth_required(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix, attempts=5)
    authorize_expiring_soon(manager, token_server)
    requests_before = token_server.count("requests")
    token_server.refuse_next("ACCESS_DENIED")

    with pytest.raises(ReauthRequiredError, match="emp token authorize"):
        manager.get_access_token()

    assert token_server.count("requests") == requests_before + 1
    state = raw_hash(key_prefix)
    assert state["status"] == "reauth_required" and "ACCESS_DENIED" in state["last_error"]
    with pytest.raises(ReauthRequiredError, match="ACCESS_DENIED"):
        manager.get_access_token()
    assert token_server.count("requests") == requests_before + 1  # no retry storm on later calls either

    manager.authorize_with_code(token_server.issue_code(), REDIRECT_URI)  # a person re-authorises
    assert raw_hash(key_prefix)["status"] == "valid"


def test_lost_answer_after_a_timeout_keeps_the_marker_and_then_asks_for_reauth(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix, attempts=1, timeout_s=0.3)
    authorize_expiring_soon(manager, token_server)
    old_refresh = raw_hash(key_prefix)["refresh_token"]
    token_server.set_delay(0.6)  # the server rotates the token, but only after the client gave up

    with pytest.raises(TransientTokenError, match="no answer"):
        manager.get_access_token()
    deadline = time.monotonic() + 5
    while token_server.count("refreshes") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)

    state = raw_hash(key_prefix)
    assert token_server.count("refreshes") == 1 and not token_server.is_valid_refresh_token(old_refresh)
    assert state["status"] == "refreshing" and state["inflight_fingerprint"] == fingerprint(old_refresh)
    token_server.set_delay(0)
    with pytest.raises(ReauthRequiredError, match="never stored its answer"):
        manager.get_access_token()
    assert raw_hash(key_prefix)["status"] == "reauth_required"


class _StoreThatDiesBeforeWriting(RedisTokenStore):
    """Simulates a crash (SIGKILL) between the token server's answer and the store write."""

    def write_pair(
        self, access_token: str, refresh_token: str, expires_at: float, refreshed_at: float
    ) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def _refresh_and_die(base_url: str, key_prefix: str) -> None:
    make_manager(
        base_url, key_prefix, lock_ttl_s=1.0, store_class=_StoreThatDiesBeforeWriting
    ).get_access_token()


def test_crash_between_answer_and_store_write_is_reported_as_reauth_required(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix)
    authorize_expiring_soon(manager, token_server)
    old_refresh = raw_hash(key_prefix)["refresh_token"]

    child = multiprocessing.get_context("spawn").Process(
        target=_refresh_and_die, args=(token_server.base_url, key_prefix)
    )
    child.start()
    child.join(timeout=30)

    assert child.exitcode == -signal.SIGKILL
    assert token_server.count("refreshes") == 1  # the server rotated; the new pair died with the process
    state = raw_hash(key_prefix)
    assert state["refresh_token"] == old_refresh and state["status"] == "refreshing"
    assert state["inflight_fingerprint"] == fingerprint(old_refresh)
    assert state["inflight_owner"].split(":")[1] == str(child.pid)

    with pytest.raises(ReauthRequiredError, match="never stored its answer") as raised:
        manager.get_access_token()  # waits out the dead holder's lock (1 s TTL), then tries once

    assert "emp token authorize" in str(raised.value)
    assert token_server.count("refused_refreshes") == 1 and token_server.count("refreshes") == 1
    state = raw_hash(key_prefix)
    assert state["status"] == "reauth_required" and "inflight_fingerprint" not in state


def test_marker_from_a_request_that_never_reached_the_server_is_settled_without_reauth(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    manager = make_manager(token_server.base_url, key_prefix)
    manager.authorize_with_code(token_server.issue_code(), REDIRECT_URI)  # a month left: outside the margin
    old = raw_hash(key_prefix)
    store = build_token_store(client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None)
    store.mark_refresh_in_flight(fingerprint(old["refresh_token"]), "dead-host:1:1", time.time() - 30)

    assert manager.get_access_token() != old["access_token"]  # the marker alone makes it settle the outcome
    state = raw_hash(key_prefix)
    assert state["status"] == "valid" and "inflight_fingerprint" not in state
    assert token_server.count("refreshes") == 1


def test_tokens_are_encrypted_at_rest_and_unreadable_without_the_key(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    key = Fernet.generate_key().decode()
    manager = make_manager(token_server.base_url, key_prefix, token_key=key)
    manager.authorize_with_code(token_server.issue_code(), REDIRECT_URI)
    access, refresh = token_server.state.issued[-1]

    stored = raw_hash(key_prefix)
    assert stored["access_token"].startswith("fernet:") and stored["refresh_token"].startswith("fernet:")
    assert access not in str(stored) and refresh not in str(stored)
    assert manager.get_access_token() == access

    keyless = build_token_store(
        client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key=None
    )
    with pytest.raises(TokenKeyError, match="EMP_TOKEN_KEY is not set"):
        keyless.read()
    assert keyless.read_state() is not None  # expiry and status stay readable for the sensor
    wrong = build_token_store(
        client_id=CLIENT_ID,
        redis_url=REDIS_URL,
        key_prefix=key_prefix,
        token_key=Fernet.generate_key().decode(),
    )
    with pytest.raises(TokenKeyError, match="different EMP_TOKEN_KEY"):
        wrong.read()
    with pytest.raises(TokenKeyError, match="not a valid Fernet key"):
        build_token_store(client_id=CLIENT_ID, redis_url=REDIS_URL, key_prefix=key_prefix, token_key="short")


def test_nothing_stored_asks_for_authorization(token_server: FakeCTraderTokenServer, key_prefix: str) -> None:
    with pytest.raises(TokenNotAuthorizedError, match="emp token authorize"):
        make_manager(token_server.base_url, key_prefix).get_access_token()


def test_redis_unavailable_gives_a_clear_error_without_the_password() -> None:
    store = build_token_store(
        client_id=CLIENT_ID,
        redis_url="redis://:hunter2-password@127.0.0.1:1/3",
        key_prefix="emp:test:",
        token_key=None,
        socket_timeout_s=1.0,
    )
    started = time.monotonic()
    with pytest.raises(TokenStoreUnavailableError) as raised:
        store.read_state()
    message = str(raised.value)
    assert time.monotonic() - started < 3
    assert "redis://127.0.0.1:1/3" in message and "REDIS_URL" in message
    assert "hunter2" not in message


def test_no_token_value_appears_in_any_log_record(
    token_server: FakeCTraderTokenServer, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = make_manager(token_server.base_url, key_prefix, attempts=3)
    code = token_server.issue_code()
    token_server.state.expires_in = 600
    manager.authorize_with_code(code, REDIRECT_URI)
    token_server.fail_next(1, status=503)
    manager.get_access_token()  # a refresh with one transient failure
    unreachable = make_manager("http://127.0.0.1:1", key_prefix, attempts=2, margin_s=10**9)
    with pytest.raises(TransientTokenError):
        unreachable.get_access_token()  # connection errors carry the request URL in requests' messages
    token_server.refuse_next()
    with pytest.raises(ReauthRequiredError):
        make_manager(token_server.base_url, key_prefix, margin_s=10**9).get_access_token()

    secrets = [CLIENT_SECRET, code, *(value for pair in token_server.state.issued for value in pair)]
    records = caplog.records
    assert any("/apps/token" in record.getMessage() for record in records)  # urllib3 request lines were seen
    for record in records:
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"{record.name} logged a secret: {record.getMessage()!r}"
    assert not any(secret in str(raw_hash(key_prefix).get("last_error")) for secret in secrets)
