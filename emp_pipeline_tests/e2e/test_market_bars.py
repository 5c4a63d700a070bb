import pandas as pd
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emp_pipeline.definitions import build_definitions
from emp_pipeline.domain.bars import validate_bars
from emp_pipeline.storage.parquet_frames import DatedFrameStore

RANGE = ("2008-09-01", "2008-10-31")


def _materialize_range(defs, start: str, end: str):
    tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
    return (
        defs.resolve_job_def("daily_update_job")
        .get_subset(asset_selection={defs.resolve_assets_def("market_bars").key})
        .execute_in_process(instance=DagsterInstance.ephemeral(), tags=tags)
    )


def test_market_bars_range_materializes_once_and_twice_identically(embedded_settings):
    defs = build_definitions(embedded_settings)
    first = _materialize_range(defs, *RANGE)
    assert first.success
    store = DatedFrameStore(embedded_settings.data_dir, "market_bars")
    stored_once = store.read_window()

    second = _materialize_range(defs, *RANGE)
    assert second.success
    stored_twice = store.read_window()

    pd.testing.assert_frame_equal(stored_once, stored_twice)
    validate_bars(stored_twice)
    assert not stored_twice.duplicated(["symbol", "date"]).any()
    assert stored_twice["date"].min() >= pd.Timestamp(RANGE[0], tz="UTC")
    assert stored_twice["date"].max() <= pd.Timestamp(RANGE[1], tz="UTC")
    # Real S&P 500 data: the Lehman week closes are in the bundle.
    spx = stored_twice.loc[stored_twice["symbol"] == "^GSPC"].set_index("date")
    assert 1150 < spx.loc[pd.Timestamp("2008-09-15", tz="UTC"), "close"] < 1200
    checks = {evaluation.check_name: evaluation.passed for evaluation in first.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"] and checks["positive_prices"] and checks["unique_symbol_date"]


def test_rematerializing_a_sub_range_replaces_only_those_days(embedded_settings):
    defs = build_definitions(embedded_settings)
    assert _materialize_range(defs, *RANGE).success
    store = DatedFrameStore(embedded_settings.data_dir, "market_bars")
    before = store.read_window()
    assert _materialize_range(defs, "2008-10-01", "2008-10-10").success
    after = store.read_window()
    pd.testing.assert_frame_equal(before, after)
