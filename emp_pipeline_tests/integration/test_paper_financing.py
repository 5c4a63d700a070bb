"""The paper account's overnight swaps: booked rollover by rollover as the kernel charges them, exactly once.

The expected amounts come from `domain.financing` (the nights of each bar of the grid, the swap terms) and the
kernel's `sleeve.overnight_swap`, never from hand-typed numbers; each test also checks its premise (a triple
night, a weekend) from the calendar so a changed calendar cannot make it vacuous.
"""

from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from emp_pipeline.broker.interface import BrokerError, OrderRequest
from emp_pipeline.broker.paper import BarFrameOpens, PaperBroker
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
from emp_pipeline.domain.financing import swap_nights, swap_terms
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType
from emp_pipeline.domain.sleeve import overnight_swap
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.financing import financing_entries
from emp_pipeline.registry.positions import get_account

EURUSD = InstrumentMeta(
    "EURUSD", "Euro / US dollar", AssetClass.FX, "USD", 0.00001, 4, 100_000.0, 1_000.0, 1_000.0,
    CALENDAR_24X5, swap_long=-0.42, swap_short=0.42,
)  # fmt: skip
INSTRUMENTS = {"EURUSD": EURUSD}
NO_COSTS = Costs(fee_bps=0.0, slippage_bps=0.0)
UNITS = 100_000.0
# Winter (New York on EST): the rollover, 17:00 New York, is 22:00 UTC.
WEDNESDAY_HOURS = pd.date_range("2024-01-10 19:00", periods=6, freq="h", tz="UTC")  # 19:00 .. 00:00
WEEKEND_HOURS = pd.DatetimeIndex(
    ["2024-01-12 20:00", "2024-01-12 21:00", "2024-01-14 22:00", "2024-01-14 23:00", "2024-01-15 00:00"],
    tz="UTC",
)  # Friday's last hours, then Sunday's first: the market is shut over the weekend


def hourly_bars(hours: pd.DatetimeIndex) -> pd.DataFrame:
    opens = 1.10 + 0.0001 * np.arange(len(hours))
    return pd.DataFrame(
        {"date": hours, "symbol": "EURUSD", "open": opens, "high": opens + 0.0005, "low": opens - 0.0005}
    )


def broker(engine: Engine, bars: pd.DataFrame, instruments=INSTRUMENTS) -> PaperBroker:
    return PaperBroker(engine, BarFrameOpens(bars), costs=NO_COSTS, instruments=instruments)


def kernel_swaps(hours: pd.DatetimeIndex, held: np.ndarray) -> np.ndarray:
    """What the kernel credits at each bar's start: the position held since the previous bar times the
    bar's nights (`financing.swap_nights`) and the instrument's swap terms."""
    nights = swap_nights(EURUSD, hours)
    previous = np.concatenate(([0.0], held[:-1]))
    return np.array(
        [
            overnight_swap(float(units), 0.0, float(n), swap_terms(EURUSD))
            for units, n in zip(previous, nights, strict=True)
        ]
    )


def ledger(engine: Engine, account_id: int) -> list:
    with session_scope(engine) as session:
        return financing_entries(session, account_id)


def cash(engine: Engine, account_id: int) -> float:
    with session_scope(engine) as session:
        return get_account(session, account_id).cash


def test_a_long_held_over_wednesdays_rollover_pays_three_nights_as_the_kernel(
    registry_engine: Engine,
) -> None:
    bars = hourly_bars(WEDNESDAY_HOURS)
    assert list(swap_nights(EURUSD, WEDNESDAY_HOURS)) == [0, 0, 0, 3, 0, 0]  # premise: 22:00 is triple
    # The order reacts to the 19:00 bar and fills at the 20:00 open.
    broker(registry_engine, bars.iloc[:1]).submit_order(OrderRequest("long", "EURUSD", "buy", UNITS))
    paper = broker(registry_engine, bars)
    paper.settle_open_orders()

    expected = kernel_swaps(WEDNESDAY_HOURS, np.array([0.0, UNITS, UNITS, UNITS, UNITS, UNITS]))
    [booked] = ledger(registry_engine, paper.account_id)
    assert (booked.rollover_at, booked.units, booked.nights) == (WEDNESDAY_HOURS[3], UNITS, 3.0)
    assert booked.amount == pytest.approx(expected.sum(), rel=1e-12)
    assert booked.amount == pytest.approx(-3 * 0.42 * EURUSD.pip_size * UNITS)  # 3 nights x 4.20 USD
    fill_value = UNITS * float(bars["open"].iloc[1])
    assert cash(registry_engine, paper.account_id) == pytest.approx(
        DEFAULT_CAPITAL - fill_value + expected.sum(), rel=1e-12
    )


def test_a_short_held_over_the_weekend_earns_fridays_one_night_at_sundays_open(
    registry_engine: Engine,
) -> None:
    bars = hourly_bars(WEEKEND_HOURS)
    nights = swap_nights(EURUSD, WEEKEND_HOURS)
    assert list(nights) == [0, 0, 1, 0, 0]  # premise: Friday 22:00 UTC, no rollover on the weekend days
    broker(registry_engine, bars.iloc[:1]).submit_order(OrderRequest("short", "EURUSD", "sell", UNITS))
    paper = broker(registry_engine, bars)
    paper.settle_open_orders()

    expected = kernel_swaps(WEEKEND_HOURS, np.array([0.0, -UNITS, -UNITS, -UNITS, -UNITS]))
    [booked] = ledger(registry_engine, paper.account_id)
    assert booked.rollover_at == pd.Timestamp("2024-01-12 22:00", tz="UTC")
    assert (booked.units, booked.nights) == (-UNITS, 1.0)
    assert booked.amount == pytest.approx(expected.sum(), rel=1e-12) == pytest.approx(0.42 * 1e-4 * UNITS)


def test_bar_by_bar_and_one_late_catch_up_book_the_same_each_rollover_once(registry_engine: Engine) -> None:
    """A long held across Wednesday's and Thursday's rollovers, reversed to a short held across Friday's, with
    catch-ups on every bar (the live job), repeated, and from a second broker; a second account catches
    the whole span up at once. Both books equal the kernel's bar-by-bar swaps, and nothing twice."""
    hours = pd.date_range("2024-01-10 20:00", "2024-01-12 23:00", freq="h", tz="UTC")
    bars = hourly_bars(hours)
    orders = {0: ("buy", UNITS), 30: ("sell", 2 * UNITS)}  # by the bar they react to: filled at the next
    held = np.zeros(len(hours))
    position = 0.0
    for k in range(len(hours)):
        held[k] = position
        if k - 1 in orders:  # filled at this open
            side, quantity = orders[k - 1]
            position += quantity if side == "buy" else -quantity
            held[k] = position
    expected = kernel_swaps(hours, held)
    assert (swap_nights(EURUSD, hours) > 0).sum() == 3  # premise: Wednesday's, Thursday's, Friday's

    live = []
    for k in range(len(hours)):
        paper = PaperBroker(
            registry_engine, BarFrameOpens(bars.iloc[: k + 1]), costs=NO_COSTS, account_name="live",
            instruments=INSTRUMENTS,
        )  # fmt: skip
        paper.settle_open_orders()
        if k in orders:
            side, quantity = orders[k]
            paper.submit_order(OrderRequest(f"live-{k}", "EURUSD", side, quantity))
        paper.settle_open_orders()  # asked twice on a bar: books nothing more
        live = ledger(registry_engine, paper.account_id)
    once_more = PaperBroker(
        registry_engine, BarFrameOpens(bars), costs=NO_COSTS, account_name="live", instruments=INSTRUMENTS
    )
    cash_before = cash(registry_engine, once_more.account_id)
    once_more.reconcile()
    assert ledger(registry_engine, once_more.account_id) == live
    assert cash(registry_engine, once_more.account_id) == cash_before

    for k, (side, quantity) in orders.items():
        PaperBroker(
            registry_engine, BarFrameOpens(bars.iloc[: k + 1]), costs=NO_COSTS, account_name="late",
            instruments=INSTRUMENTS,
        ).submit_order(OrderRequest(f"late-{k}", "EURUSD", side, quantity))  # fmt: skip
    late = PaperBroker(
        registry_engine, BarFrameOpens(bars), costs=NO_COSTS, account_name="late", instruments=INSTRUMENTS
    )
    late.settle_open_orders()

    for entries in (live, ledger(registry_engine, late.account_id)):
        assert len(entries) == 3
        assert [(e.units, e.nights) for e in entries] == [(UNITS, 3.0), (UNITS, 1.0), (-UNITS, 1.0)]
        assert sum(e.amount for e in entries) == pytest.approx(expected.sum(), rel=1e-12)
        assert [e.amount for e in entries] == pytest.approx(list(expected[expected != 0]), rel=1e-12)


def test_percent_swaps_are_a_share_of_the_close_before_the_rollover_and_need_that_close(
    registry_engine: Engine,
) -> None:
    """A percent swap is a yearly rate on the kernel's ``last_close``: the close of the bar before the one
    the rollover is booked at. Bars without closes cannot finance it, and the catch-up says so."""
    percent = {"EURUSD": dataclasses.replace(EURUSD, swap_type=SwapType.PERCENT, swap_long=-1.35)}
    bars = hourly_bars(WEDNESDAY_HOURS)
    bars["close"] = bars["open"] + 0.0003
    for name, frame in (("closes", bars), ("no-closes", bars.drop(columns="close"))):
        PaperBroker(
            registry_engine, BarFrameOpens(frame.iloc[:1]), costs=NO_COSTS, account_name=name,
            instruments=percent,
        ).submit_order(OrderRequest(f"{name}-long", "EURUSD", "buy", UNITS))  # fmt: skip
    paper = PaperBroker(
        registry_engine, BarFrameOpens(bars), costs=NO_COSTS, account_name="closes", instruments=percent
    )
    paper.settle_open_orders()

    [booked] = ledger(registry_engine, paper.account_id)
    close_before = float(bars["close"].iloc[2])  # the 21:00 bar's: the rollover is booked at 22:00
    terms = swap_terms(percent["EURUSD"])
    assert booked.amount == pytest.approx(overnight_swap(UNITS, close_before, 3.0, terms), rel=1e-12)
    assert booked.amount == pytest.approx(-3 * 1.35 / 100 / 360 * UNITS * close_before)
    without_closes = PaperBroker(
        registry_engine, BarFrameOpens(bars.drop(columns="close")), costs=NO_COSTS, account_name="no-closes",
        instruments=percent,
    )  # fmt: skip
    with pytest.raises(
        BrokerError, match="EURUSD has percent swaps, a share of the close before the rollover"
    ):
        without_closes.settle_open_orders()


def test_an_instrument_without_swap_terms_books_nothing(registry_engine: Engine) -> None:
    bars = hourly_bars(WEDNESDAY_HOURS)
    no_swaps = {"EURUSD": dataclasses.replace(EURUSD, swap_long=0.0, swap_short=0.0)}
    for name, instruments in (("unknown", {}), ("no-swaps", no_swaps)):
        PaperBroker(
            registry_engine, BarFrameOpens(bars.iloc[:1]), costs=NO_COSTS, account_name=name,
            instruments=instruments,
        ).submit_order(OrderRequest(f"{name}-long", "EURUSD", "buy", UNITS))  # fmt: skip
        paper = PaperBroker(
            registry_engine, BarFrameOpens(bars), costs=NO_COSTS, account_name=name, instruments=instruments
        )
        paper.settle_open_orders()
        assert ledger(registry_engine, paper.account_id) == []
        assert cash(registry_engine, paper.account_id) == DEFAULT_CAPITAL - UNITS * float(
            bars["open"].iloc[1]
        )


def _catch_up_in_process(url: str, bars: pd.DataFrame, barrier, results) -> None:
    engine = make_engine(url)
    paper = PaperBroker(engine, BarFrameOpens(bars), costs=NO_COSTS, instruments=INSTRUMENTS)
    barrier.wait(timeout=30)
    paper.settle_open_orders()
    engine.dispose()
    results.put(paper.account_id)


def test_concurrent_catch_ups_book_each_rollover_once(
    migrated_registry_url: str, registry_engine: Engine
) -> None:
    hours = pd.date_range("2024-01-10 19:00", "2024-01-12 23:00", freq="h", tz="UTC")
    bars = hourly_bars(hours)
    broker(registry_engine, bars.iloc[:1]).submit_order(OrderRequest("long", "EURUSD", "buy", UNITS))
    broker(registry_engine, bars.iloc[:2]).settle_open_orders()  # filled at 20:00, before any rollover
    account_id = broker(registry_engine, bars.iloc[:2]).account_id
    before = cash(registry_engine, account_id)

    context = multiprocessing.get_context("fork")  # as test_registry_orders: each child its own engine
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_catch_up_in_process, args=(migrated_registry_url, bars, barrier, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    assert [results.get(timeout=60) for _ in processes] == [account_id, account_id]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    expected = kernel_swaps(hours, np.where(np.arange(len(hours)) >= 1, UNITS, 0.0))
    entries = ledger(registry_engine, account_id)
    assert [(e.units, e.nights) for e in entries] == [(UNITS, 3.0), (UNITS, 1.0), (UNITS, 1.0)]
    assert cash(registry_engine, account_id) == pytest.approx(before + expected.sum(), rel=1e-12)
