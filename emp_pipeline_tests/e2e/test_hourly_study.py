"""The hourly EURUSD study on the bundled H1 sample, through real Dagster runs.

Settings point at `sample_fx_h1.yaml` (EMP_UNIVERSE_FILE, EMP_TIMEFRAME=H1) and train on three months
(EMP_WALK_FORWARD_TRAIN_MONTHS=3): `daily_update_job` stores bars, features and regimes of Jan-May 2017,
`evolution_job` evolves and measures May 2017, the report stitches it. Every window is in hours.
"""

import pandas as pd
from dagster import AssetKey, DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emp_pipeline.definitions import build_definitions
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.settings import UNIVERSES_DIR, Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
FX_H1_PER_YEAR = 6240


def _metadata(result, asset: str) -> dict[str, object]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.step_materialization_data.materialization.asset_key == AssetKey(asset)
    ]
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def test_the_hourly_sample_study_runs_bars_to_report_with_windows_in_hours(tmp_path):
    settings = Settings.from_env(
        {
            "EMP_HOME": str(tmp_path / "emp_home"),
            "EMP_UNIVERSE_FILE": str(UNIVERSES_DIR / "sample_fx_h1.yaml"),
            "EMP_TIMEFRAME": "H1",
            "EMP_WALK_FORWARD_TRAIN_MONTHS": "3",
            "EMP_EVOLUTION_POPULATION": "12",
            "EMP_EVOLUTION_GENERATIONS": "3",
            "EMP_NULL_GENOMES": "50",
        }
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    assert (
        defs.resolve_job_def("universe_job").execute_in_process(instance=instance, run_config=QUIET).success
    )
    # FX-day partitions, keyed by their 17:00 New York opening: trading days 2017-01-02 .. 2017-05-31.
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: "2017-01-01-17:00",
        ASSET_PARTITION_RANGE_END_TAG: "2017-05-30-17:00",
    }
    update = defs.resolve_job_def("daily_update_job").execute_in_process(
        instance=instance, tags=tags, run_config=QUIET
    )
    assert update.success
    checks = {e.check_name: e.passed for e in update.get_asset_check_evaluations()}
    # Weekends are closed time, not gaps; every bar lies in the FX week.
    assert checks["no_calendar_gaps"] and checks["on_calendar"] and checks["unique_symbol_date"]

    bars = DatedFrameStore(settings.data_dir, "market_bars").read_window()
    features = DatedFrameStore(settings.data_dir, "sensory_features").read_window()
    regimes = DatedFrameStore(settings.data_dir, "market_regimes").read_window()
    assert len(bars) == len(features) == len(regimes) > 2000
    hours = pd.DatetimeIndex(bars["date"]).hour
    assert hours.nunique() == 24 and not (pd.DatetimeIndex(bars["date"]).day_of_week == 5).any()
    pd.testing.assert_series_equal(features["date"], bars["date"], check_names=False)
    # The volatility ranking waits for 365 hours of volatility (capped in bars, study_windows.py), about
    # three weeks: then every bar has a label, and the labels are more than one.
    warm = regimes.loc[regimes["warmup"], "date"]
    assert 365 <= len(warm) < 400 and warm.max() < pd.Timestamp("2017-02-01", tz="UTC")
    assert regimes.loc[~regimes["warmup"], "regime"].nunique() >= 3

    evolution = defs.resolve_job_def("evolution_job").execute_in_process(
        instance=instance, partition_key="2017-05", run_config=QUIET
    )
    assert evolution.success
    evolved = _metadata(evolution, "evolved_strategies")
    assert "(1560 bars, embargo 120 bars, period starts 2017-05-01)" in evolved["train_window"]
    measured = DatedFrameStore(settings.data_dir, "strategy_performance").read_window()
    assert measured["date"].min() >= pd.Timestamp("2017-05-01", tz="UTC")
    assert measured["date"].max() < pd.Timestamp("2017-06-01", tz="UTC")
    assert pd.DatetimeIndex(measured["date"]).hour.nunique() == 24

    report = defs.resolve_job_def("research_job").execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[AssetKey("walk_forward_report")]
    )
    assert report.success
    metadata = _metadata(report, "walk_forward_report")
    assert metadata["periods_per_year"] == FX_H1_PER_YEAR and metadata["periods"] == 1
    assert metadata["rows"] == len(measured.query("series == 'strategy' and rank == 0"))
