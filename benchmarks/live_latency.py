"""Live-execution latency: how long from submitting an order to knowing it filled.

Measured against the local cTrader protocol server (the real one is not reachable from here), so the figures
are our client's own overhead plus loopback round trips: request framing, clientMsgId matching, the
duplicate check before sending (Reconcile + OrderList), and the ACCEPTED -> FILLED events. Each figure is a
median over repeated runs; the machine is shared, so expect noise.

Add a figure by adding a function to MEASUREMENTS that returns its samples in milliseconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # emp_pipeline_tests.fakes is not installed

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.broker.interface import OrderRequest, OrderStatus
from emp_pipeline_tests.fakes.ctrader_server import FakeCTraderServer, FakeTokenProvider

ACCOUNT = 4242
WARM_ORDERS = 200
COLD_CONNECTIONS = 20


def _config(server: FakeCTraderServer) -> CTraderConfig:
    return CTraderConfig(
        url=server.url,
        client_id=server.client_id,
        client_secret=server.client_secret,
        account_id=ACCOUNT,
        allow_plaintext_loopback=True,
        max_requests_per_second=1_000.0,  # measure the client, not the pacing
    )


def _filled(broker: CTraderBroker, client_order_id: str) -> None:
    result = broker.submit_order(OrderRequest(client_order_id, "EURUSD", "buy", 1_000))
    if result.status is not OrderStatus.FILLED:
        raise RuntimeError(f"benchmark order {client_order_id} ended {result.status}: {result.reason}")


def order_filled_ms(server: FakeCTraderServer, tokens: FakeTokenProvider) -> list[float]:
    """Submit on an authorised session until the fill is known (duplicate check included)."""
    samples = []
    with CTraderBroker(_config(server), tokens) as broker:
        _filled(broker, "warmup")
        for i in range(WARM_ORDERS):
            started = time.perf_counter()
            _filled(broker, f"warm-{i}")
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def connect_to_filled_ms(server: FakeCTraderServer, tokens: FakeTokenProvider) -> list[float]:
    """A fresh process's first order: connect, app and account auth, symbol lookup, submit, filled."""
    samples = []
    for i in range(COLD_CONNECTIONS):
        started = time.perf_counter()
        with CTraderBroker(_config(server), tokens) as broker:
            _filled(broker, f"cold-{i}")
            samples.append((time.perf_counter() - started) * 1000)
    return samples


MEASUREMENTS: dict[str, Callable[[FakeCTraderServer, FakeTokenProvider], list[float]]] = {
    "order_filled_ms": order_filled_ms,
    "connect_to_filled_ms": connect_to_filled_ms,
}


def main() -> None:
    headline: dict[str, float] = {}
    with FakeCTraderServer(account_ids=(ACCOUNT,), max_requests_per_second=10_000) as server:
        tokens = FakeTokenProvider(server)
        for name, measure in MEASUREMENTS.items():
            samples = sorted(measure(server, tokens))
            p95 = samples[int(0.95 * (len(samples) - 1))]
            print(f"# {name}: n={len(samples)} median={statistics.median(samples):.2f} p95={p95:.2f} ms")
            headline[name] = statistics.median(samples)
    for name, value in headline.items():
        print(f"{name}={value:.2f}")


if __name__ == "__main__":
    main()
