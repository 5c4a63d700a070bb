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


# --- in-process live decision (emp_pipeline/live): signal + target + risk + order, no I/O ---
IN_PROCESS_REPEATS = 30
IN_PROCESS_INSTRUMENTS = 10
IN_PROCESS_STRATEGIES = 3
IN_PROCESS_LIVE_BARS = 250  # bars replayed since the strategies started trading (the kernel state)


def in_process_ms(server: FakeCTraderServer, tokens: FakeTokenProvider) -> list[float]:
    """One live tick's computation for 3 champions on 10 instruments: genome signals over the stored history,
    the kernel state replayed over the last 250 bars, targets, order diff, risk checks and order requests.
    Data are already in memory (loading Parquet and the broker round trips are measured elsewhere)."""
    from dataclasses import replace

    import pandas as pd

    from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
    from emp_pipeline.domain.genome import Condition
    from emp_pipeline.domain.risk import AccountSnapshot, ProposedOrder, RiskLimits, check_orders
    from emp_pipeline.live.engine import MarketView, StrategyBook, decide_orders, order_request
    from emp_pipeline_tests.live_setup import ALWAYS_LONG, make_market

    symbols = tuple(f"SYN{i:02d}" for i in range(IN_PROCESS_INSTRUMENTS))
    market = make_market(symbols=symbols)
    last = market.dates[-1]
    closes = market.bars.loc[market.bars["date"] == last].set_index("symbol")["close"].to_dict()
    start = market.dates[-IN_PROCESS_LIVE_BARS]
    books = [
        StrategyBook(
            f"s{k}",
            replace(
                ALWAYS_LONG,
                direction="both",
                long_entry=Condition("what_log_return_1", ">", 0.001 * k),
                short_entry=Condition("what_log_return_1", "<", -0.001 * k),
            ),
            pd.Timestamp(start),
            Costs(),
        )
        for k in range(IN_PROCESS_STRATEGIES)
    ]
    instruments = {meta.symbol: meta for meta in market.instruments}
    snapshot = AccountSnapshot(DEFAULT_CAPITAL, DEFAULT_CAPITAL, False, {}, closes)
    samples = []
    for _ in range(IN_PROCESS_REPEATS):
        started = time.perf_counter()
        view = MarketView(market.bars, market.features, market.regimes, last, closes)  # panel built per tick
        intents = []
        for book in books:
            intents.extend(decide_orders(book, view, {}, instruments, DEFAULT_CAPITAL)[0])
        proposed = [ProposedOrder(i.client_order_id, i.symbol, i.signed_quantity) for i in intents]
        decisions = check_orders(proposed, snapshot, RiskLimits())
        requests = [
            order_request(intent, "buy" if d.approved_quantity > 0 else "sell", abs(d.approved_quantity))
            for intent, d in zip(intents, decisions, strict=True)
            if d.approved_quantity
        ]
        samples.append((time.perf_counter() - started) * 1000)
    print(f"# in_process: {len(intents)} orders decided, {len(requests)} approved per tick")
    return samples


# --- end in-process live decision ---


MEASUREMENTS: dict[str, Callable[[FakeCTraderServer, FakeTokenProvider], list[float]]] = {
    "order_filled_ms": order_filled_ms,
    "connect_to_filled_ms": connect_to_filled_ms,
    "in_process_ms": in_process_ms,
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
