"""Orders, fills, positions and accounts: exactly-once order intents and idempotent fill accounting."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import Engine, func, select

from emp_pipeline.domain.costs import Costs
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import (
    ClientOrderIdConflictError,
    FillConflictError,
    InvalidOrderTransitionError,
    InvalidRegistryInputError,
    UnknownAccountError,
    UnknownOrderError,
    UnknownStrategyError,
)
from emp_pipeline.registry.models import Fill, Order
from emp_pipeline.registry.orders import (
    arm_protective_levels,
    create_order_if_absent,
    end_protective_levels,
    filled_quantities,
    fills_for_order,
    get_order,
    open_orders_and_resting_levels,
    orders_for_account,
    orders_with_fills,
    record_fill,
    rest_protective_levels,
    update_order_status,
)
from emp_pipeline.registry.positions import (
    account_and_positions,
    book_positions,
    get_account,
    get_or_create_paper_account,
    positions_for_account,
)
from emp_pipeline.registry.records import NewStrategy
from emp_pipeline.registry.research import record_evolution_run, record_strategies

BAR = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
AT = dt.datetime(2024, 3, 1, 21, 0, tzinfo=dt.UTC)


def paper_account(engine: Engine) -> int:
    with session_scope(engine) as session:
        return get_or_create_paper_account(session, initial_cash=100_000.0).id


def order(
    engine: Engine, account_id: int, client_order_id: str, side: str, quantity: float, symbol: str = "SPY"
):
    with session_scope(engine) as session:
        return create_order_if_absent(
            session,
            client_order_id=client_order_id,
            account_id=account_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            bar_time=BAR,
            target_position=quantity if side == "buy" else -quantity,
        )


def fill(engine: Engine, client_order_id: str, fill_id: str, price: float, quantity: float, fee: float = 0.0):
    with session_scope(engine) as session:
        return record_fill(
            session,
            client_order_id=client_order_id,
            broker_fill_id=fill_id,
            price=price,
            quantity=quantity,
            fee=fee,
            filled_at=AT,
        )


def test_paper_account_is_created_once(registry_engine: Engine) -> None:
    first = paper_account(registry_engine)
    with session_scope(registry_engine) as session:
        again = get_or_create_paper_account(session, initial_cash=5.0)
        assert again.id == first
        assert (again.broker, again.name, again.currency, again.initial_cash, again.cash) == (
            "paper",
            "paper",
            "USD",
            100_000.0,
            100_000.0,
        )
        assert get_or_create_paper_account(session, name="research").id != first
        with pytest.raises(UnknownAccountError):
            get_account(session, 999)


def test_order_intent_is_recorded_once_per_client_order_id(registry_engine: Engine) -> None:
    account_id = paper_account(registry_engine)
    created, was_created = order(registry_engine, account_id, "s1-SPY-20240301", "buy", 10)
    again, created_again = order(registry_engine, account_id, "s1-SPY-20240301", "buy", 10)

    assert (was_created, created_again) == (True, False)
    assert again == created
    assert (created.status, created.side, created.quantity, created.bar_time) == ("pending", "buy", 10.0, BAR)
    assert created.created_at.tzinfo is dt.UTC
    with pytest.raises(ClientOrderIdConflictError, match="derived from the order's identity"):
        order(registry_engine, account_id, "s1-SPY-20240301", "sell", 10)
    with pytest.raises(InvalidRegistryInputError, match=r"1\.\.50 characters"):
        order(registry_engine, account_id, "x" * 51, "buy", 1)
    with pytest.raises(InvalidRegistryInputError, match="positive"):
        order(registry_engine, account_id, "neg", "buy", -1)
    with pytest.raises(InvalidRegistryInputError, match="side"):
        order(registry_engine, account_id, "short", "short", 1)
    with pytest.raises(UnknownAccountError):
        order(registry_engine, 999, "no-account", "buy", 1)
    with session_scope(registry_engine) as session:
        with pytest.raises(InvalidRegistryInputError, match="naive"):
            create_order_if_absent(
                session,
                client_order_id="naive",
                account_id=account_id,
                symbol="SPY",
                side="buy",
                quantity=1,
                bar_time=dt.datetime(2024, 3, 1),
                target_position=1,
            )
        with pytest.raises(UnknownStrategyError):
            create_order_if_absent(
                session,
                client_order_id="ghost",
                account_id=account_id,
                symbol="SPY",
                side="buy",
                quantity=1,
                bar_time=BAR,
                target_position=1,
                strategy_id="ghost-strategy",
            )
        assert session.scalar(select(func.count()).select_from(Order)) == 1


def test_order_status_lifecycle(registry_engine: Engine) -> None:
    account_id = paper_account(registry_engine)
    order(registry_engine, account_id, "o1", "buy", 5)
    order(registry_engine, account_id, "o2", "sell", 5)
    with session_scope(registry_engine) as session:
        update_order_status(session, "o1", "submitted")
        accepted = update_order_status(session, "o1", "accepted", broker_order_id="B-17")
        assert (accepted.status, accepted.broker_order_id) == ("accepted", "B-17")
        assert accepted.updated_at >= accepted.created_at
        with pytest.raises(InvalidOrderTransitionError, match="go back from accepted to submitted"):
            update_order_status(session, "o1", "submitted")
        update_order_status(session, "o2", "unknown", error="timeout waiting for ack")
        update_order_status(session, "o2", "cancelled")
        with pytest.raises(InvalidOrderTransitionError, match="final"):
            update_order_status(session, "o2", "accepted")
        with pytest.raises(UnknownOrderError):
            update_order_status(session, "o3", "accepted")
        assert [o.client_order_id for o in orders_for_account(session, account_id, ["accepted"])] == ["o1"]
        assert get_order(session, "o2").error == "timeout waiting for ack"


def test_fills_update_position_cash_and_order_status_once(registry_engine: Engine) -> None:
    account_id = paper_account(registry_engine)
    order(registry_engine, account_id, "buy-20", "buy", 20)
    order(registry_engine, account_id, "sell-25", "sell", 25)

    assert fill(registry_engine, "buy-20", "F1", 100.0, 10, fee=1.0)[1]
    with session_scope(registry_engine) as session:
        assert get_order(session, "buy-20").status == "partially_filled"
    fill(registry_engine, "buy-20", "F2", 110.0, 10, fee=1.0)
    replay, created = fill(registry_engine, "buy-20", "F2", 110.0, 10, fee=1.0)
    assert not created and replay.price == 110.0
    with session_scope(registry_engine) as session:
        assert get_order(session, "buy-20").status == "filled"
        [long] = positions_for_account(session, account_id)
    assert (long.symbol, long.quantity, long.avg_price, long.realised_pnl) == ("SPY", 20.0, 105.0, -2.0)

    fill(registry_engine, "sell-25", "F3", 120.0, 15, fee=1.0)  # closes 15 of 20 at +15 each
    with session_scope(registry_engine) as session:
        [reduced] = positions_for_account(session, account_id)
    assert (reduced.quantity, reduced.avg_price) == (5.0, 105.0)
    assert reduced.realised_pnl == pytest.approx(-2.0 - 1.0 + 15 * 15.0)

    fill(registry_engine, "sell-25", "F4", 100.0, 10)  # closes 5 at -5 each, opens 5 short at 100
    with session_scope(registry_engine) as session:
        [short] = positions_for_account(session, account_id)
        account = get_account(session, account_id)
        assert [f.broker_fill_id for f in fills_for_order(session, "sell-25")] == ["F3", "F4"]
        assert get_order(session, "sell-25").status == "filled"
    assert (short.quantity, short.avg_price) == (-5.0, 100.0)
    assert short.realised_pnl == pytest.approx(222.0 - 25.0)
    assert account.cash == pytest.approx(100_000.0 - 1001.0 - 1101.0 + 1799.0 + 1000.0)

    with pytest.raises(FillConflictError, match="reused fill id"):
        fill(registry_engine, "buy-20", "F2", 111.0, 10, fee=1.0)
    with pytest.raises(UnknownOrderError):
        fill(registry_engine, "nope", "F9", 1.0, 1)
    with pytest.raises(InvalidRegistryInputError):
        fill(registry_engine, "buy-20", "F9", 0.0, 1)
    with session_scope(registry_engine) as session:
        assert session.scalar(select(func.count()).select_from(Fill)) == 4


def test_flat_positions_are_listed_only_on_request(registry_engine: Engine) -> None:
    account_id = paper_account(registry_engine)
    order(registry_engine, account_id, "open", "buy", 3, symbol="EURUSD")
    order(registry_engine, account_id, "close", "sell", 3, symbol="EURUSD")
    fill(registry_engine, "open", "G1", 1.10, 3)
    fill(registry_engine, "close", "G2", 1.12, 3)
    with session_scope(registry_engine) as session:
        assert positions_for_account(session, account_id) == []
        [flat] = positions_for_account(session, account_id, include_flat=True)
    assert (flat.quantity, flat.avg_price) == (0.0, 0.0)
    assert flat.realised_pnl == pytest.approx(0.06)


def test_an_account_is_read_with_its_open_positions_in_one_statement(registry_engine: Engine) -> None:
    account_id = paper_account(registry_engine)
    with session_scope(registry_engine) as session:
        assert account_and_positions(session, account_id) == (get_account(session, account_id), [])
    order(registry_engine, account_id, "spy", "buy", 2)
    order(registry_engine, account_id, "eur", "sell", 3, symbol="EURUSD")
    order(registry_engine, account_id, "eur-back", "buy", 3, symbol="EURUSD")
    for client_order_id, fill_id in (("spy", "H1"), ("eur", "H2"), ("eur-back", "H3")):
        fill(registry_engine, client_order_id, fill_id, 100.0, 2 if client_order_id == "spy" else 3)
    with session_scope(registry_engine) as session:
        account, positions = account_and_positions(session, account_id)
        assert account == get_account(session, account_id) and account.cash == 100_000.0 - 200.0
        assert positions == positions_for_account(session, account_id)  # the flat EURUSD left out
        with pytest.raises(UnknownAccountError):
            account_and_positions(session, account_id + 1)


# --------------------------------------------------------------------------------------- two processes


def _create_orders_in_process(url: str, account_id: int, ids: list[str], barrier: Barrier, results) -> None:
    engine = make_engine(url)
    outcomes = []
    barrier.wait(timeout=30)
    for client_order_id in ids:
        with session_scope(engine) as session:
            record, created = create_order_if_absent(
                session,
                client_order_id=client_order_id,
                account_id=account_id,
                symbol="SPY",
                side="buy",
                quantity=1.0,
                bar_time=BAR,
                target_position=1.0,
            )
            time.sleep(0.002)  # hold the transaction open so the other process collides with it
        outcomes.append((client_order_id, record.id, created))
    engine.dispose()
    results.put(outcomes)


def _fill_orders_in_process(
    url: str, client_order_ids: list[str], prefix: str, barrier: Barrier, results
) -> None:
    engine = make_engine(url)
    barrier.wait(timeout=30)
    for n, client_order_id in enumerate(client_order_ids):
        with session_scope(engine) as session:
            record_fill(
                session,
                client_order_id=client_order_id,
                broker_fill_id=f"{prefix}-{n}",
                price=100.0 + n,
                quantity=1.0,
                filled_at=AT,
            )
    engine.dispose()
    results.put(len(client_order_ids))


def _run_in_two_processes(target, args_per_process) -> list:
    # fork keeps the test fast (no re-import); each child builds its own engine and never touches the parent's
    # pooled connections, and multiprocessing ends forked children with os._exit, so those stay intact.
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(args_per_process))
    results = context.Queue()
    processes = [context.Process(target=target, args=(*args, barrier, results)) for args in args_per_process]
    for process in processes:
        process.start()
    outputs = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outputs


def test_concurrent_create_order_if_absent_from_two_processes_gives_one_row(
    migrated_registry_url: str, registry_engine: Engine
) -> None:
    account_id = paper_account(registry_engine)
    ids = [f"race-{n}" for n in range(25)]

    first, second = _run_in_two_processes(
        _create_orders_in_process,
        [(migrated_registry_url, account_id, ids), (migrated_registry_url, account_id, ids)],
    )

    created = [client_id for client_id, _, was_created in first + second if was_created]
    assert sorted(created) == sorted(ids)  # each intent created by exactly one of the two processes
    assert [row_id for _, row_id, _ in first] == [row_id for _, row_id, _ in second]
    with session_scope(registry_engine) as session:
        assert session.scalar(select(func.count()).select_from(Order)) == len(ids)


def test_concurrent_fills_on_one_symbol_serialise_the_position(
    migrated_registry_url: str, registry_engine: Engine
) -> None:
    account_id = paper_account(registry_engine)
    for name in ("a", "b"):
        for n in range(15):
            order(registry_engine, account_id, f"{name}{n}", "buy", 1.0)

    _run_in_two_processes(
        _fill_orders_in_process,
        [
            (migrated_registry_url, [f"a{n}" for n in range(15)], "A"),
            (migrated_registry_url, [f"b{n}" for n in range(15)], "B"),
        ],
    )

    with session_scope(registry_engine) as session:
        [position] = positions_for_account(session, account_id)
        account = get_account(session, account_id)
    assert position.quantity == 30.0  # a lost update would leave fewer units
    assert position.avg_price == pytest.approx(2 * sum(100.0 + n for n in range(15)) / 30)
    assert account.cash == pytest.approx(100_000.0 - 2 * sum(100.0 + n for n in range(15)))


OPEN = ("pending", "submitted", "accepted", "partially_filled")


def _strategy(engine: Engine) -> str:
    with session_scope(engine) as session:
        run_id = record_evolution_run(
            session, period="2024-01", train_start=dt.date(2020, 1, 1), train_end=dt.date(2023, 12, 31),
            embargo_days=5, seed=1, config={}, costs=Costs(),
        )  # fmt: skip
        seed = NewStrategy(
            {"version": 1, "direction": "long"}, 1, generation=0, operator="seed", fitness=None
        )
        (strategy_id,) = record_strategies(session, run_id, [seed])
    return strategy_id


def _fill_at(engine: Engine, client_order_id: str, quantity: float, hours: int) -> None:
    with session_scope(engine) as session:
        record_fill(
            session, client_order_id=client_order_id, broker_fill_id=f"F-{client_order_id}-{hours}",
            price=100.0 + hours, quantity=quantity, filled_at=AT + dt.timedelta(hours=hours),
        )  # fmt: skip


def test_books_and_resting_levels_are_read_in_one_statement_each(registry_engine: Engine) -> None:
    """What a paper catch-up reads: open orders with every resting level (the position it protects, the
    entry's first fill), each strategy's position per symbol, and orders with their fills; a book is
    (strategy, symbol)."""
    account_id = paper_account(registry_engine)
    strategy_id = _strategy(registry_engine)
    order(registry_engine, account_id, "entry", "buy", 10)  # the strategy-less book in SPY
    with session_scope(registry_engine) as session:
        create_order_if_absent(
            session, client_order_id="other-book", account_id=account_id, strategy_id=strategy_id,
            symbol="SPY", side="buy", quantity=5.0, bar_time=BAR, target_position=5.0,
        )  # fmt: skip
        levels = {"client_order_id": "entry", "account_id": account_id, "stop_distance": 2.0}
        rested = [rest_protective_levels(session, **levels, take_profit_distance=None) for _ in range(2)]
        ([pending_entry, pending_other], (waiting,)) = open_orders_and_resting_levels(
            session, account_id, OPEN
        )
    assert rested == [True, False]  # kept once
    assert (pending_entry.client_order_id, pending_other.client_order_id) == ("entry", "other-book")
    assert waiting.entry == pending_entry
    assert (waiting.position, waiting.entry_price, waiting.entry_filled_at) == (None, None, None)

    _fill_at(registry_engine, "entry", 4, hours=1)
    _fill_at(registry_engine, "entry", 6, hours=0)  # reported late, filled first
    _fill_at(registry_engine, "other-book", 5, hours=2)
    with session_scope(registry_engine) as session:
        arm_protective_levels(session, "entry", 10.0)
        ([], (armed,)) = open_orders_and_resting_levels(session, account_id, OPEN)
        assert book_positions(session, account_id, ["SPY", "QQQ"]) == {
            (None, "SPY"): 10.0,
            (strategy_id, "SPY"): 5.0,
        }
    assert (armed.entry.status, armed.stop_distance, armed.take_profit_distance) == ("filled", 2.0, None)
    assert (armed.position, armed.entry_price, armed.entry_filled_at) == (10.0, 100.0, AT)

    order(registry_engine, account_id, "exit", "sell", 10)
    _fill_at(registry_engine, "exit", 3, hours=3)
    with session_scope(registry_engine) as session:
        assert book_positions(session, account_id, ["SPY"])[(None, "SPY")] == 7.0
        entry_id, exit_id = (get_order(session, name).id for name in ("entry", "exit"))
        assert filled_quantities(session, [entry_id, exit_id]) == {entry_id: 10.0, exit_id: 3.0}
        read = orders_with_fills(session, ["exit", "entry", "ghost"])
        assert set(read) == {"entry", "exit"}
        assert [f.broker_fill_id for f in read["entry"][1]] == ["F-entry-0", "F-entry-1"]
        assert read["exit"][0].status == "partially_filled"
        end_protective_levels(session, ["entry"])
        assert open_orders_and_resting_levels(session, account_id, OPEN)[1] == []
