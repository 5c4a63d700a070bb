"""`emp demo`, the README's main job, end to end on the embedded defaults in a temporary home."""

import io
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    MonthlyPartitionsDefinition,
    asset,
)
from sqlalchemy import text

from emp_pipeline.broker.paper import PROTECTIVE_EXIT_PREFIX
from emp_pipeline.cli import main
from emp_pipeline.definitions import build_definitions
from emp_pipeline.demo import (
    DEMO_ACCOUNT,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    demo_instance,
    period_line,
)
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_paper_account
from emp_pipeline.registry.research import active_strategies
from emp_pipeline.settings import SETTINGS_FILE_NAME, Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

# What a rerun may change: row ids, wall-clock stamps, a fill's order row id (compared by client order id).
REGISTRY_TABLES = {
    "accounts": "SELECT broker, name, currency, initial_cash, cash FROM accounts",
    "orders": "SELECT client_order_id, a.name, strategy_id, symbol, side, quantity, order_type, bar_time, "
    "target_position, status, broker_order_id, error FROM orders JOIN accounts a ON a.id = account_id",
    "fills": "SELECT o.client_order_id, broker_fill_id, price, f.quantity, fee, filled_at "
    "FROM fills f JOIN orders o ON o.id = f.order_id",
    "paper_protective_levels": "SELECT client_order_id, stop_distance, take_profit_distance, position "
    "FROM paper_protective_levels",
    "positions": "SELECT a.name, symbol, quantity, avg_price, realised_pnl FROM positions "
    "JOIN accounts a ON a.id = account_id",
    "strategies": "SELECT id, genome, evolution_run_id, period, generation, operator, fitness, status "
    "FROM strategies",
    "strategy_status_history": "SELECT strategy_id, from_status, to_status, reason "
    "FROM strategy_status_history",
    "evolution_runs": "SELECT id, period, train_start, train_end, seed, config, costs, status "
    "FROM evolution_runs",
    "performance": "SELECT strategy_id, period, kind, sharpe, total_return, trade_count, deflated_sharpe, "
    "metrics FROM performance",
    "market_regimes": "SELECT symbol, date, classifier, regime, probabilities FROM market_regimes",
    "instruments": "SELECT symbol, tick_size, lot_size, step_volume, calendar FROM instruments",
}
WALL_CLOCK_COLUMNS = ["decided_at"]  # when a live run decided: the journal's only wall-clock column


def _months_with_data(settings, name: str) -> set[str]:
    return set(DatedFrameStore(settings.data_dir, name).read_window()["date"].dt.strftime("%Y-%m"))


def _registry_rows(settings) -> dict[str, list[tuple]]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return {
                table: sorted(map(tuple, connection.execute(text(query))), key=repr)
                for table, query in REGISTRY_TABLES.items()
            }
    finally:
        engine.dispose()


def _lake(data_dir: Path) -> dict[str, pd.DataFrame]:
    return {
        str(path.relative_to(data_dir)): pd.read_parquet(path).drop(
            columns=WALL_CLOCK_COLUMNS, errors="ignore"
        )
        for path in sorted(data_dir.rglob("*.parquet"))
    }


def test_demo_runs_every_step_paper_trades_the_champions_and_reruns_to_the_same_state(
    embedded_settings, monkeypatch
):
    monkeypatch.setenv("EMP_HOME", str(embedded_settings.home))
    out = io.StringIO()

    assert main(["demo", "--periods", "1"], out=out) == 0

    text = out.getvalue()
    assert "FAILED" not in text and "failed:" not in text  # warnings (execution-only parity) are "warned:"
    # The whole history, month partitions of the sample's daily bars 2004-08..2013-03, in the UI's instance.
    assert "market_bars: 104 materialization(s)" in text
    assert "no_calendar_gaps" not in text  # the months around the universe's dates are cut to them
    assert "walk-forward study: 1 monthly period(s) 2013-02..2013-02" in text
    # The stitched pick beside buy-and-hold and the null model (issue 13 point 7).
    (against,) = [line for line in text.splitlines() if "against doing nothing clever:" in line]
    assert "buy-and-hold Sharpe" in against and "null percentile" in against, against
    engine = make_engine(embedded_settings.database_url)
    try:
        with session_scope(engine) as session:
            champions = active_strategies(session)
            account = get_or_create_paper_account(session, DEMO_ACCOUNT)
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
    assert f"{len(orders)} order(s) of paper account 'demo' in the registry" in text

    # Every partition that has data is materialized in the instance `make ui` opens (EMP_HOME/dagster_home).
    instance = demo_instance(embedded_settings)
    for name in ("market_bars", "sensory_features", "market_regimes"):
        months = _months_with_data(embedded_settings, name)
        assert len(months) == 104
        assert instance.get_materialized_partitions(AssetKey(name)) == months, name

    # One set of settings: what the demo ran with is in the home's settings file, which `make ui` (definitions
    # built from Settings.from_env()) and `emp run` read; each period says the GA it was evolved with.
    assert f"the demo's study settings written to {embedded_settings.home / SETTINGS_FILE_NAME}" in text
    assert "2013-02: GA 40 x 8 (run seed " in text
    after_demo = Settings.from_env()
    assert (after_demo.research.population, after_demo.research.generations, after_demo.research.seed) == (
        40,
        8,
        1,
    )
    assert (after_demo.gates.min_sharpe, after_demo.gates.min_trades, after_demo.gates.max_champions) == (
        0,
        1,
        5,
    )
    walk_forward = build_definitions(after_demo).resources["walk_forward"]
    assert (walk_forward.population_size, walk_forward.generations, walk_forward.gate_max_drawdown) == (
        40,
        8,
        0.5,
    )

    # A rerun in the same home leaves registry, paper account and lake as the first run did: it resets the
    # demo's own paper account (and says so) and replays the ticks; an account of the user's is not touched.
    engine = make_engine(embedded_settings.database_url)
    try:
        with session_scope(engine) as session:
            user_account = get_or_create_paper_account(session, "paper", initial_cash=12_345.0)
    finally:
        engine.dispose()
    first_registry, first_lake = _registry_rows(embedded_settings), _lake(embedded_settings.data_dir)
    rerun = io.StringIO()

    assert main(["demo", "--periods", "1"], out=rerun) == 0

    assert (
        f"paper account 'demo' reset for the replay: the previous demo's {len(orders)} order(s), "
        f"{sum(map(len, fills.values()))} fill(s)"
    ) in rerun.getvalue()
    assert (
        f"the demo's study settings, from {embedded_settings.home / SETTINGS_FILE_NAME}" in rerun.getvalue()
    )
    second_registry = _registry_rows(embedded_settings)
    for table, rows in first_registry.items():
        assert second_registry[table] == rows, table
    assert ("paper", "paper", "USD", user_account.initial_cash, user_account.cash) in second_registry[
        "accounts"
    ]
    second_lake = _lake(embedded_settings.data_dir)
    assert second_lake.keys() == first_lake.keys()
    assert any(name.startswith("live_equity/") for name in first_lake)
    for name, frame in first_lake.items():
        pd.testing.assert_frame_equal(second_lake[name], frame, obj=name)

    # The environment still wins over the settings file.
    monkeypatch.setenv("EMP_EVOLUTION_POPULATION", "100")
    assert Settings.from_env().research.population == 100
    assert Settings.from_env().research.generations == 8


def test_a_pick_without_out_of_sample_trades_reads_no_trades():
    evolved = {
        "population_size": 40,
        "generations": 8,
        "seed": 11,
        "recorded_strategies": 90,
        "best_fitness": 1.5,
    }
    measured = {"bars": 19, "selected_sharpe": 0.0, "selected_total_return": "0.00%"}

    idle = period_line("2013-02", evolved, measured, trades=0)
    traded = period_line("2013-02", evolved, {**measured, "selected_sharpe": 1.25}, trades=3)

    assert idle.endswith("selected strategy no trades\n") and "Sharpe" not in idle
    assert "GA 40 x 8 (run seed 11)" in idle
    assert traded.endswith("selected strategy 3 trade(s), Sharpe 1.25, return 0.00%\n")
    too_few = {**measured, "selected_sharpe": "not meaningful: 3 trades < 5"}
    assert period_line("2013-02", evolved, too_few, trades=3).endswith(
        "selected strategy 3 trade(s), Sharpe not meaningful: 3 trades < 5, return 0.00%\n"
    )


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
