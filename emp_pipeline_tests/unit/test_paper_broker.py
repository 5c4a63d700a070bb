"""The paper broker: next-open fills with the backtest's costs, state in a real (SQLite) registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.interface import Broker, BrokerError, OrderRequest, OrderStatus
from emp_pipeline.broker.paper import (
    BarFrameOpens,
    PaperBroker,
    protective_exit_id,
)
from emp_pipeline.domain.backtest import MarketArrays, simulate_strategy
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import ClientOrderIdConflictError
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.models import PaperProtectiveLevels
from emp_pipeline.registry.orders import create_order_if_absent, record_fill
from emp_pipeline.registry.positions import get_account

DAYS = pd.date_range("2024-03-04", periods=4, freq="D", tz="UTC")
OPENS = {"EURUSD": [1.0800, 1.0900, 1.1000, 1.1100], "SPY": [500.0, np.nan, 510.0, 520.0]}
COSTS = Costs(fee_bps=2.0, slippage_bps=5.0)


def bars(until: int = len(DAYS)) -> pd.DataFrame:
    """Narrow bars (high/low 0.1 % from the open): no order here carries a stop or take profit anyway."""
    rows = [
        {
            "date": day,
            "symbol": symbol,
            "open": opens[i],
            "high": opens[i] * 1.001,
            "low": opens[i] * 0.999,
            "close": opens[i],
        }
        for symbol, opens in OPENS.items()
        for i, day in enumerate(DAYS[:until])
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "template.sqlite"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def engine(migrated_template: Path, tmp_path: Path) -> Iterator[Engine]:
    path = tmp_path / "registry.sqlite"
    path.write_bytes(migrated_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def account_cash(engine: Engine, broker: PaperBroker) -> float:
    with session_scope(engine) as session:
        return get_account(session, broker.account_id).cash


def test_an_order_waits_for_the_next_bar_then_fills_at_its_open_with_slippage_and_fee(engine: Engine) -> None:
    today = PaperBroker(engine, BarFrameOpens(bars(until=2)), costs=COSTS)
    placed = today.submit_order(OrderRequest("eu-1", "EURUSD", "buy", 10_000))
    assert placed.status is OrderStatus.ACCEPTED and placed.fills == ()
    assert today.positions() == ()

    tomorrow = PaperBroker(engine, BarFrameOpens(bars(until=3)), costs=COSTS)
    filled = tomorrow.order_status("eu-1")

    price = 1.1000 * (1 + 5 / 10_000)  # day 3 open, 5 bps against the buyer
    fee = 10_000 * price * 2 / 10_000
    assert filled.status is OrderStatus.FILLED
    assert filled.average_price == pytest.approx(price, rel=1e-12)
    assert filled.total_fee == pytest.approx(fee, rel=1e-12)
    assert filled.fills[0].filled_at == DAYS[2].to_pydatetime()
    assert [(p.symbol, p.quantity) for p in tomorrow.positions()] == [("EURUSD", 10_000)]
    assert account_cash(engine, tomorrow) == pytest.approx(100_000 - 10_000 * price - fee)


def test_an_order_recorded_by_the_caller_fills_after_its_own_bar_and_sells_receive_less(
    engine: Engine,
) -> None:
    broker = PaperBroker(engine, BarFrameOpens(bars()), costs=COSTS)
    with session_scope(engine) as session:
        create_order_if_absent(
            session, client_order_id="eu-short", account_id=broker.account_id, symbol="EURUSD", side="sell",
            quantity=5_000, bar_time=DAYS[0].to_pydatetime(), target_position=-5_000,
        )  # fmt: skip

    result = broker.submit_order(OrderRequest("eu-short", "EURUSD", "sell", 5_000))

    assert result.status is OrderStatus.FILLED
    assert result.average_price == pytest.approx(1.0900 * (1 - 5 / 10_000), rel=1e-12)  # day 2, not day 4
    assert broker.positions()[0].quantity == -5_000


def test_a_bar_without_an_open_is_skipped_like_in_the_backtest(engine: Engine) -> None:
    broker = PaperBroker(engine, BarFrameOpens(bars(until=1)), costs=Costs(fee_bps=0.0, slippage_bps=0.0))
    broker.submit_order(OrderRequest("spy-1", "SPY", "buy", 3))
    later = PaperBroker(engine, BarFrameOpens(bars()), costs=Costs(fee_bps=0.0, slippage_bps=0.0))
    assert later.order_status("spy-1").average_price == 510.0  # day 2 has no open; day 3 fills


def test_submitting_a_client_order_id_twice_fills_it_once(engine: Engine) -> None:
    request = OrderRequest("once", "EURUSD", "buy", 1_000)
    placed = PaperBroker(engine, BarFrameOpens(bars(until=2)), costs=COSTS).submit_order(request)
    assert placed.status is OrderStatus.ACCEPTED
    broker = PaperBroker(engine, BarFrameOpens(bars()), costs=COSTS)
    first = broker.submit_order(request)  # a re-run after the next bar arrived
    cash_after_first = account_cash(engine, broker)

    again = broker.submit_order(request)
    from_another_process = PaperBroker(engine, BarFrameOpens(bars()), costs=COSTS).submit_order(request)

    assert first == again == from_another_process
    assert first.status is OrderStatus.FILLED and len(first.fills) == 1
    assert first.average_price == pytest.approx(1.1000 * (1 + 5 / 10_000), rel=1e-12)  # after day 2: day 3
    assert broker.positions()[0].quantity == 1_000
    assert account_cash(engine, broker) == cash_after_first
    with pytest.raises(ClientOrderIdConflictError):
        broker.submit_order(OrderRequest("once", "EURUSD", "buy", 2_000))


def _registry_state(engine: Engine) -> tuple[list[tuple], ...]:
    """Every row the broker writes, without the clock's timestamps."""
    tables = {
        "orders": "client_order_id, account_id, symbol, side, quantity, bar_time, target_position, status, "
        "broker_order_id, error",
        "fills": "order_id, broker_fill_id, price, quantity, fee, filled_at",
        "positions": "account_id, symbol, quantity, avg_price, realised_pnl",
        "accounts": "id, name, cash",
        "paper_protective_levels": "client_order_id, stop_distance, take_profit_distance, position",
    }
    with engine.connect() as connection:
        return tuple(
            sorted(map(tuple, connection.exec_driver_sql(f"SELECT {columns} FROM {table}")))
            for table, columns in tables.items()
        )


def test_a_batch_of_orders_ends_as_the_same_orders_submitted_one_by_one(
    engine: Engine, migrated_template: Path, tmp_path: Path
) -> None:
    """A due order mid-batch fills (and the next order's target counts that fill), a filled order sent
    again with levels arms them, an id repeated in the batch is one order: rows and answers as one by one."""
    path = tmp_path / "one_by_one.sqlite"
    path.write_bytes(migrated_template.read_bytes())
    one_by_one = make_engine(f"sqlite:///{path}")
    requests = [
        OrderRequest("eu-new", "EURUSD", "buy", 10_000, relative_stop_loss=0.01, relative_take_profit=0.02),
        OrderRequest("eu-due", "EURUSD", "buy", 5_000),
        OrderRequest("eu-after", "EURUSD", "sell", 3_000),
        OrderRequest("spy-done", "SPY", "buy", 1, relative_stop_loss=50.0),
        OrderRequest("eu-new", "EURUSD", "buy", 10_000, relative_stop_loss=0.01, relative_take_profit=0.02),
        OrderRequest("spy-new", "SPY", "sell", 2),
    ]
    answers = []
    try:
        for db, submit in ((engine, "batch"), (one_by_one, "single")):
            # Bars up to day 2: eu-due is due at its open; spy-done filled (day 3) by a process seeing more.
            broker = PaperBroker(db, BarFrameOpens(bars(until=2)), costs=COSTS)
            with session_scope(db) as session:
                for client_order_id, symbol, quantity, bar in (
                    ("eu-due", "EURUSD", 5_000, DAYS[0]),
                    ("spy-done", "SPY", 1, DAYS[1]),
                ):
                    create_order_if_absent(
                        session, client_order_id=client_order_id, account_id=broker.account_id,
                        symbol=symbol, side="buy", quantity=quantity,
                        bar_time=bar.to_pydatetime(), target_position=float(quantity),
                    )  # fmt: skip
            PaperBroker(db, BarFrameOpens(bars(until=3)), costs=COSTS).order_status("spy-done")  # fills it
            if submit == "batch":
                answers.append(broker.submit_orders(requests))
            else:
                answers.append([broker.submit_order(request) for request in requests])
        batch, single = answers
        assert batch == single
        accepted, filled = OrderStatus.ACCEPTED, OrderStatus.FILLED
        assert [r.status for r in batch] == [accepted, filled, accepted, filled, accepted, accepted]
        state = _registry_state(engine)
        assert state == _registry_state(one_by_one)
        orders = {row[0]: row for row in state[0]}
        assert orders["eu-after"][6] == 5_000 - 3_000  # after eu-due filled
        assert {row[0]: row[3] for row in state[4]} == {"spy-done": 1.0, "eu-new": None}
    finally:
        one_by_one.dispose()


def test_reconcile_settles_open_orders_and_names_unknown_ids(engine: Engine) -> None:
    PaperBroker(engine, BarFrameOpens(bars(until=2)), costs=COSTS).submit_order(
        OrderRequest("waiting", "EURUSD", "buy", 2_000)
    )
    report = PaperBroker(engine, BarFrameOpens(bars()), costs=COSTS).reconcile(["waiting", "ghost"])

    assert report.orders["waiting"].status is OrderStatus.FILLED
    assert report.missing_client_order_ids == ("ghost",)
    assert report.position_quantity("EURUSD") == 2_000


def test_symbols_without_bars_are_refused_before_anything_is_recorded(engine: Engine) -> None:
    broker = PaperBroker(engine, BarFrameOpens(bars()))
    with pytest.raises(BrokerError, match="no bars for 'GBPUSD'"):
        broker.submit_order(OrderRequest("gb-1", "GBPUSD", "buy", 1_000))
    assert broker.order_status("gb-1").status is OrderStatus.NOT_FOUND


def test_both_brokers_implement_the_broker_interface(engine: Engine) -> None:
    assert isinstance(PaperBroker(engine, BarFrameOpens(bars())), Broker)
    assert all(
        hasattr(CTraderBroker, name) for name in ("submit_order", "order_status", "positions", "reconcile")
    )


def test_bar_frame_opens_answers_strictly_after_the_given_bar() -> None:
    opens = BarFrameOpens(bars())
    assert opens.latest_bar_time("EURUSD") == DAYS[3].to_pydatetime()
    assert opens.next_open("EURUSD", DAYS[1].to_pydatetime()) == (DAYS[2].to_pydatetime(), 1.1)
    assert opens.next_open("EURUSD", DAYS[3].to_pydatetime()) is None
    assert opens.next_open("EURUSD", dt.datetime(2024, 3, 4, 12, tzinfo=dt.UTC))[0] == DAYS[1].to_pydatetime()
    assert opens.latest_bar_time("GBPUSD") is None


def test_a_bar_frame_without_highs_and_lows_is_refused() -> None:
    with pytest.raises(BrokerError, match="high"):
        BarFrameOpens(bars().drop(columns=["high", "low"]))


# ------------------------------------------------------------------------------------------- protective exits

STOP_ATR, TAKE_PROFIT_ATR = 2.0, 5.0
FLAT = (100.0, 100.5, 99.5)  # open, high, low of a quiet bar
PROTECTIVE_CASES = {
    "stop touched inside a later bar": [FLAT, FLAT, (100.0, 100.5, 97.0), FLAT, FLAT],
    "gap through the stop fills at the open": [FLAT, FLAT, (95.0, 96.0, 94.0), (96.0, 96.5, 95.5), FLAT],
    "take profit on the entry bar, from its open": [FLAT, (100.0, 106.0, 99.5), FLAT, FLAT, FLAT],
    "both levels in one bar take the stop": [FLAT, FLAT, (100.0, 106.0, 97.0), FLAT, FLAT],
    "gap through the take profit fills at the open": [FLAT, FLAT, (107.0, 108.0, 106.5), FLAT, FLAT],
    "no level touched": [FLAT] * 5,
}


def _protective_market(ohlc: list[tuple[float, float, float]]) -> tuple[pd.DataFrame, MarketArrays]:
    days = pd.date_range("2024-03-04", periods=len(ohlc), freq="D", tz="UTC")
    o, h, lo = (np.array([bar[k] for bar in ohlc]) for k in range(3))
    frame = pd.DataFrame({"date": days, "symbol": "XYZ", "open": o, "high": h, "low": lo, "close": o})
    arrays = MarketArrays(days, ("XYZ",), *(a[:, None] for a in (o, h, lo, o, np.ones_like(o))))
    return frame, arrays


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("case", sorted(PROTECTIVE_CASES))
def test_stops_and_take_profits_fill_where_and_as_the_backtest_kernel_exits(
    engine: Engine, case: str, direction: int
) -> None:
    """An entry with relative levels at the paper broker exits on the kernel's bar, at the kernel's price."""
    ohlc = PROTECTIVE_CASES[case]
    if direction < 0:  # mirror the bars around 100 so the short meets the same events
        ohlc = [(200.0 - o, 200.0 - lo, 200.0 - h) for o, h, lo in ohlc]
    frame, arrays = _protective_market(ohlc)
    rule = Condition("what_x", ">", 0.0)
    genome = Genome(
        "long" if direction > 0 else "short",
        rule if direction > 0 else None,
        rule if direction < 0 else None,
        None,
        ("bull_trend",),
        RiskGenes(STOP_ATR, TAKE_PROFIT_ATR, 1.0, 500),
    )
    signals = np.full((len(ohlc), 1), direction, dtype=np.int8)
    kernel = simulate_strategy(genome, signals, arrays, COSTS)
    (trade,) = kernel.trades.itertuples()
    capital = 100_000.0

    side = "buy" if direction > 0 else "sell"
    quantity = abs(trade.units) * capital
    request = OrderRequest(
        "entry", "XYZ", side, quantity, relative_stop_loss=STOP_ATR, relative_take_profit=TAKE_PROFIT_ATR
    )
    PaperBroker(engine, BarFrameOpens(frame.iloc[:1]), costs=COSTS).submit_order(request)  # after bar 0
    broker = PaperBroker(engine, BarFrameOpens(frame), costs=COSTS)  # a later run, all bars known
    report = broker.reconcile(["entry", protective_exit_id("entry")])

    entry = report.orders["entry"]
    assert entry.status is OrderStatus.FILLED and entry.fills[0].price == trade.entry_price
    assert entry.fills[0].filled_at == trade.entry_date.to_pydatetime()
    exit_result = report.orders[protective_exit_id("entry")]
    if trade.exit_reason == "end_of_data":
        assert case == "no level touched" and exit_result.status is OrderStatus.NOT_FOUND
        assert report.position_quantity("XYZ") == pytest.approx(direction * quantity, rel=1e-12)
        return
    assert exit_result.status is OrderStatus.FILLED and exit_result.broker_order_id.startswith(
        f"paper-{trade.exit_reason}-"
    )
    (fill,) = exit_result.fills
    assert (fill.price, fill.filled_at) == (trade.exit_price, trade.exit_date.to_pydatetime())
    assert fill.side.sign == -direction and fill.quantity == quantity
    assert report.position_quantity("XYZ") == 0.0
    # Cash follows the kernel's sleeve: equity after the round trip, in account units.
    assert account_cash(engine, broker) == pytest.approx(kernel.result.equity[0, -1] * capital, rel=1e-12)
    assert broker.reconcile().positions == ()  # asked again: the exit is not booked twice


def test_an_exit_at_the_open_ends_the_protection_before_that_bars_stop(engine: Engine) -> None:
    """As in the kernel, a signal exit filled at an open comes before the intrabar check of that bar."""
    frame, _ = _protective_market([FLAT, FLAT, FLAT, (100.0, 100.5, 90.0), FLAT])
    entry = OrderRequest("long", "XYZ", "buy", 10.0, relative_stop_loss=STOP_ATR)
    PaperBroker(engine, BarFrameOpens(frame.iloc[:1]), costs=COSTS).submit_order(entry)
    PaperBroker(engine, BarFrameOpens(frame.iloc[:3]), costs=COSTS).submit_order(
        OrderRequest("flat", "XYZ", "sell", 10.0)  # decided at the close of bar 2, fills at bar 3's open
    )
    broker = PaperBroker(engine, BarFrameOpens(frame), costs=COSTS)
    report = broker.reconcile(["flat", protective_exit_id("long")])
    assert report.orders["flat"].fills[0].price == pytest.approx(100.0 * (1 - 5 / 10_000), rel=1e-12)
    assert report.orders[protective_exit_id("long")].status is OrderStatus.NOT_FOUND
    assert report.positions == ()
    # The superseded levels are settled for good: nothing is left to rescan on later calls.
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(PaperProtectiveLevels)).scalar_one() == 0


def test_a_fill_recorded_outside_the_broker_ends_the_levels_of_its_book(engine: Engine) -> None:
    """Levels protect the position their entry left; a book moved by a fill the broker did not make (here a
    fill recorded straight into the registry) is no longer that position, so the stop does not sell it."""
    frame, _ = _protective_market([FLAT, FLAT, FLAT, (100.0, 100.5, 90.0), FLAT])
    entry = OrderRequest("long", "XYZ", "buy", 10.0, relative_stop_loss=STOP_ATR)
    broker = PaperBroker(engine, BarFrameOpens(frame.iloc[:1]), costs=COSTS)
    broker.submit_order(entry)
    PaperBroker(engine, BarFrameOpens(frame.iloc[:3]), costs=COSTS).reconcile()  # filled, levels armed
    with session_scope(engine) as session:
        create_order_if_absent(
            session, client_order_id="manual", account_id=broker.account_id, symbol="XYZ", side="sell",
            quantity=4.0, bar_time=frame["date"].iloc[2], target_position=6.0,
        )  # fmt: skip
        record_fill(
            session, client_order_id="manual", broker_fill_id="desk-1", price=100.0, quantity=4.0,
            filled_at=frame["date"].iloc[2],
        )  # fmt: skip

    report = PaperBroker(engine, BarFrameOpens(frame), costs=COSTS).reconcile([protective_exit_id("long")])

    assert report.orders[protective_exit_id("long")].status is OrderStatus.NOT_FOUND
    assert report.position_quantity("XYZ") == 6.0
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(PaperProtectiveLevels)).scalar_one() == 0
