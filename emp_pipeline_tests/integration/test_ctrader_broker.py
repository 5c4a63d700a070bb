"""The cTrader broker against the local cTrader protocol server: the recovery paths that guard money."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.interface import BrokerAuthError, BrokerConnectionError, OrderRequest, OrderStatus
from emp_pipeline_tests.fakes.ctrader_server import (
    ACCOUNT_AUTH_REQ,
    APP_AUTH_REQ,
    DROP_AFTER_EXECUTING,
    DROP_BEFORE_EXECUTING,
    NEW_ORDER_REQ,
    FakeCTraderServer,
    FakeTokenProvider,
)
from emp_pipeline_tests.integration.ctrader_fixtures import ACCOUNT, fast_config


@pytest.fixture
def server() -> Iterator[FakeCTraderServer]:
    with FakeCTraderServer(account_ids=(ACCOUNT,)) as running:
        yield running


@pytest.fixture
def tokens(server: FakeCTraderServer) -> FakeTokenProvider:
    return FakeTokenProvider(server)


@pytest.fixture
def broker(server: FakeCTraderServer, tokens: FakeTokenProvider) -> Iterator[CTraderBroker]:
    with CTraderBroker(fast_config(server), tokens) as connected:
        yield connected


def test_market_order_is_sent_in_protocol_units_and_fills_with_deal_price_and_fee(
    server: FakeCTraderServer, broker: CTraderBroker
) -> None:
    result = broker.submit_order(
        OrderRequest("eu-1", "EURUSD", "buy", 2_000, relative_stop_loss=0.0050, relative_take_profit=0.0100)
    )
    jpy = broker.submit_order(OrderRequest("uj-1", "USDJPY", "sell", 1_000, relative_stop_loss=0.5))

    sent = server.requests_of_type(NEW_ORDER_REQ)
    assert sent[0]["volume"] == 200_000  # 2,000 units in cents
    assert (sent[0]["relativeStopLoss"], sent[0]["relativeTakeProfit"]) == (500, 1_000)
    assert sent[0]["tradeSide"] == 1 and sent[0]["orderType"] == 1 and sent[0]["clientOrderId"] == "eu-1"
    assert (sent[1]["volume"], sent[1]["relativeStopLoss"], sent[1]["tradeSide"]) == (100_000, 50_000, 2)

    assert result.status is OrderStatus.FILLED and jpy.status is OrderStatus.FILLED
    assert result.filled_quantity == 2_000 and result.average_price == pytest.approx(1.08510)  # the ask
    assert result.total_fee == pytest.approx(2_000 * 1.08510 * 0.25 / 10_000, abs=0.01)
    assert jpy.average_price == pytest.approx(151.200)  # a sell fills at the bid
    position = next(p for p in server.positions.values() if p["tradeData"]["symbolId"] == 1)
    assert position["stopLoss"] == pytest.approx(1.08010) and position["takeProfit"] == pytest.approx(1.09510)
    assert {p.symbol: p.quantity for p in broker.positions()} == {"EURUSD": 2_000, "USDJPY": -1_000}


def test_bad_application_credentials_fail_fast_with_an_auth_error(
    server: FakeCTraderServer, tokens: FakeTokenProvider
) -> None:
    with (
        CTraderBroker(fast_config(server, client_secret="wrong"), tokens) as broker,
        pytest.raises(BrokerAuthError, match="CH_CLIENT_AUTH_FAILURE"),
    ):
        broker.connect()
    assert len(server.requests_of_type(APP_AUTH_REQ)) == 1  # terminal: no reconnect storm


@pytest.mark.parametrize("expired_code", ["CH_ACCESS_TOKEN_INVALID", "OA_AUTH_TOKEN_EXPIRED"])
def test_expired_token_mid_session_is_refreshed_then_account_reauthorised_and_order_goes_through(
    expired_code: str,
) -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), expired_token_code=expired_code) as server:
        tokens = FakeTokenProvider(server)
        with CTraderBroker(fast_config(server), tokens) as broker:
            assert (
                broker.submit_order(OrderRequest("before", "EURUSD", "buy", 1_000)).status
                is OrderStatus.FILLED
            )
            old_token = tokens.current
            server.expire_access_token(old_token)

            result = broker.submit_order(OrderRequest("after-expiry", "EURUSD", "buy", 1_000))

        assert result.status is OrderStatus.FILLED
        assert tokens.refreshes == 1
        auths = server.requests_of_type(ACCOUNT_AUTH_REQ)
        assert [a["accessToken"] for a in auths] == [old_token, tokens.current]
        assert len(server.orders_for("after-expiry")) == 1  # refused-then-resent order executed once


def test_one_invalidated_token_costs_one_refresh_for_every_session_that_saw_it() -> None:
    """Two brokers (two sessions, as two live runs) hit the same expired token at once: each passes the
    token it saw rejected, so the provider refreshes only while the store still holds that one."""
    with FakeCTraderServer(account_ids=(ACCOUNT,), expired_token_code="CH_ACCESS_TOKEN_INVALID") as server:
        tokens = FakeTokenProvider(server)
        with (
            CTraderBroker(fast_config(server), tokens) as first,
            CTraderBroker(fast_config(server), tokens) as second,
        ):
            first.connect()
            second.connect()
            server.expire_access_token(tokens.current)
            with ThreadPoolExecutor(2) as pool:
                results = list(
                    pool.map(
                        lambda pair: pair[0].submit_order(OrderRequest(pair[1], "EURUSD", "buy", 1_000)),
                        [(first, "first-after-expiry"), (second, "second-after-expiry")],
                    )
                )

    assert [result.status for result in results] == [OrderStatus.FILLED, OrderStatus.FILLED]
    assert tokens.refreshes == 1


def test_a_refresh_that_does_not_help_ends_in_an_auth_error_not_a_loop(server: FakeCTraderServer) -> None:
    class RevokedGrant:
        def get_access_token(self) -> str:
            return "revoked"

        def force_refresh(self, rejected_access_token: str) -> str:
            return "still-revoked"

    with (
        CTraderBroker(fast_config(server), RevokedGrant()) as broker,
        pytest.raises(BrokerAuthError, match="re-authorise"),
    ):
        broker.connect()
    assert [a["accessToken"] for a in server.requests_of_type(ACCOUNT_AUTH_REQ)] == [
        "revoked",
        "still-revoked",
    ]


def test_token_invalidated_event_rereads_the_store_instead_of_refreshing_again(
    server: FakeCTraderServer, tokens: FakeTokenProvider, broker: CTraderBroker
) -> None:
    broker.connect()
    new_token = tokens.rotate_elsewhere()  # another process refreshed: server sends 2147 to this session

    result = broker.submit_order(OrderRequest("after-2147", "EURUSD", "sell", 1_000))

    assert result.status is OrderStatus.FILLED
    assert (
        tokens.refreshes == 0
    )  # the refresh token is single-use: never burn it when the store has a new one
    assert server.requests_of_type(ACCOUNT_AUTH_REQ)[-1]["accessToken"] == new_token


def test_connection_dropped_after_execution_is_reconciled_and_never_resent(
    server: FakeCTraderServer, broker: CTraderBroker
) -> None:
    broker.connect()
    server.drop_connection_on_next_order(DROP_AFTER_EXECUTING)

    result = broker.submit_order(OrderRequest("dropped-after", "EURUSD", "buy", 3_000))

    assert result.status is OrderStatus.FILLED
    assert result.filled_quantity == 3_000 and result.fills[0].broker_fill_id  # fills came from the deal list
    assert len(server.requests_of_type(NEW_ORDER_REQ)) == 1
    assert len(server.orders_for("dropped-after")) == 1
    assert broker.stats.orders_found_after_disconnect == 1 and broker.stats.connections == 2
    assert broker.order_status("dropped-after").status is OrderStatus.FILLED


def test_connection_dropped_before_execution_resends_once_after_proving_absence(
    server: FakeCTraderServer, broker: CTraderBroker
) -> None:
    broker.connect()
    server.drop_connection_on_next_order(DROP_BEFORE_EXECUTING)

    result = broker.submit_order(OrderRequest("dropped-before", "EURUSD", "buy", 1_000))

    assert result.status is OrderStatus.FILLED
    assert len(server.requests_of_type(NEW_ORDER_REQ)) == 2
    assert len(server.orders_for("dropped-before")) == 1
    assert broker.stats.orders_resent_after_proof_of_absence == 1


def test_resubmitting_a_client_order_id_from_a_new_process_returns_the_existing_order(
    server: FakeCTraderServer, tokens: FakeTokenProvider, broker: CTraderBroker
) -> None:
    first = broker.submit_order(OrderRequest("once-only", "EURUSD", "buy", 1_000))
    with CTraderBroker(fast_config(server), tokens) as restarted:
        again = restarted.submit_order(OrderRequest("once-only", "EURUSD", "buy", 1_000))
        report = restarted.reconcile(["once-only", "never-sent"])

    assert again.status is OrderStatus.FILLED and again.broker_order_id == first.broker_order_id
    assert len(server.orders_for("once-only")) == 1
    assert report.orders["once-only"].status is OrderStatus.FILLED
    assert report.missing_client_order_ids == ("never-sent",)
    assert report.position_quantity("EURUSD") == 1_000


def test_rate_limit_makes_the_client_pause_for_retry_after_and_then_finish() -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), max_requests_per_second=5, retry_after_s=1) as limited:
        limited_tokens = FakeTokenProvider(limited)
        config = fast_config(limited, max_requests_per_second=1_000)  # our own limiter will not save us here
        with CTraderBroker(config, limited_tokens) as broker:
            started = time.monotonic()
            answers = [broker.positions() for _ in range(6)]
            elapsed = time.monotonic() - started

        assert answers == [()] * 6
        assert broker.stats.rate_limit_backoffs == 1
        assert limited.blocked_responses == 1  # after BLOCKED the client waited instead of hammering
        assert elapsed >= 1.0


@pytest.mark.parametrize(
    ("rejection_path", "order", "code"),
    [
        ("order_error_event", OrderRequest("bad-volume", "EURUSD", "buy", 10), "TRADING_BAD_VOLUME"),
        ("execution_event", OrderRequest("closed", "XAUUSD", "buy", 1), "MARKET_CLOSED"),
        ("error_res", OrderRequest("too-big", "EURUSD", "buy", 50_000_000), "NOT_ENOUGH_MONEY"),
    ],
)
def test_rejected_order_is_reported_as_rejected_with_its_reason(
    rejection_path: str, order: OrderRequest, code: str
) -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), rejection_path=rejection_path) as server:
        server.set_market_open("XAUUSD", False)
        with CTraderBroker(fast_config(server), FakeTokenProvider(server)) as broker:
            result = broker.submit_order(order)
            positions = broker.positions()

    assert result.status is OrderStatus.REJECTED
    assert code in (result.reason or "")
    assert result.fills == () and positions == ()
    assert len(server.requests_of_type(NEW_ORDER_REQ)) == 1  # a business rejection is never retried


def test_heartbeats_keep_the_session_alive_and_an_idle_drop_is_repaired_on_next_call() -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), idle_timeout_s=0.6) as server:
        tokens = FakeTokenProvider(server)
        with (
            CTraderBroker(fast_config(server, heartbeat_interval_s=0.15), tokens) as beating,
            CTraderBroker(fast_config(server, heartbeat_interval_s=None), tokens) as silent,
        ):
            beating.connect()
            silent.connect()
            time.sleep(1.5)
            assert server.idle_disconnects == 1  # only the silent client was dropped
            assert server.heartbeats_received >= 5

            assert (
                silent.submit_order(OrderRequest("after-idle", "EURUSD", "buy", 1_000)).status
                is OrderStatus.FILLED
            )
            assert beating.positions()[0].quantity == 1_000
            assert (beating.stats.connections, silent.stats.connections) == (1, 2)
            assert silent.stats.account_auths == 2  # re-authorised application and account after reconnecting


def test_the_client_paces_itself_below_the_server_limit() -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), max_requests_per_second=10) as server:
        config = fast_config(server, max_requests_per_second=8)
        with CTraderBroker(config, FakeTokenProvider(server)) as broker:
            for _ in range(12):
                broker.positions()
        assert server.blocked_responses == 0 and broker.stats.rate_limit_backoffs == 0


def test_an_unreachable_server_fails_after_the_configured_backoff(
    server: FakeCTraderServer, tokens: FakeTokenProvider
) -> None:
    url = server.url
    server.stop()
    config = fast_config(server, url=url, max_reconnect_attempts=3, reconnect_initial_delay_s=0.1)
    started = time.monotonic()
    with (
        CTraderBroker(config, tokens) as broker,
        pytest.raises(BrokerConnectionError, match="after 3 attempts"),
    ):
        broker.connect()
    assert time.monotonic() - started >= 0.1 + 0.2  # waited 0.1 s, then 0.2 s, between the attempts
