"""Live by the bar on hourly bars, through real runs of the live job (issue 12 point 5).

Two H1 bars arrive in the lake at once (a trading day's chunk re-materialized). The live sensor requests one
run per bar; executed in order, the first decides at its own hour (not at the day's newest bar) and sends the
champion's orders, the second fills them at its bar's open on the paper broker, as the kernel fills.
"""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, build_sensor_context

from emp_pipeline.defs.live.broker import LiveBrokerResource
from emp_pipeline.defs.live.job import live_execution_job
from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.live.triggers import LiveCursor, build_live_execution_sensor
from emp_pipeline.defs.perception.assets import NEWEST_BAR_METADATA
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.regimes import make_classifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.sleeve import entry_fill_price
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_paper_account
from emp_pipeline_tests.live_setup import LiveMarket, make_market, prepare_registry, write_frames

INITIAL_CASH = 100_000.0


def hourly(market: LiveMarket) -> LiveMarket:
    """The synthetic book's bars relabelled as consecutive weekday hours (FX, 24x5), features recomputed."""
    hours = pd.date_range("2017-03-06", periods=24 * 20, freq="h", tz="UTC")
    hours = hours[hours.day_of_week < 5][: len(market.dates)]
    relabel = dict(zip(market.dates, hours, strict=True))
    bars = market.bars.assign(date=market.bars["date"].map(relabel))
    features = SensoryCortex(market.instruments).compute(bars)
    regimes = make_classifier().fit(bars, features).classify(bars, features)
    return LiveMarket(bars, features, regimes, market.instruments)


def test_two_new_hours_make_two_runs_each_trading_its_own_bar(tmp_path) -> None:
    market = hourly(make_market())
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    data_dir = tmp_path / "data"
    prepare_registry(database_url, market)
    decision, following = market.dates[-2], market.dates[-1]
    write_frames(data_dir, market, until=following)  # both hours stored by one update

    instance = DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        AssetMaterialization(
            AssetKey("market_regimes"), metadata={NEWEST_BAR_METADATA: f"{following:%Y-%m-%dT%H:%M}"}
        )
    )
    sensor = build_live_execution_sensor(Timeframe.H1)
    resources = {"lake": DataLakeResource(base_dir=str(data_dir)), "live_broker": LiveBrokerResource()}
    cursor = LiveCursor(bar=market.dates[-3]).encode()  # the sensor last ran for the hour before
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        requests = sensor(context)
    labels = [f"{decision:%Y-%m-%d %H:%M}", f"{following:%Y-%m-%d %H:%M}"]
    assert [r.tags["emp/bar"] for r in requests] == labels

    run_resources = {
        "database": DatabaseResource(url=database_url),
        "lake": DataLakeResource(base_dir=str(data_dir)),
        "live_broker": LiveBrokerResource(kind="paper", initial_cash=INITIAL_CASH),
        "risk_limits": RiskLimitsResource(),
    }
    tags = []
    for request in requests:
        config = request.run_config["ops"]["execute_live_tick"]["config"]
        run_config = {
            "ops": {"execute_live_tick": {"config": {**config, "start_date": str(decision.date())}}}
        }
        result = live_execution_job.execute_in_process(
            run_config=run_config, resources=run_resources, instance=instance, tags=request.tags
        )
        assert result.success
        tags.append(instance.get_run_by_id(result.run_id).tags["emp/bar"])
    assert tags == labels  # each run decided on its own hour

    with session_scope(shared_engine(database_url)) as session:
        account = get_or_create_paper_account(session)
        orders = orders_for_account(session, account.id)
        fills = {order.symbol: fills_for_order(session, order.client_order_id) for order in orders}
    assert len(orders) == 2 and {o.side for o in orders} == {"buy"}
    assert {pd.Timestamp(o.bar_time) for o in orders} == {decision}  # decided at the first hour's close
    nxt = market.bars.loc[market.bars["date"] == following].set_index("symbol")
    for order in orders:
        (fill,) = fills[order.symbol]
        assert pd.Timestamp(fill.filled_at) == following  # at the next bar's open, not later
        adjusted_open = (
            nxt.loc[order.symbol, "open"]
            * nxt.loc[order.symbol, "adj_close"]
            / nxt.loc[order.symbol, "close"]
        )
        assert fill.price == pytest.approx(entry_fill_price(adjusted_open, 1, 1.0), rel=1e-12)
