"""Bar partitions are chunks of time (months of daily bars, trading days of intraday bars), and every piece
that depends on them follows: the look-back mappings, the daily-update schedule."""

import dataclasses
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from dagster import AssetKey, RunRequest, build_schedule_context

from emp_pipeline.definitions import build_definitions
from emp_pipeline.defs.partitions import bar_chunking, bar_partitions
from emp_pipeline.domain.anchored_perception import FEATURE_HISTORY_YEARS, REGIME_HISTORY_YEARS
from emp_pipeline.domain.calendars import trading_day_of, trading_day_window
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, Settings

FX_H1_UNIVERSE = Path(SAMPLE_UNIVERSE_FILE).parent / "sample_fx_h1.yaml"
UTC = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")


def _partitions(timeframe: Timeframe, calendars: set[str], first: date, last: date | None):
    return bar_partitions(bar_chunking(timeframe, calendars), first, last)


@pytest.mark.parametrize("timeframe", [Timeframe.D1, Timeframe.W1])
def test_twenty_years_of_daily_or_weekly_bars_are_240_month_partitions(timeframe):
    partitions = _partitions(timeframe, {"XNYS"}, date(2004, 1, 2), date(2023, 12, 29))

    keys = partitions.get_partition_keys()
    assert len(keys) == 240 and (keys[0], keys[-1]) == ("2004-01", "2023-12")
    window = partitions.time_window_for_partition_key("2008-02")
    assert (window.start, window.end) == (datetime(2008, 2, 1, tzinfo=UTC), datetime(2008, 3, 1, tzinfo=UTC))


def test_a_universe_ending_mid_month_keeps_its_last_month_whole():
    keys = _partitions(Timeframe.D1, {"XNYS"}, date(2004, 8, 19), date(2013, 3, 1)).get_partition_keys()
    assert (keys[0], keys[-1], len(keys)) == ("2004-08", "2013-03", 104)


def test_a_year_of_fx_h1_bars_is_260_fx_days_following_new_york_daylight_saving():
    partitions = _partitions(Timeframe.H1, {"24x5"}, date(2017, 1, 2), date(2017, 12, 29))

    keys = partitions.get_partition_keys()
    assert len(keys) == 260
    assert (keys[0], keys[-1]) == ("2017-01-01-17:00", "2017-12-28-17:00")
    for key in keys:
        window = partitions.time_window_for_partition_key(key)
        start = pd.Timestamp(window.start).tz_convert("UTC")
        (day,) = trading_day_of("24x5", [start])
        day_start, day_end = trading_day_window("24x5", day)
        # Each partition is one FX trading day; Friday's runs on over the closed weekend to Sunday 17:00.
        assert start == day_start, key
        end = day_end
        if day.day_name() == "Friday":
            end = trading_day_window("24x5", day + pd.Timedelta(days=3))[0]  # Monday's opens Sunday 17:00
        assert pd.Timestamp(window.end).tz_convert("UTC") == end, key
    # The week New York springs forward (Sunday 2017-03-12) and the week it falls back (2017-11-05).
    opens = {key: pd.Timestamp(partitions.time_window_for_partition_key(key).start) for key in keys}
    assert opens["2017-03-09-17:00"].tz_convert("UTC").hour == 22  # Friday 03-10, EST
    assert opens["2017-03-12-17:00"].tz_convert("UTC").hour == 21  # Monday 03-13, EDT
    assert opens["2017-11-02-17:00"].tz_convert("UTC").hour == 21  # Friday 11-03, EDT
    assert opens["2017-11-05-17:00"].tz_convert("UTC").hour == 22  # Monday 11-06, EST


def test_every_bar_of_the_bundled_fx_h1_sample_falls_in_its_trading_days_partition():
    from emp_pipeline.environment import configured_source

    settings = Settings.from_env({"EMP_HOME": "/nonexistent", "EMP_UNIVERSE_FILE": str(FX_H1_UNIVERSE)})
    partitions = build_definitions(settings).resolve_assets_def("market_bars").partitions_def
    bars = configured_source(settings.data).fetch(["EURUSD"], "2017-01-01", "2018-01-01")

    keys = [partitions.get_partition_key_for_timestamp(stamp.timestamp()) for stamp in bars["date"]]
    starts = pd.DatetimeIndex(
        [partitions.time_window_for_partition_key(key).start for key in keys]
    ).tz_convert("UTC")
    assert set(keys) <= set(partitions.get_partition_keys())
    assert (trading_day_of("24x5", starts) == trading_day_of("24x5", bars["date"])).all()


def test_intraday_bars_of_an_exchange_or_crypto_are_partitioned_by_day():
    stocks = _partitions(Timeframe.H1, {"XNYS"}, date(2024, 1, 1), date(2024, 12, 31))
    assert stocks.get_partition_keys()[:3] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert len(stocks.get_partition_keys()) == 262  # weekdays; a holiday is an empty partition
    assert (
        pd.Timestamp(stocks.time_window_for_partition_key("2024-07-01").start).tz_convert(NEW_YORK).hour == 0
    )
    crypto = _partitions(Timeframe.M15, {"24x7"}, date(2024, 1, 1), date(2024, 12, 31))
    assert len(crypto.get_partition_keys()) == 366


@pytest.mark.parametrize(
    ("universe", "asset", "upstream", "years"),
    [
        (SAMPLE_UNIVERSE_FILE, "sensory_features", "market_bars", FEATURE_HISTORY_YEARS),
        (SAMPLE_UNIVERSE_FILE, "market_regimes", "sensory_features", REGIME_HISTORY_YEARS),
        (FX_H1_UNIVERSE, "market_regimes", "market_bars", REGIME_HISTORY_YEARS),
    ],
)
def test_the_look_back_mapping_reaches_the_year_anchor(tmp_path, universe, asset, upstream, years):
    """A partition of year Y reads its input from Jan 1 of Y - N on, whatever its place in the year."""
    text = Path(universe).read_text()
    # Open-ended from 1990: every anchor lies inside the partitions.
    text = "\n".join(
        "start_date: 1990-01-02" if line.startswith("start_date:") else line
        for line in text.splitlines()
        if not line.startswith("end_date:")
    )
    (tmp_path / "universe.yaml").write_text(text + "\n")
    settings = Settings.from_env(
        {"EMP_HOME": str(tmp_path), "EMP_UNIVERSE_FILE": str(tmp_path / "universe.yaml")}
    )
    assets = build_definitions(settings).resolve_assets_def(asset)
    partitions = assets.partitions_def
    mapping = assets.get_partition_mapping(AssetKey(upstream))
    for year in (2010, 2016):
        # The last partition of the year is the farthest from the anchor.
        last = partitions.get_partition_key_for_timestamp(datetime(year, 12, 31, 12, tzinfo=UTC).timestamp())
        subset = partitions.empty_subset().with_partition_keys([last])
        upstream_keys = mapping.get_upstream_mapped_partitions_result_for_partitions(
            subset, partitions, partitions
        ).partitions_subset.get_partition_keys()
        first_window = partitions.time_window_for_partition_key(min(upstream_keys))
        assert pd.Timestamp(first_window.start) <= pd.Timestamp(f"{year - years}-01-01", tz="UTC"), last


def _open_ended(tmp_path: Path, universe: Path) -> Settings:
    text = "\n".join(line for line in universe.read_text().splitlines() if not line.startswith("end_date:"))
    (tmp_path / "open.yaml").write_text(text + "\n")
    return Settings.from_env({"EMP_HOME": str(tmp_path), "EMP_UNIVERSE_FILE": str(tmp_path / "open.yaml")})


def _tick(defs, when: datetime):
    schedule = defs.resolve_schedule_def("daily_update_schedule")
    with build_schedule_context(
        scheduled_execution_time=when, repository_def=defs.get_repository_def()
    ) as context:
        return schedule.evaluate_tick(context)


def test_the_evening_update_requests_the_current_month_of_daily_bars(tmp_path):
    defs = build_definitions(_open_ended(tmp_path, Path(SAMPLE_UNIVERSE_FILE)))
    schedule = defs.resolve_schedule_def("daily_update_schedule")
    assert schedule.cron_schedule == "30 22 * * 1-5" and schedule.execution_timezone == "UTC"

    for when, month in [
        (datetime(2025, 3, 3, 22, 30, tzinfo=UTC), "2025-03"),  # a month in progress: re-materialized
        (datetime(2025, 3, 31, 22, 30, tzinfo=UTC), "2025-03"),  # its last evening
        (datetime(2025, 4, 1, 22, 30, tzinfo=UTC), "2025-04"),
    ]:
        (request,) = _tick(defs, when).run_requests
        assert isinstance(request, RunRequest) and request.partition_key == month


def test_the_update_of_fx_h1_bars_requests_the_fx_day_that_just_closed(tmp_path):
    defs = build_definitions(_open_ended(tmp_path, FX_H1_UNIVERSE))
    schedule = defs.resolve_schedule_def("daily_update_schedule")
    assert schedule.execution_timezone == "America/New_York"

    friday = datetime(2025, 3, 7, 17, 10, tzinfo=NEW_YORK)  # the week before New York springs forward
    monday = datetime(2025, 3, 10, 17, 10, tzinfo=NEW_YORK)
    assert _tick(defs, friday).run_requests[0].partition_key == "2025-03-06-17:00"
    assert _tick(defs, monday).run_requests[0].partition_key == "2025-03-09-17:00"


def test_the_update_skips_past_a_closed_universes_end(embedded_settings):
    defs = build_definitions(embedded_settings)  # the sample ends 2013-03-01
    result = _tick(defs, datetime(2025, 3, 3, 22, 30, tzinfo=UTC))
    assert not result.run_requests and "outside the universe's date range" in result.skip_message
    (request,) = _tick(defs, datetime(2013, 2, 28, 22, 30, tzinfo=UTC)).run_requests
    assert request.partition_key == "2013-02"


def test_settings_without_a_universe_file_partition_by_their_timeframe(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    settings = Settings.from_env(
        {
            "EMP_HOME": str(tmp_path),
            "EMP_DATA_SOURCE": "csv",
            "EMP_CSV_DIR": str(folder),
            "EMP_TIMEFRAME": "H1",
        }
    )
    settings = dataclasses.replace(
        settings, data=dataclasses.replace(settings.data, start_date=date(2024, 1, 1))
    )
    keys = build_definitions(settings).resolve_assets_def("market_bars").partitions_def.get_partition_keys()
    assert keys[:2] == ["2024-01-01", "2024-01-02"]  # UTC days: no calendar is known without the universe
