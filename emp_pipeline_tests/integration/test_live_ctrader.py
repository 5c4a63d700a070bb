"""The live execution job through real Dagster runs against the local cTrader server and a real PostgreSQL.

Each test gets a fresh PostgreSQL registry, a local cTrader Open API server (JSON over WebSocket) and a token
provider object that asks that server for tokens. What is asserted is what the broker saw: how many orders
arrived, under which client order ids.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.broker.interface import (
    BrokerConnectionError,
    OrderRequest,
    OrderResult,
    Position,
    ReconcileReport,
)
from emp_pipeline.defs.live.job import live_execution_job
from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.live.commands import kill_switch_command
from emp_pipeline.live.journal import LiveJournal
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.orders import create_order_if_absent, get_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_account, positions_for_account
from emp_pipeline.registry.research import active_strategies
from emp_pipeline_tests.fakes.ctrader_server import FakeCTraderServer, FakeTokenProvider
from emp_pipeline_tests.live_setup import make_market, prepare_registry, write_frames

pytestmark = pytest.mark.postgres

ACCOUNT = 4242
SYMBOLS = ("EURUSD", "USDJPY")
CLIENT_ID, CLIENT_SECRET = "fake-client-id", "fake-client-secret"  # the local server's defaults


class DelegatingBroker:
    """A CTraderBroker seen through hooks: a slow network before a send, or an answer lost after it."""

    def __init__(self, inner: CTraderBroker, before_send=None, lose_answer: bool = False) -> None:
        self.inner = inner
        self.before_send = before_send
        self.lose_answer = lose_answer

    def submit_order(self, request: OrderRequest) -> OrderResult:
        if self.before_send is not None:
            self.before_send()
        result = self.inner.submit_order(request)
        if self.lose_answer:
            raise BrokerConnectionError(f"connection lost after sending {request.client_order_id}")
        return result

    def order_status(self, client_order_id: str) -> OrderResult:
        return self.inner.order_status(client_order_id)

    def positions(self) -> tuple[Position, ...]:
        return self.inner.positions()

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        return self.inner.reconcile(client_order_ids)

    def close(self) -> None:
        self.inner.close()


class StaticTokens:
    """A token provider holding one token the local server issued (for a run in another process)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_access_token(self) -> str:
        return self.token

    def force_refresh(self, rejected_access_token: str) -> str:
        return self.token


class LocalCTraderBroker:
    """Stands in for LiveBrokerResource(kind="ctrader"): same `open` contract, aimed at the local server."""

    def __init__(self, url: str, tokens, **hooks) -> None:
        self.url = url
        self.tokens = tokens
        self.hooks = hooks

    @classmethod
    def for_server(cls, server: FakeCTraderServer, **hooks) -> LocalCTraderBroker:
        return cls(server.url, FakeTokenProvider(server), **hooks)

    @contextmanager
    def open(self, engine, data_dir, as_of=None) -> Iterator[tuple[DelegatingBroker, int]]:
        assert as_of is None  # the live job replays no history against a real broker
        config = CTraderConfig(
            url=self.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            account_id=ACCOUNT,
            allow_plaintext_loopback=True,
            heartbeat_interval_s=None,
            request_timeout_s=5.0,
            fill_timeout_s=5.0,
            reconcile_settle_s=0.0,
        )
        with session_scope(engine) as session:
            account = get_or_create_account(
                session, broker="ctrader", name=str(ACCOUNT), currency="USD", initial_cash=100_000.0
            )
        with CTraderBroker(config, self.tokens) as broker:
            yield DelegatingBroker(broker, **self.hooks), account.id


@pytest.fixture(scope="module")
def market():
    return make_market(symbols=SYMBOLS, start_price=1.0, volume_step=1000.0)


@pytest.fixture
def server() -> Iterator[FakeCTraderServer]:
    with FakeCTraderServer(account_ids=(ACCOUNT,)) as running:
        yield running


@pytest.fixture
def book(tmp_path, postgres_url, market):
    data_dir = tmp_path / "data"
    prepare_registry(postgres_url, market)
    decision_bar = market.dates[-1]
    write_frames(data_dir, market, until=decision_bar)
    return postgres_url, data_dir, decision_bar


def _run(book, live_broker, **config):
    database_url, data_dir, decision_bar = book
    resources = {
        "database": DatabaseResource(url=database_url),
        "lake": DataLakeResource(base_dir=str(data_dir)),
        "live_broker": live_broker,
        "risk_limits": RiskLimitsResource(),
    }
    run_config = {
        "ops": {"execute_live_tick": {"config": {"start_date": str(decision_bar.date()), **config}}}
    }
    return live_execution_job.execute_in_process(
        run_config=run_config, resources=resources, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )


def _registry_orders(database_url):
    engine = shared_engine(database_url)
    with session_scope(engine) as session:
        account = get_or_create_account(
            session, broker="ctrader", name=str(ACCOUNT), currency="USD", initial_cash=100_000.0
        )
        orders = orders_for_account(session, account.id)
        positions = {p.symbol: p.quantity for p in positions_for_account(session, account.id)}
    return account, orders, positions


def _metadata(result) -> dict[str, object]:
    (output,) = [event for event in result.all_node_events if event.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def _server_order_ids(server: FakeCTraderServer) -> list[str]:
    return [order["clientOrderId"] for order in server.orders]


def test_kill_switch_on_sends_no_order(book, server):
    assert kill_switch_command(book[0], "on", io.StringIO(), reason="incident") == 0
    result = _run(book, LocalCTraderBroker.for_server(server))
    assert result.success
    assert _server_order_ids(server) == []
    account, orders, _ = _registry_orders(book[0])
    assert orders == []
    journal = LiveJournal(book[1], account.id).decisions()
    assert len(journal) == 2 and journal["reason"].str.contains("kill switch is on").all()


def test_the_same_bar_run_twice_sends_one_order_per_decision(book, server):
    first = _run(book, LocalCTraderBroker.for_server(server))
    assert first.success
    sent = _server_order_ids(server)
    assert len(sent) == 2
    second = _run(book, LocalCTraderBroker.for_server(server))
    assert second.success
    assert _server_order_ids(server) == sent  # nothing new reached the broker
    _, orders, positions = _registry_orders(book[0])
    assert sorted(o.client_order_id for o in orders) == sorted(sent)
    assert {o.status for o in orders} == {"filled"}
    for order in orders:
        assert positions[order.symbol] == order.quantity and order.quantity % 1000 == 0
    # The broker's SL/TP came from the kernel's ATR levels (relative distances on the order).
    assert all("relativeStopLoss" in o and "relativeTakeProfit" in o for o in server.orders)


def test_a_concurrent_duplicate_run_sends_each_order_once(book, server, tmp_path):
    """Two runs of the same bar at once, in two processes as Dagster launches them; one is slow to send."""
    database_url, data_dir, decision_bar = book
    release = tmp_path / "release"
    slow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emp_pipeline_tests.integration.test_live_ctrader",
            database_url,
            str(data_dir),
            str(decision_bar.date()),
            server.url,
            server.issue_access_token(),
            str(release),
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the slow run has recorded its first order and is held before sending it.
        deadline = time.monotonic() + 60
        while not _registry_orders(database_url)[1] and time.monotonic() < deadline and slow.poll() is None:
            time.sleep(0.05)
        fast = _run(book, LocalCTraderBroker.for_server(server), stale_order_seconds=600.0)
    finally:
        release.touch()
        slow_output, _ = slow.communicate(timeout=120)
    assert slow.returncode == 0, slow_output
    assert fast.success
    # The fast run found the slow run's first order in flight, counted it, and decided only the other one;
    # the slow run then found that one already filled and sent only its own.
    assert _metadata(fast)["orders_decided"] == 1 and _metadata(fast)["orders_reconciled"] == 1
    assert json.loads(slow_output.strip().splitlines()[-1])["orders_decided"] == 2
    sent = _server_order_ids(server)
    assert len(sent) == 2 and len(set(sent)) == 2  # one order per decision, whoever sent it
    _, orders, positions = _registry_orders(database_url)
    assert len(orders) == 2 and {o.status for o in orders} == {"filled"}
    assert all(positions[o.symbol] == o.quantity for o in orders)


def test_an_order_whose_answer_was_lost_is_reconciled_not_resent(book, server):
    lost = _run(book, LocalCTraderBroker.for_server(server, lose_answer=True))
    assert not lost.success  # the run fails loudly (and the failure sensor alerts)
    failure = lost.failure_data_for_node("execute_live_tick").error.message
    assert "reconciled by the next run" in failure and "connection lost after sending" in failure
    sent = _server_order_ids(server)
    assert len(sent) == 2  # both reached the broker, their answers did not reach us
    _, orders, positions = _registry_orders(book[0])
    assert {o.status for o in orders} == {"unknown"} and not positions

    recovered = _run(book, LocalCTraderBroker.for_server(server))
    assert recovered.success
    assert _server_order_ids(server) == sent  # reconciled by client order id, not resent
    _, orders, positions = _registry_orders(book[0])
    assert {o.status for o in orders} == {"filled"}
    assert all(positions[o.symbol] == o.quantity for o in orders)


def _slow_run_in_this_process(argv: list[str]) -> None:
    """The slow side of the concurrent test: a live run whose sends wait for the release file."""
    database_url, data_dir, start_date, url, token, release = argv

    def wait_for_release() -> None:
        deadline = time.monotonic() + 60
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    live_broker = LocalCTraderBroker(url, StaticTokens(token), before_send=wait_for_release)
    result = _run((database_url, Path(data_dir), pd.Timestamp(start_date, tz="UTC")), live_broker)
    if not result.success:
        raise SystemExit("slow run failed")
    print(json.dumps({"orders_decided": _metadata(result)["orders_decided"]}))


if __name__ == "__main__":
    _slow_run_in_this_process(sys.argv[1:])


def test_an_order_of_an_earlier_bar_that_never_reached_the_broker_lapses(book, server):
    database_url, _, decision_bar = book
    engine = shared_engine(database_url)
    account = _registry_orders(database_url)[0]
    with session_scope(engine) as session:
        (strategy,) = active_strategies(session)
        create_order_if_absent(  # recorded, then the process died before sending it
            session,
            client_order_id="emp-crashed-before-send",
            account_id=account.id,
            strategy_id=strategy.id,
            symbol="EURUSD",
            side="buy",
            quantity=5_000.0,
            bar_time=(decision_bar - pd.Timedelta(days=1)).to_pydatetime(),
            target_position=5_000.0,
        )
    result = _run(book, LocalCTraderBroker.for_server(server), stale_order_seconds=0.0)
    assert result.success
    with session_scope(engine) as session:
        lapsed = get_order(session, "emp-crashed-before-send")
    assert lapsed.status == "cancelled" and "never reached the broker" in lapsed.error
    assert "emp-crashed-before-send" not in _server_order_ids(server)
    # No longer counted as in flight: the current bar's entries go out for both symbols.
    assert len(_server_order_ids(server)) == 2 and _metadata(result)["orders_decided"] == 2
    current = [o for o in _registry_orders(database_url)[1] if o.client_order_id != "emp-crashed-before-send"]
    assert all(o.quantity == o.target_position and o.status == "filled" for o in current)
