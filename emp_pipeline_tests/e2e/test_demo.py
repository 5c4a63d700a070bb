"""`emp demo`, the README's main job, end to end on the embedded defaults in a temporary home."""

import io

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    MonthlyPartitionsDefinition,
    asset,
)

from emp_pipeline.broker.paper import PROTECTIVE_EXIT_PREFIX
from emp_pipeline.cli import main
from emp_pipeline.demo import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, demo_instance
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_paper_account
from emp_pipeline.registry.research import active_strategies
from emp_pipeline.storage.parquet_frames import DatedFrameStore


def _months_with_data(settings, name: str) -> set[str]:
    return set(DatedFrameStore(settings.data_dir, name).read_window()["date"].dt.strftime("%Y-%m"))


def test_demo_runs_every_step_and_paper_trades_the_champions(embedded_settings, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(embedded_settings.home))
    out = io.StringIO()

    assert main(["demo", "--periods", "1"], out=out) == 0

    text = out.getvalue()
    assert "FAILED" not in text and "failed:" not in text  # warnings (execution-only parity) are "warned:"
    # The whole history, month partitions of the sample's daily bars 2004-08..2013-03, in the UI's instance.
    assert "market_bars: 104 materialization(s)" in text
    assert "no_calendar_gaps" not in text  # the months around the universe's dates are cut to them
    assert "walk-forward study: 1 monthly period(s) 2013-02..2013-02" in text
    engine = make_engine(embedded_settings.database_url)
    try:
        with session_scope(engine) as session:
            champions = active_strategies(session)
            account = get_or_create_paper_account(session)
            orders = orders_for_account(session, account.id)
            fills = {o.client_order_id: fills_for_order(session, o.client_order_id) for o in orders}
    finally:
        engine.dispose()
    assert champions, text
    assert orders and {order.strategy_id for order in orders} <= {c.id for c in champions}
    # Each decision was made on a stored close and filled at a later bar's open, never on its own bar; a
    # protective exit (stop or take profit resting at the paper venue) fills inside the bar that reached it.
    assert all(order.status == "filled" for order in orders[:-2]), text
    decisions = [order for order in orders if not order.client_order_id.startswith(PROTECTIVE_EXIT_PREFIX)]
    assert decisions
    for order in decisions:
        assert all(fill.filled_at > order.bar_time for fill in fills[order.client_order_id])
    for order in orders:
        if order not in decisions:
            assert all(fill.filled_at == order.bar_time for fill in fills[order.client_order_id])
    assert f"{len(orders)} order(s) in the registry" in text

    # Every partition that has data is materialized in the instance `make ui` opens (EMP_HOME/dagster_home).
    instance = demo_instance(embedded_settings)
    for name in ("market_bars", "sensory_features", "market_regimes"):
        months = _months_with_data(embedded_settings, name)
        assert len(months) == 104
        assert instance.get_materialized_partitions(AssetKey(name)) == months, name


def test_partition_range_tags_make_one_run_over_the_range():
    """The demo's spelled-out range tags are the ones Dagster reads: one run materializes the range."""
    months = MonthlyPartitionsDefinition(start_date="2020-01-01", end_date="2020-06-01")
    seen: list[list[str]] = []

    @asset(partitions_def=months, backfill_policy=BackfillPolicy.single_run())
    def ranged(context: AssetExecutionContext) -> None:
        seen.append(context.partition_keys)

    job = Definitions(assets=[ranged]).resolve_implicit_global_asset_job_def()
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={PARTITION_RANGE_START_TAG: "2020-02-01", PARTITION_RANGE_END_TAG: "2020-04-01"},
        )
        assert result.success
        assert instance.get_materialized_partitions(AssetKey("ranged")) == {
            "2020-02-01",
            "2020-03-01",
            "2020-04-01",
        }
    assert seen == [["2020-02-01", "2020-03-01", "2020-04-01"]]
