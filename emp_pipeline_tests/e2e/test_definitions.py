import subprocess
import sys

from dagster import build_resources

from emp_pipeline.definitions import build_definitions


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
