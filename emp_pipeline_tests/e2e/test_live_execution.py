"""The live execution job end to end through real Dagster runs, on the paper broker.

A temporary store holds bars, features and regimes made by the domain code; a temporary SQLite registry holds
one active champion. The decision bar is the second-to-last bar, so the paper fill at the next open can be
made to arrive by storing the last bar, as the daily assets would.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, EnvVar, Failure, build_run_status_sensor_context

from emp_pipeline.defs.alerts import AlertWebhookResource
from emp_pipeline.defs.live.broker import LiveBrokerResource, live_broker_resource
from emp_pipeline.defs.live.job import LIVE_POOL, LIVE_RUN_TAG, live_execution_job
from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.live.triggers import build_live_execution_sensor, live_execution_failure_sensor
from emp_pipeline.defs.perception.assets import NEWEST_BAR_METADATA
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.backtest import market_arrays, simulate_strategy
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.execution import round_to_step
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes, feature_panel, panel_signals
from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.domain.sleeve import entry_fill_price, fee_cost
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.live.alerts import send_alert
from emp_pipeline.live.commands import kill_switch_command
from emp_pipeline.live.engine import (
    LiveConfig,
    StrategyBook,
    decide_orders,
    load_market_view,
    run_live_tick,
)
from emp_pipeline.live.journal import LiveJournal
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.orders import create_order_if_absent, fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_paper_account, positions_for_account
from emp_pipeline.settings import Settings
from emp_pipeline.storage.datasets import MARKET_REGIMES
from emp_pipeline_tests.live_setup import ALWAYS_LONG, LiveMarket, make_market, prepare_registry, write_frames

INITIAL_CASH = 100_000.0


def both_ways(threshold: float, risk: RiskGenes) -> Genome:
    """Long above +threshold and short below -threshold of the day's log return, with these risk genes."""
    return replace(
        ALWAYS_LONG,
        direction="both",
        long_entry=Condition("what_log_return_1", ">", threshold),
        short_entry=Condition("what_log_return_1", "<", -threshold),
        risk=risk,
    )


def fine_volume_step(market: LiveMarket) -> LiveMarket:
    """The market with a 1e-6 unit volume step: live quantities round to the kernel's within 1e-6."""
    return replace(
        market,
        instruments=tuple(replace(m, min_volume=1e-6, step_volume=1e-6) for m in market.instruments),
    )


@pytest.fixture(scope="module")
def market():
    return make_market()


@pytest.fixture
def book(tmp_path, market):
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    data_dir = tmp_path / "data"
    strategy_id = prepare_registry(database_url, market)
    decision_bar = market.dates[-2]
    write_frames(data_dir, market, until=decision_bar)
    return database_url, data_dir, strategy_id, decision_bar


def _execute(database_url, data_dir, decision_bar, ceilings=None, **config):
    """One live run on the paper broker; returns the result and the run's tags.

    ``ceilings`` is the environment's risk limits resource (default: EMP_MAX_* at their defaults)."""
    resources = {
        "database": DatabaseResource(url=database_url),
        "lake": DataLakeResource(base_dir=str(data_dir)),
        "live_broker": LiveBrokerResource(kind="paper", initial_cash=INITIAL_CASH),
        "risk_limits": ceilings or RiskLimitsResource(),
    }
    run_config = {
        "ops": {"execute_live_tick": {"config": {"start_date": str(decision_bar.date()), **config}}}
    }
    instance = DagsterInstance.ephemeral()
    result = live_execution_job.execute_in_process(
        run_config=run_config, resources=resources, instance=instance, raise_on_error=False
    )
    return result, instance.get_run_by_id(result.run_id).tags


def _run(database_url, data_dir, decision_bar, **config):
    result, _ = _execute(database_url, data_dir, decision_bar, **config)
    assert result.success
    (materialization,) = [
        event for event in result.all_node_events if event.event_type_value == "STEP_OUTPUT"
    ]
    metadata = materialization.event_specific_data.metadata
    return {key: value.value for key, value in metadata.items()}


def _orders(database_url):
    engine = shared_engine(database_url)
    with session_scope(engine) as session:
        account = get_or_create_paper_account(session)
        return (
            account,
            orders_for_account(session, account.id),
            {p.symbol: p for p in positions_for_account(session, account.id)},
        )


def test_paper_run_orders_the_champions_entry_once_and_fills_it_at_the_next_open(book, market):
    database_url, data_dir, strategy_id, decision_bar = book

    first = _run(database_url, data_dir, decision_bar)
    assert first["bar_time"] == str(decision_bar) and first["active_strategies"] == 1
    assert first["orders_decided"] == 2 and first["orders_rejected_by_risk"] == 0
    _, orders, positions = _orders(database_url)
    assert len(orders) == 2 and {o.status for o in orders} == {"accepted"} and not positions
    last_close = market.bars.loc[market.bars["date"] == decision_bar].set_index("symbol")["adj_close"]
    for order in orders:
        # Kernel sizing: fraction x sleeve equity (1/2 of the strategy's capital) at the decision close.
        expected = round_to_step(0.4 * 0.5 * INITIAL_CASH / last_close[order.symbol], 1.0)
        assert order.quantity == expected and order.side == "buy" and order.strategy_id == strategy_id
        assert order.bar_time == decision_bar.to_pydatetime() and order.target_position == expected

    again = _run(database_url, data_dir, decision_bar)  # the same bar once more: nothing new is sent
    assert again["orders_decided"] == 0
    assert len(_orders(database_url)[1]) == 2

    next_bar = market.dates[-1]
    write_frames(data_dir, market, until=next_bar)
    third = _run(database_url, data_dir, decision_bar)
    assert third["bar_time"] == str(next_bar) and third["orders_reconciled"] == 2
    assert third["orders_decided"] == 0  # the kernel now holds: no new decision
    account, orders, positions = _orders(database_url)
    assert {o.status for o in orders} == {"filled"}
    nxt = market.bars.loc[market.bars["date"] == next_bar].set_index("symbol")
    cash = INITIAL_CASH
    for order in orders:
        adjusted_open = (
            nxt.loc[order.symbol, "open"]
            * nxt.loc[order.symbol, "adj_close"]
            / nxt.loc[order.symbol, "close"]
        )
        price = entry_fill_price(adjusted_open, 1, 1.0)  # the backtest's fill at the next open
        assert positions[order.symbol].quantity == order.quantity
        assert positions[order.symbol].avg_price == pytest.approx(price, rel=1e-12)
        cash -= order.quantity * price + fee_cost(order.quantity * price, 1.0)
    assert account.cash == pytest.approx(cash, rel=1e-12)
    equity = LiveJournal(data_dir, account.id)
    assert equity.day_start_equity(next_bar + pd.Timedelta(days=1)) == pytest.approx(third["equity"])
    assert math.isclose(third["day_start_equity"], first["equity"], rel_tol=1e-12)


def test_kill_switch_blocks_new_orders_and_the_reason_is_journaled(book):
    database_url, data_dir, _, decision_bar = book
    out = io.StringIO()
    assert kill_switch_command(database_url, "on", out, reason="test", updated_by="pytest") == 0
    assert "kill switch: ON" in out.getvalue() and "pytest" in out.getvalue()

    blocked = _run(database_url, data_dir, decision_bar)
    assert blocked["kill_switch"] is True and blocked["orders_rejected_by_risk"] == 2
    assert blocked["orders_sent_or_found"] == 0 and not _orders(database_url)[1]
    account = _orders(database_url)[0]
    journal = LiveJournal(data_dir, account.id).decisions()
    assert list(journal["verdict"]) == ["rejected", "rejected"]
    assert journal["reason"].str.contains("kill switch is on").all()

    assert kill_switch_command(database_url, "off", io.StringIO()) == 0
    status = io.StringIO()
    assert kill_switch_command(database_url, "status", status) == 0
    assert status.getvalue().startswith("kill switch: off")
    assert kill_switch_command(database_url, "maybe", io.StringIO()) == 2
    released = _run(database_url, data_dir, decision_bar)
    assert released["orders_sent_or_found"] == 2 and len(_orders(database_url)[1]) == 2
    kept = LiveJournal(data_dir, account.id).decisions()  # both runs' decisions for the bar are kept
    assert list(kept.sort_values("decided_at")["verdict"]) == ["rejected"] * 2 + ["approved"] * 2


def test_position_limit_rejects_an_oversized_entry(book):
    database_url, data_dir, _, decision_bar = book
    report = _run(database_url, data_dir, decision_bar, max_position_fraction=0.1)
    assert report["orders_rejected_by_risk"] == 2 and not _orders(database_url)[1]
    assert "would exceed 10.00% of equity" in report["decisions"]


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        (
            {"max_position_fraction": 40.0, "max_gross_exposure": 40.0},
            "max_position_fraction=40 is above its ceiling 0.3 (set by EMP_MAX_POSITION_FRACTION)",
        ),
        (
            {"max_gross_exposure": 1.5},
            "max_gross_exposure=1.5 is above its ceiling 1 (set by EMP_MAX_GROSS_EXPOSURE)",
        ),
        (
            {"daily_loss_limit": 0.2},
            "daily_loss_limit=0.2 is above its ceiling 0.05 (set by EMP_DAILY_LOSS_LIMIT)",
        ),
    ],
)
def test_run_config_cannot_raise_a_risk_ceiling_and_a_refused_run_trades_nothing(book, config, refusal):
    database_url, data_dir, _, decision_bar = book
    ceilings = RiskLimitsResource(max_position_fraction=0.3)  # EMP_MAX_POSITION_FRACTION=0.3

    result, _ = _execute(database_url, data_dir, decision_bar, ceilings, **config)

    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert refusal in message and "a run may only tighten the environment's risk limits" in message
    assert not _orders(database_url)[1]
    assert not (data_dir / "live_risk_decisions").exists()


def test_every_live_run_records_the_limits_it_traded_under(book):
    database_url, data_dir, _, decision_bar = book
    ceilings = RiskLimitsResource(max_position_fraction=0.3)  # EMP_MAX_POSITION_FRACTION=0.3
    tightened = {"max_position_fraction": 0.1, "max_gross_exposure": 1.0, "daily_loss_limit": 0.05}

    result, tags = _execute(database_url, data_dir, decision_bar, ceilings, max_position_fraction=0.1)

    assert result.success
    (output,) = [event for event in result.all_node_events if event.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["risk_limits"].value == tightened
    assert metadata["risk_ceilings"].value == {**tightened, "max_position_fraction": 0.3}
    assert {key: value for key, value in tags.items() if key.startswith("emp/risk/")} == {
        "emp/risk/max_position_fraction": "0.1",
        "emp/risk/max_gross_exposure": "1",
        "emp/risk/daily_loss_limit": "0.05",
    }
    journal = LiveJournal(data_dir, _orders(database_url)[0].id).limits()
    assert journal.drop(columns=["date", "decided_at"]).to_dict("records") == [tightened]
    assert journal["date"].tolist() == [decision_bar]


def test_a_live_run_is_tagged_with_its_bar_and_strategies(book):
    database_url, data_dir, strategy_id, decision_bar = book

    result, tags = _execute(database_url, data_dir, decision_bar)

    assert result.success
    # The runs table tells ticks apart: the bar decided on and the active champions (short ids).
    assert tags["emp/bar"] == f"{decision_bar:%Y-%m-%d}"
    assert tags["emp/strategies"] == f"1: {strategy_id[:8]}"


def test_job_carries_the_concurrency_tag_and_pool(book):
    assert live_execution_job.tags[LIVE_RUN_TAG] == "true"
    assert live_execution_job.graph.node_named("execute_live_tick").definition.pool == LIVE_POOL


def _regimes_of(instance, partition: str, newest_bar: str | None) -> None:
    """A materialization of a chunk of regimes, as market_regimes reports it (newest bar on the event)."""
    from dagster import AssetKey, AssetMaterialization

    metadata = {NEWEST_BAR_METADATA: newest_bar} if newest_bar else {}
    instance.report_runless_asset_event(
        AssetMaterialization(AssetKey("market_regimes"), partition=partition, metadata=metadata)
    )


def _store_regimes(lake, hours: pd.DatetimeIndex) -> None:
    """Regime rows for these H1 bars in the lake, as market_regimes stores a day's chunk."""
    rows = pd.DataFrame({"date": hours, "symbol": "EURUSD", "regime": "calm_bull", "warmup": False})
    MARKET_REGIMES.store(lake).write_window(rows, hours[0], hours[-1] + pd.Timedelta(hours=1))


def test_sensor_requests_one_run_per_new_hourly_bar_and_champion_set(tmp_path):
    """Issue 12 point 5: run key = timeframe + bar time; two bars stored by one update launch two runs, each
    deciding on its own bar (as_of_date) with the paper broker; a re-evaluation launches none; a venue
    broker gets a run for the newest bar only."""
    from dagster import AssetKey, AssetMaterialization, build_sensor_context, validate_run_config

    instance = DagsterInstance.ephemeral()
    lake = tmp_path / "lake"
    sensor = build_live_execution_sensor(Timeframe.H1)

    def evaluate(cursor: str | None, broker: str = "paper"):
        resources = {
            "lake": DataLakeResource(base_dir=str(lake)),
            "live_broker": LiveBrokerResource(kind=broker),
        }
        with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor(context), context.cursor

    skipped, _ = evaluate(None)
    assert skipped.skip_message.startswith("market_regimes has never")

    hours = pd.date_range("2017-03-14 13:00", periods=4, freq="h", tz="UTC")
    _store_regimes(lake, hours[:2])
    _regimes_of(instance, "2017-03-14", "2017-03-14T14:00")
    (first,), cursor = evaluate(None)  # a sensor just switched on starts at the newest bar
    assert first.run_key == "live-H1-2017-03-14T14:00" and first.tags[LIVE_RUN_TAG] == "true"
    assert first.tags["emp/bar"] == "2017-03-14 14:00"
    assert first.run_config == {
        "ops": {"execute_live_tick": {"config": {"as_of_date": "2017-03-14T14:00:00"}}}
    }
    assert validate_run_config(live_execution_job, first.run_config)
    same, _ = evaluate(cursor)
    assert "no new H1 bar" in same.skip_message

    _store_regimes(lake, hours)  # the day's chunk is re-materialized with two more closed hours
    _regimes_of(instance, "2017-03-14", "2017-03-14T16:00")
    runs, after = evaluate(cursor)
    assert [run.run_key for run in runs] == ["live-H1-2017-03-14T15:00", "live-H1-2017-03-14T16:00"]
    assert [run.run_config["ops"]["execute_live_tick"]["config"]["as_of_date"] for run in runs] == [
        "2017-03-14T15:00:00",
        "2017-03-14T16:00:00",
    ]
    again, _ = evaluate(after)
    assert "no new H1 bar" in again.skip_message
    repeated, _ = evaluate(cursor)  # an evaluation whose cursor was lost asks for the same keys: no new run
    assert [run.run_key for run in repeated] == [run.run_key for run in runs]
    _regimes_of(instance, "2017-03-13", "2017-03-13T23:00")  # a backfill of an older day is not a new bar
    backfill, after = evaluate(after)
    assert "no new H1 bar" in backfill.skip_message

    instance.report_runless_asset_event(AssetMaterialization(AssetKey("champion_strategies")))
    (champions,), _ = evaluate(after)
    assert champions.run_key.startswith("live-H1-2017-03-14T16:00-c")

    venue, _ = evaluate(cursor, broker="ctrader")  # cTrader trades now: the newest bar only, no as_of
    assert [run.run_key for run in venue] == ["live-H1-2017-03-14T16:00"] and venue[0].run_config == {}


def test_a_failed_live_run_raises_an_alert_through_the_webhook(tmp_path, webhook, caplog):
    url, received = webhook
    instance = DagsterInstance.ephemeral()
    resources = {
        "database": DatabaseResource(url=f"sqlite:///{tmp_path / 'registry.sqlite'}"),
        "lake": DataLakeResource(base_dir=str(tmp_path / "empty")),
        "live_broker": LiveBrokerResource(kind="paper"),
        "risk_limits": RiskLimitsResource(),
    }
    result = live_execution_job.execute_in_process(
        resources=resources, instance=instance, raise_on_error=False
    )
    assert not result.success  # nothing materialized yet: the run says so and fails
    assert "materialise market_bars" in result.failure_data_for_node("execute_live_tick").error.message

    context = build_run_status_sensor_context(
        sensor_name="live_execution_failure_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"alerts": AlertWebhookResource(webhook_url=url)},
    ).for_run_failure()
    with caplog.at_level("ERROR"):
        live_execution_failure_sensor(context)
    (alert,) = received
    assert alert["title"] == "emp live execution run failed"
    assert alert["details"]["run_id"] == result.run_id and alert["details"]["job"] == "live_execution_job"
    assert "ALERT emp live execution run failed" in caplog.text


def test_an_unreachable_webhook_is_logged_not_raised(caplog):
    with caplog.at_level("ERROR"):
        delivered = send_alert("t", {"k": "v"}, "http://127.0.0.1:9/hooks/secret-token")
    assert delivered is False
    assert "ALERT t: k=v" in caplog.text and "secret-token" not in caplog.text


def test_live_ticks_bar_by_bar_trade_when_and_at_the_prices_the_backtest_does(tmp_path, market):
    """Step the live path over 25 bars on the paper broker and hold its fills to the backtest kernel's trades.

    Both size at the decision close, so quantities differ only by the volume step (1 unit here); fill dates,
    prices and directions must be the kernel's. Wide stops keep protective exits out of this comparison (the
    next test has them, with a fine volume step and equity to 1e-9).
    """
    genome = both_ways(0.004, RiskGenes(10.0, 20.0, 0.4, 6))  # signal and holding exits only
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    data_dir = tmp_path / "data"
    prepare_registry(database_url, market, genome)
    engine = shared_engine(database_url)
    dates = market.dates
    first = len(dates) - 25
    config = LiveConfig(start=dates[first].to_pydatetime(), limits=RiskLimits(1.0, 2.0, 0.5))
    live_broker = LiveBrokerResource(kind="paper", initial_cash=INITIAL_CASH)
    for t in range(first, len(dates)):
        write_frames(data_dir, market, until=dates[t])
        with live_broker.open(engine, str(data_dir)) as (broker, account_id):
            run_live_tick(
                engine=engine,
                data_dir=data_dir,
                broker=broker,
                account_id=account_id,
                now=dt.datetime.now(dt.UTC),
                config=config,
                instruments=market.instruments,
            )

    panel = feature_panel(market.features, market.regimes)
    prices = market_arrays(market.bars, market.features, "what_atr_14", panel.dates, list(panel.symbols))
    window = prices.window(dates[first], None)
    kernel = simulate_strategy(genome, panel_signals(genome, panel)[first:], window, Costs()).trades
    expected = set()
    for trade in kernel.itertuples():
        expected.add((trade.symbol, trade.entry_date, round(trade.entry_price, 9), int(trade.direction)))
        if trade.exit_reason != "end_of_data":
            expected.add((trade.symbol, trade.exit_date, round(trade.exit_price, 9), -int(trade.direction)))
    assert len(kernel) >= 4 and set(kernel["exit_reason"]) <= {"signal", "max_holding", "end_of_data"}

    with session_scope(engine) as session:
        account = get_or_create_paper_account(session)
        live = set()
        for order in orders_for_account(session, account.id):
            for fill in fills_for_order(session, order.client_order_id):
                side = 1 if order.side == "buy" else -1
                live.add((order.symbol, pd.Timestamp(fill.filled_at), round(fill.price, 9), side))
    # A reversal is one live order; the kernel's exit and re-entry at that open are one tuple in the set.
    assert live == expected


def test_live_ticks_follow_the_kernel_through_stops_and_take_profits_to_1e_9(tmp_path, market):
    """The parity contract over 25 ticks with tight stops and take profits: every fill (entries sized at the
    signal close, signal exits, reversals, stop and take-profit exits at the paper broker) is the kernel's in
    date, price and quantity, and the account equity after each tick is the kernel's to 1e-9 relative.

    A fine volume step (1e-6 units) keeps rounding below that tolerance; synthetic bars have adj_close =
    close, so the account's raw-close marks are the kernel's adjusted ones.
    """
    fine = fine_volume_step(market)
    genome = both_ways(0.002, RiskGenes(0.6, 0.9, 0.4, 4))
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    data_dir = tmp_path / "data"
    prepare_registry(database_url, fine, genome)
    engine = shared_engine(database_url)
    dates = fine.dates
    first = len(dates) - 25
    config = LiveConfig(start=dates[first].to_pydatetime(), limits=RiskLimits(1.0, 2.0, 0.5))
    live_broker = LiveBrokerResource(kind="paper", initial_cash=INITIAL_CASH)
    live_equity = []
    for t in range(first, len(dates)):
        write_frames(data_dir, fine, until=dates[t])
        with live_broker.open(engine, str(data_dir)) as (broker, account_id):
            report = run_live_tick(
                engine=engine,
                data_dir=data_dir,
                broker=broker,
                account_id=account_id,
                now=dt.datetime.now(dt.UTC),
                config=config,
                instruments=fine.instruments,
            )
        assert not report.rejected
        live_equity.append(report.equity)

    panel = feature_panel(fine.features, fine.regimes)
    prices = market_arrays(fine.bars, fine.features, "what_atr_14", panel.dates, list(panel.symbols))
    window = prices.window(dates[first], None)
    kernel = simulate_strategy(genome, panel_signals(genome, panel)[first:], window, Costs())
    trades = kernel.trades
    assert {"stop", "take_profit", "signal"} <= set(trades["exit_reason"])
    np.testing.assert_allclose(live_equity, kernel.result.equity[0] * INITIAL_CASH, rtol=1e-9, atol=0)

    # Signed quantity traded per (symbol, date, price): a reversal's exit and entry share one price and are
    # one live order, so both sides sum them the same way.
    expected: dict[tuple[str, pd.Timestamp, float], float] = defaultdict(float)
    for trade in trades.itertuples():
        units = trade.units * INITIAL_CASH
        expected[(trade.symbol, trade.entry_date, round(trade.entry_price, 9))] += units
        if trade.exit_reason != "end_of_data":
            expected[(trade.symbol, trade.exit_date, round(trade.exit_price, 9))] -= units
    live: dict[tuple[str, pd.Timestamp, float], float] = defaultdict(float)
    with session_scope(engine) as session:
        account = get_or_create_paper_account(session)
        for order in orders_for_account(session, account.id):
            sign = 1 if order.side == "buy" else -1
            for fill in fills_for_order(session, order.client_order_id):
                key = (order.symbol, pd.Timestamp(fill.filled_at), round(fill.price, 9))
                live[key] += sign * fill.quantity
    assert live.keys() == expected.keys()
    for key, quantity in expected.items():
        assert live[key] == pytest.approx(quantity, abs=2e-6), key


def _signed_fills(engine) -> dict[tuple[str, pd.Timestamp], float]:
    """Signed quantity the paper account filled per (symbol, fill bar)."""
    filled: dict[tuple[str, pd.Timestamp], float] = defaultdict(float)
    with session_scope(engine) as session:
        account = get_or_create_paper_account(session)
        for order in orders_for_account(session, account.id):
            sign = 1 if order.side == "buy" else -1
            for fill in fills_for_order(session, order.client_order_id):
                filled[(order.symbol, pd.Timestamp(fill.filled_at))] += sign * fill.quantity
    return filled


def _kernel_fills(trades: pd.DataFrame, capital: float) -> dict[tuple[str, pd.Timestamp], float]:
    """The kernel's trades as signed account units per (symbol, fill bar); a reversal's legs sum."""
    expected: dict[tuple[str, pd.Timestamp], float] = defaultdict(float)
    for trade in trades.itertuples():
        expected[(trade.symbol, trade.entry_date)] += trade.units * capital
        if trade.exit_reason != "end_of_data":
            expected[(trade.symbol, trade.exit_date)] -= trade.units * capital
    return expected


def test_a_strategy_trades_with_the_costs_it_was_measured_with_not_the_current_setting(tmp_path, market):
    """Measured with 2 bps fees and 3 bps slippage, traded by the live job whose cost setting says 1 bps
    (the paper venue charges 1 bps): every quantity the job trades is the 2/3 bps kernel's. After the first
    round trip the sleeve equity it sizes from differs from a 1 bps kernel's, so the assertion can tell."""
    fine = fine_volume_step(market)
    genome = both_ways(0.004, RiskGenes(10.0, 20.0, 0.4, 6))  # signal and holding exits only
    measured = Costs(fee_bps=2.0, slippage_bps=3.0)
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    data_dir = tmp_path / "data"
    prepare_registry(database_url, fine, genome, costs=measured)
    dates = fine.dates
    first = len(dates) - 20
    for t in range(first, len(dates)):
        write_frames(data_dir, fine, until=dates[t])
        assert _run(database_url, data_dir, dates[first])["orders_rejected_by_risk"] == 0

    panel = feature_panel(fine.features, fine.regimes)
    prices = market_arrays(fine.bars, fine.features, "what_atr_14", panel.dates, list(panel.symbols))
    window = prices.window(dates[first], None)
    signals = panel_signals(genome, panel)[first:]

    def kernel(costs: Costs) -> pd.DataFrame:
        return simulate_strategy(genome, signals, window, costs).trades

    trades = kernel(measured)
    assert set(trades["exit_reason"]) <= {"signal", "max_holding", "end_of_data"}  # no broker-side levels
    expected = _kernel_fills(trades, INITIAL_CASH)
    live = _signed_fills(shared_engine(database_url))
    assert live.keys() == expected.keys()
    for key, quantity in expected.items():
        assert live[key] == pytest.approx(quantity, abs=2e-6), key
    at_setting = _kernel_fills(kernel(Costs(fee_bps=1.0, slippage_bps=1.0)), INITIAL_CASH)
    assert max(abs(at_setting[key] - expected[key]) for key in expected) > 1e-3


def test_the_environment_picks_the_broker_and_secrets_stay_env_references(tmp_path):
    paper = live_broker_resource(Settings.from_env({"EMP_HOME": str(tmp_path)}))
    assert paper.kind == "paper"
    settings = Settings.from_env(
        {"EMP_HOME": str(tmp_path), "EMP_BROKER": "ctrader", "CTRADER_ACCOUNT_ID": "4242"}
    )
    ctrader = live_broker_resource(settings)
    assert (ctrader.kind, ctrader.ctrader_account_id, ctrader.account_name) == ("ctrader", 4242, "4242")
    assert ctrader.ctrader_url == "wss://demo.ctraderapi.com:5036"
    assert isinstance(ctrader.ctrader_client_secret, EnvVar)
    assert ctrader.ctrader_client_secret.env_var_name == "CTRADER_CLIENT_SECRET"


def test_an_order_another_run_recorded_a_moment_ago_is_left_to_it(book, market):
    """The race: another run derived the same decision and recorded it first; this run must not send it."""
    database_url, data_dir, strategy_id, decision_bar = book
    view = load_market_view(data_dir)
    strategy_book = StrategyBook(strategy_id, ALWAYS_LONG, decision_bar, Costs())
    instruments = {meta.symbol: meta for meta in market.instruments}
    intents, _ = decide_orders(strategy_book, view, {}, instruments, INITIAL_CASH)
    assert len(intents) == 2
    engine = shared_engine(database_url)
    with session_scope(engine) as session:
        account = get_or_create_paper_account(session)
        for intent in intents:  # recorded by the other run, which has not sent them yet
            create_order_if_absent(
                session,
                client_order_id=intent.client_order_id,
                account_id=account.id,
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                bar_time=intent.bar_time,
                target_position=intent.target,
            )
    report = _run(database_url, data_dir, decision_bar)
    assert report["orders_left_to_other_run"] == 2
    assert {o.status for o in _orders(database_url)[1]} == {"pending"}  # this run sent nothing

    write_frames(data_dir, market, until=market.dates[-1])
    _run(database_url, data_dir, decision_bar)
    _, orders, positions = _orders(database_url)
    assert len(orders) == 2 and {o.status for o in orders} == {"filled"}
    assert {symbol: p.quantity for symbol, p in positions.items()} == {i.symbol: i.target for i in intents}


def test_a_missed_entry_tick_is_caught_up_to_the_kernels_position(book, market):
    """The kernel entered at this bar's open on the previous bar's signal, but no live run saw that bar."""
    database_url, data_dir, _, decision_bar = book
    previous_bar = market.dates[-3]
    report = _run(database_url, data_dir, decision_bar, start_date=str(previous_bar.date()))
    assert report["orders_decided"] == 2 and "the kernel holds this position" in report["decisions"]
    _, orders, _ = _orders(database_url)
    bars = market.bars.set_index(["date", "symbol"])
    for order in orders:
        # Kernel units: fraction x sleeve equity / the close of the signal bar (sized at decision time).
        close = bars.loc[(previous_bar, order.symbol), "adj_close"]
        assert order.target_position == round_to_step(0.4 * 0.5 / close * INITIAL_CASH, 1.0)
        assert order.side == "buy" and order.status == "accepted"


def test_replaying_history_is_refused_for_the_ctrader_broker(tmp_path):
    resource = LiveBrokerResource(kind="ctrader")
    with (
        pytest.raises(Failure, match="paper broker only"),
        resource.open(None, str(tmp_path), dt.datetime(2013, 2, 1, tzinfo=dt.UTC)),
    ):
        pass
