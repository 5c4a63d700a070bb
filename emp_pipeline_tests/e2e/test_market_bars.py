import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emp_pipeline.data.sample import SampleSource
from emp_pipeline.definitions import build_definitions
from emp_pipeline.domain.bars import validate_bars
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

RANGE = ("2008-09", "2008-10")  # month partitions


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
    assert stored_twice["date"].min() >= pd.Timestamp("2008-09-01", tz="UTC")
    assert stored_twice["date"].max() <= pd.Timestamp("2008-10-31", tz="UTC")
    # Real S&P 500 data: the Lehman week closes are in the bundle.
    spx = stored_twice.loc[stored_twice["symbol"] == "^GSPC"].set_index("date")
    assert 1150 < spx.loc[pd.Timestamp("2008-09-15", tz="UTC"), "close"] < 1200
    checks = {evaluation.check_name: evaluation.passed for evaluation in first.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"] and checks["positive_prices"] and checks["unique_symbol_date"]


def test_rematerializing_a_sub_range_replaces_only_those_months(embedded_settings):
    defs = build_definitions(embedded_settings)
    assert _materialize_range(defs, *RANGE).success
    store = DatedFrameStore(embedded_settings.data_dir, "market_bars")
    before = store.read_window()
    assert _materialize_range(defs, "2008-10", "2008-10").success
    after = store.read_window()
    pd.testing.assert_frame_equal(before, after)


# ------------------------------------------------------------------ integrity (issue 15, points 1, 2 and 3)

GOOG_UNIVERSE = """
name: goog
start_date: 2008-01-02
instruments:
  - {symbol: GOOG, name: Alphabet, asset_class: equity, quote_currency: USD, tick_size: 0.01,
     pip_position: 2, lot_size: 1, min_volume: 1, step_volume: 1, calendar: XNAS}
"""
WINDOW = ("2008-09", "2008-10")  # months holding the CSV's 38 GOOG sessions (2008-09-02..2008-10-23)


def _csv_settings(tmp_path: Path) -> Settings:
    folder = tmp_path / "csv"
    folder.mkdir()
    (tmp_path / "goog.yaml").write_text(GOOG_UNIVERSE)
    return Settings.from_env(
        {
            "EMP_HOME": str(tmp_path / "emp_home"),
            "EMP_DATA_SOURCE": "csv",
            "EMP_CSV_DIR": str(folder),
            "EMP_UNIVERSE_FILE": str(tmp_path / "goog.yaml"),
        }
    )


def _write_goog_csv(settings: Settings, rows: pd.DataFrame) -> None:
    rows.assign(date=rows["date"].dt.strftime("%Y-%m-%d")).drop(columns="symbol").to_csv(
        settings.data.csv_dir / "GOOG.csv", index=False
    )


def _sample_goog() -> pd.DataFrame:
    return SampleSource().fetch(["GOOG"], date(2008, 9, 1), date(2008, 10, 23))


def _run_bars(settings: Settings, instance: DagsterInstance, replace_history: bool = False):
    defs = build_definitions(settings)
    tags = {ASSET_PARTITION_RANGE_START_TAG: WINDOW[0], ASSET_PARTITION_RANGE_END_TAG: WINDOW[1]}
    return (
        defs.resolve_job_def("daily_update_job")
        .get_subset(asset_selection={defs.resolve_assets_def("market_bars").key})
        .execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={"ops": {"market_bars": {"config": {"replace_history": replace_history}}}},
        )
    )


def _stored_bytes(settings: Settings) -> dict[str, bytes]:
    directory = settings.data_dir / "market_bars"
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.parquet"))}


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.description) for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("damage", ["truncated", "emptied", "removed"])
def test_a_short_or_missing_source_fails_the_run_and_keeps_every_stored_bar(tmp_path, damage):
    settings = _csv_settings(tmp_path)
    goog = _sample_goog()
    assert len(goog) == 38
    _write_goog_csv(settings, goog)
    instance = DagsterInstance.ephemeral()
    assert _run_bars(settings, instance).success
    before = _stored_bytes(settings)
    materialized = instance.get_materialized_partitions(AssetKey("market_bars"))

    if damage == "removed":
        (settings.data.csv_dir / "GOOG.csv").unlink()
    else:
        _write_goog_csv(settings, goog.iloc[: 10 if damage == "truncated" else 0])
    result = _run_bars(settings, instance)

    assert not result.success
    assert _stored_bytes(settings) == before
    assert instance.get_materialized_partitions(AssetKey("market_bars")) == materialized
    if damage == "truncated":
        passed, description = _checks(result)["keeps_stored_history"]
        assert not passed
        assert (
            "GOOG: 38 stored, 10 supplied, 28 stored rows missing (2008-09-16 .. 2008-10-23)" in description
        )
        failure = result.get_step_failure_events()[0].step_failure_data.error.message
        assert "blocking check(s) keeps_stored_history failed; nothing was published" in failure


def test_bars_of_a_symbol_dropped_from_the_universe_are_kept(tmp_path):
    settings = _csv_settings(tmp_path)
    spx_entry = GOOG_UNIVERSE.replace(
        "GOOG, name: Alphabet, asset_class: equity", "^GSPC, name: SPX, asset_class: index"
    )
    universe = Path(settings.data.universe_file)
    universe.write_text(GOOG_UNIVERSE + spx_entry.split("instruments:\n", 1)[1])
    _write_goog_csv(settings, _sample_goog())
    spx = SampleSource().fetch(["^GSPC"], date(2008, 9, 1), date(2008, 10, 23))
    spx.assign(date=spx["date"].dt.strftime("%Y-%m-%d")).drop(columns="symbol").to_csv(
        settings.data.csv_dir / "^GSPC.csv", index=False
    )
    instance = DagsterInstance.ephemeral()
    assert _run_bars(settings, instance).success
    before = DatedFrameStore(settings.data_dir, "market_bars").read_window()
    assert set(before["symbol"]) == {"GOOG", "^GSPC"}

    universe.write_text(spx_entry)  # GOOG delisted: out of the universe, its file gone
    (settings.data.csv_dir / "GOOG.csv").unlink()
    result = _run_bars(settings, instance)

    assert result.success
    pd.testing.assert_frame_equal(DatedFrameStore(settings.data_dir, "market_bars").read_window(), before)
    materialization = result.asset_materializations_for_node("market_bars")[-1]
    assert materialization.metadata["kept_rows_of_unfetched_symbols"].value == 38


def test_replace_history_is_the_explicit_way_to_shorten_it_and_says_what_it_removed(tmp_path):
    settings = _csv_settings(tmp_path)
    goog = _sample_goog()
    _write_goog_csv(settings, goog)
    instance = DagsterInstance.ephemeral()
    assert _run_bars(settings, instance).success
    _write_goog_csv(settings, goog.iloc[:10])

    result = _run_bars(settings, instance, replace_history=True)

    assert result.success
    passed, description = _checks(result)["keeps_stored_history"]
    assert passed and description.startswith("replace_history: 28 stored bars removed (GOOG: 38 stored")
    assert len(DatedFrameStore(settings.data_dir, "market_bars").read_window()) == 10


def test_an_implausible_bar_blocks_publication_and_lands_in_quarantine_with_the_reason(tmp_path):
    settings = _csv_settings(tmp_path)
    goog = _sample_goog()
    _write_goog_csv(settings, goog.iloc[:20])
    instance = DagsterInstance.ephemeral()
    assert _run_bars(settings, instance).success
    before = _stored_bytes(settings)

    bad = goog.copy()
    bad.loc[25, ["open", "high", "low", "close", "adj_close"]] = 1e300
    _write_goog_csv(settings, bad)
    result = _run_bars(settings, instance)

    assert not result.success
    checks = _checks(result)
    assert not checks["prices_within_bounds"][0] and not checks["no_implausible_jump"][0]
    assert checks["keeps_stored_history"][0]
    assert _stored_bytes(settings) == before
    quarantined = settings.data_dir / "_quarantine" / "market_bars" / result.run_id
    assert len(pd.read_parquet(quarantined / "all.parquet")) == 38
    reasons = json.loads((quarantined / "reasons.json").read_text())
    assert reasons[0]["check"] == "prices_within_bounds"
    assert reasons[0]["examples"] == ["GOOG 2008-10-07 open=1e+300 outside [1e-09, 1e+12]"]
