"""A bar's paper orders sent as one batch by two processes at once: each order is recorded and filled once
(SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing

import pandas as pd
from sqlalchemy import Engine

from emp_pipeline.broker.interface import OrderRequest, OrderStatus
from emp_pipeline.broker.paper import BarFrameOpens, PaperBroker
from emp_pipeline.domain.costs import Costs
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.orders import create_order_if_absent, orders_for_account, orders_with_fills
from emp_pipeline.registry.positions import positions_for_account

DAYS = pd.date_range("2024-03-04", periods=3, freq="D", tz="UTC")
COSTS = Costs(fee_bps=2.0, slippage_bps=5.0)
BARS = pd.DataFrame(
    {
        "date": list(DAYS) * 2,
        "symbol": ["EURUSD"] * 3 + ["GBPUSD"] * 3,
        "open": [1.08, 1.09, 1.10, 1.26, 1.27, 1.28],
        "high": [1.09, 1.10, 1.11, 1.27, 1.28, 1.29],
        "low": [1.07, 1.08, 1.09, 1.25, 1.26, 1.27],
    }
)
BATCH = [
    OrderRequest("due", "EURUSD", "buy", 5_000),  # sent on day 1, sent again: fills at day 2's open
    OrderRequest("new-eu", "EURUSD", "sell", 2_000, relative_stop_loss=0.05),
    OrderRequest("new-gb", "GBPUSD", "buy", 3_000),
]


def _submit_in_process(url: str, barrier, results) -> None:
    engine = make_engine(url)
    broker = PaperBroker(engine, BarFrameOpens(BARS), costs=COSTS)
    barrier.wait(timeout=30)
    answers = broker.submit_orders(BATCH)
    engine.dispose()
    results.put([(a.client_order_id, a.status.value, len(a.fills)) for a in answers])


def _in_two_processes(target, url: str) -> list:
    """``target(url, barrier, results)`` in two forked processes released together (as
    test_registry_orders: each child its own engine); what each put on ``results``."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=target, args=(url, barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return answers


def test_two_processes_sending_one_batch_record_and_fill_each_order_once(
    migrated_registry_url: str, registry_engine: Engine
) -> None:
    first_day = BARS.loc[BARS["date"] == DAYS[0]]
    PaperBroker(registry_engine, BarFrameOpens(first_day), costs=COSTS).submit_order(BATCH[0])  # accepted
    broker = PaperBroker(registry_engine, BarFrameOpens(BARS), costs=COSTS)

    answers = _in_two_processes(_submit_in_process, migrated_registry_url)

    expected = [("due", "filled", 1), ("new-eu", "accepted", 0), ("new-gb", "accepted", 0)]
    assert answers == [expected, expected]
    with session_scope(registry_engine) as session:
        orders = orders_for_account(session, broker.account_id)
        stored = orders_with_fills(session, [order.client_order_id for order in orders])
        held = {p.symbol: p.quantity for p in positions_for_account(session, broker.account_id)}
    assert sorted(stored) == ["due", "new-eu", "new-gb"]
    assert {cid: len(fills) for cid, (_, fills) in stored.items()} == {"due": 1, "new-eu": 0, "new-gb": 0}
    assert stored["new-eu"][0].target_position == 5_000 - 2_000  # after "due" filled, in either process
    assert stored["due"][0].status == OrderStatus.FILLED.value
    assert held == {"EURUSD": 5_000.0}


def _submit_recorded_in_process(url: str, barrier, results) -> None:
    engine = make_engine(url)
    broker = PaperBroker(engine, BarFrameOpens(BARS), costs=COSTS)
    barrier.wait(timeout=30)
    try:
        answer = broker.submit_order(BATCH[0])
        results.put((answer.status.value, len(answer.fills)))
    except Exception as error:  # the parent asserts on what the child saw
        results.put((type(error).__name__, str(error)))
    finally:
        engine.dispose()


def test_two_processes_submitting_an_order_the_live_job_recorded_both_get_its_fill(
    migrated_registry_url: str, registry_engine: Engine
) -> None:
    """The live job records an order pending before it submits it; two runs submitting it at once must both
    answer with its one fill (the slower one used to try to move the filled order back to accepted)."""
    broker = PaperBroker(registry_engine, BarFrameOpens(BARS), costs=COSTS)
    with session_scope(registry_engine) as session:
        create_order_if_absent(
            session,
            client_order_id="due",
            account_id=broker.account_id,
            symbol="EURUSD",
            side="buy",
            quantity=5_000,
            bar_time=DAYS[0].to_pydatetime(),
            target_position=5_000,
        )
    answers = _in_two_processes(_submit_recorded_in_process, migrated_registry_url)
    assert answers == [("filled", 1), ("filled", 1)]
    with session_scope(registry_engine) as session:
        (_, fills) = orders_with_fills(session, ["due"])["due"]
    assert len(fills) == 1
