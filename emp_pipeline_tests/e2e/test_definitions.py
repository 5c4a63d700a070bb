import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, build_resources

import emp_pipeline
from emp_pipeline.definitions import build_definitions
from emp_pipeline.domain.costs import Costs
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, Settings
from emp_pipeline.storage.datasets import DATASETS, dataset_named


def test_definitions_load_and_validate(embedded_settings):
    defs = build_definitions(embedded_settings)
    defs.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {"instrument_universe", "market_bars"} <= {
        key.to_user_string() for key in graph.get_all_asset_keys()
    }


def test_every_resource_initialises_from_its_defaults(embedded_settings):
    resources = build_definitions(embedded_settings).resources
    with build_resources(resources) as initialised:
        for name in resources:
            assert getattr(initialised, name) is not None, name


def test_the_code_location_loads_in_a_fresh_interpreter(tmp_path):
    """What `dagster dev` and the code server do: import the module with only the environment's defaults."""
    script = (
        "from emp_pipeline.definitions import defs\n"
        "print(len(defs.resolve_asset_graph().get_all_asset_keys()))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout.strip().splitlines()[-1]) >= 2


def test_backfill_job_leaves_freshness_to_its_own_job(embedded_settings):
    defs = build_definitions(embedded_settings)
    daily_checks = {
        key.name for key in defs.resolve_job_def("daily_update_job").asset_layer.asset_graph.asset_check_keys
    }
    assert "ohlc_consistent" in daily_checks
    assert "market_bars_fresh" not in daily_checks
    fresh_checks = {
        key.name for key in defs.resolve_job_def("freshness_job").asset_layer.asset_graph.asset_check_keys
    }
    assert fresh_checks == {"market_bars_fresh"}


def _csv_folder_with_a_broken_file(root: Path) -> Path:
    folder = root / "csv"
    folder.mkdir()
    (folder / "SPY.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,472.16,473.67,470.49,472.65,466.34,123623700\n"
        "2024-01-03,470.43,471.19,468.17,468.79,462.53,103585900\n"
    )
    (folder / "BROKEN.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,abc,473.67,470.49,472.65,466.34,1\n"
    )
    return folder


def _universe_of(root: Path, symbols: tuple[str, ...]) -> Path:
    entries = "".join(
        f"  - {{symbol: {symbol}, asset_class: equity, quote_currency: USD, tick_size: 0.01, "
        "pip_position: 2, lot_size: 1, min_volume: 1, step_volume: 1, calendar: XNYS}\n"
        for symbol in symbols
    )
    path = root / "universe.yaml"
    path.write_text(
        f"name: csv-folder\nstart_date: 2024-01-02\nend_date: 2024-01-31\ninstruments:\n{entries}"
    )
    return path


def test_a_broken_csv_fails_only_the_run_that_reads_it(tmp_path):
    folder = _csv_folder_with_a_broken_file(tmp_path)
    settings = Settings.from_env(
        {
            "EMP_HOME": str(tmp_path / "home"),
            "EMP_DATA_SOURCE": "csv",
            "EMP_CSV_DIR": str(folder),
            "EMP_UNIVERSE_FILE": str(_universe_of(tmp_path, ("SPY", "BROKEN"))),
        }
    )
    defs = build_definitions(settings)  # nothing reads the CSV files here
    defs.validate_loadable(defs)
    assert defs.resolve_job_def("live_execution_job") is not None

    job = defs.resolve_job_def("daily_update_job").get_subset(
        asset_selection={defs.resolve_assets_def("market_bars").key}
    )
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(), partition_key="2024-01", raise_on_error=False
    )

    assert not result.success
    message = result.failure_data_for_node("market_bars").error.cause.message
    assert "BROKEN.csv line 2" in message and "'abc' is not a number" in message


def test_the_code_location_loads_with_a_broken_csv_in_the_folder(tmp_path):
    folder = _csv_folder_with_a_broken_file(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-c", "from emp_pipeline.definitions import defs; print(len(defs.jobs))"],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "EMP_DATA_SOURCE": "csv",
            "EMP_CSV_DIR": str(folder),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr


def test_partitions_come_from_the_settings_handed_down(embedded_settings, tmp_path):
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        SAMPLE_UNIVERSE_FILE.read_text()
        .replace("start_date: 2004-08-19", "start_date: 2005-01-03")
        .replace("end_date: 2013-03-01", "end_date: 2012-12-31")
    )
    defs = build_definitions(
        dataclasses.replace(
            embedded_settings, data=dataclasses.replace(embedded_settings.data, universe_file=universe)
        )
    )
    bars = defs.resolve_assets_def("market_bars").partitions_def.get_partition_keys()
    assert (bars[0], bars[-1]) == ("2005-01", "2012-12")  # month partitions of daily bars
    periods = defs.resolve_assets_def("evolved_strategies").partitions_def.get_partition_keys()
    assert (periods[0], periods[-1]) == ("2008-02", "2012-12")


def test_nothing_under_defs_reads_the_settings_from_the_environment():
    """`build_definitions(settings)` is the only way settings reach the Dagster layer."""
    offenders = []
    for path in sorted((Path(emp_pipeline.__file__).parent / "defs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "from_env":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_every_asset_the_io_manager_stores_is_a_dataset_of_the_lake(embedded_settings):
    defs = build_definitions(embedded_settings)
    stored = [
        spec.key.to_user_string()
        for assets_def in defs.assets
        for spec in assets_def.specs
        if assets_def.get_io_manager_key_for_asset_key(spec.key) == "frame_io_manager"
    ]
    assert sorted(stored) == sorted(
        dataset.name for dataset in DATASETS if not dataset.name.startswith("live_")
    )
    for name in stored:
        assert dataset_named(name).name == name


def test_one_cost_knob_and_one_capital_reach_research_gates_and_the_paper_venue(embedded_settings):
    """EMP_FEE_BPS / EMP_SLIPPAGE_BPS measure new runs and price the paper venue; EMP_CAPITAL is the paper
    account's cash and the gates' replay capital (strategies already recorded keep their own costs)."""
    costs = Costs(fee_bps=2.5, slippage_bps=0.5)
    research = dataclasses.replace(embedded_settings.research, costs=costs, capital=25_000.0)
    resources = build_definitions(dataclasses.replace(embedded_settings, research=research)).resources
    assert resources["walk_forward"].evolution_config().costs == costs
    assert resources["promotion_gates"].capital == 25_000.0
    broker = resources["live_broker"]
    assert (broker.fee_bps, broker.slippage_bps, broker.initial_cash) == (2.5, 0.5, 25_000.0)
