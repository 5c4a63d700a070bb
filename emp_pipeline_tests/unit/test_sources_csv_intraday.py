"""CsvSource with intraday files: time of day, timezones and DST, detected timeframes, epochs, one parse."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from emp_pipeline.data import csv as csv_module
from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.data.source import MalformedDataError
from emp_pipeline.domain.instruments import InstrumentTermsMissingError, load_universe
from emp_pipeline.domain.timeframes import Timeframe, bar_open_times
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.settings import UNIVERSES_DIR, Settings

HEADER = "Time,Open,High,Low,Close,Volume"
FX = {"EURUSD": "24x5"}


def _write(folder: Path, name: str, *lines: str) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(stamps: list[str], base: float = 1.05) -> list[str]:
    """One bar per stamp, prices rising by a pip a bar (each row distinct, OHLC consistent)."""
    rows = []
    for step, stamp in enumerate(stamps):
        price = base + step * 0.0001
        rows.append(f"{stamp},{price:.5f},{price + 0.0002:.5f},{price - 0.0002:.5f},{price + 0.0001:.5f},100")
    return rows


def _hours(first: str, count: int, layout: str = "%Y-%m-%d %H:%M:%S", step: str = "1h") -> list[str]:
    return [f"{stamp:{layout}}" for stamp in pd.date_range(first, periods=count, freq=step)]


def _source(folder: Path, timeframe: Timeframe = Timeframe.H1, **options: object) -> CsvSource:
    return CsvSource(folder, timeframe=timeframe, calendars=options.pop("calendars", FX), **options)


def _fetch(source: CsvSource, symbol: str = "EURUSD") -> pd.DataFrame:
    return source.fetch([symbol], "2000-01-01", "2030-01-01")


def test_hourly_bars_keep_their_open_time_in_utc(tmp_path: Path) -> None:
    # The layout of the bundled sample's origin (Dukascopy style, UTC): dd.mm.yyyy HH:MM:SS.fff
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-13 10:00", 3, "%d.%m.%Y %H:%M:%S.000")))
    bars = _fetch(_source(tmp_path))
    assert bars["date"].tolist() == [pd.Timestamp(f"2017-03-13 {hour}:00", tz="UTC") for hour in (10, 11, 12)]
    assert str(bars["date"].dtype) == "datetime64[ns, UTC]"
    assert bars["close"].tolist() == [1.0501, 1.0502, 1.0503]
    assert _source(tmp_path).fetch(["EURUSD"], "2017-03-13 11:00", "2017-03-13 12:00")["date"].tolist() == [
        pd.Timestamp("2017-03-13 11:00", tz="UTC")
    ]  # an intraday fetch is the window [start, end) of open times


@pytest.mark.parametrize(
    ("header", "stamps"),
    [
        ("<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>", ["2017.03.13,10:00", "2017.03.13,11:00"]),
        ("timestamp,open,high,low,close,volume", ["2017-03-13T10:00:00Z", "2017-03-13T11:00:00Z"]),
        ("timestamp,open,high,low,close,volume", ["2017-03-13T19:00:00+09:00", "2017-03-13T20:00:00+09:00"]),
        ("timestamp,open,high,low,close,volume", ["1489399200", "1489402800"]),
        ("timestamp,open,high,low,close,volume", ["1489399200000", "1489402800000"]),
        ("Date,Open,High,Low,Close,Volume", ["03/13/2017 10:00 AM", "03/13/2017 11:00 AM"]),
    ],
    ids=["metatrader-date-time-columns", "iso-z", "iso-plus-9", "epoch-s", "epoch-ms", "us-12-hour"],
)
def test_time_layouts_give_the_same_instants(tmp_path: Path, header: str, stamps: list[str]) -> None:
    _write(tmp_path, "EURUSD.csv", header, *_rows(stamps))
    assert _fetch(_source(tmp_path))["date"].tolist() == [
        pd.Timestamp("2017-03-13 10:00", tz="UTC"),
        pd.Timestamp("2017-03-13 11:00", tz="UTC"),
    ]


def test_same_instant_is_the_same_daily_bar_whether_epoch_or_iso_plus_nine(tmp_path: Path) -> None:
    # 2024-01-02 00:00 in Tokyo is 2024-01-01 15:00 UTC: one instant, so one day in the universe's timezone.
    _write(tmp_path, "ISO.csv", HEADER, *_rows(["2024-01-02T00:00:00+09:00", "2024-01-03T00:00:00+09:00"]))
    _write(tmp_path, "EPOCH.csv", HEADER, *_rows(["1704121200", "1704207600"]))
    daily = CsvSource(tmp_path)
    assert (
        daily.fetch(["ISO"], "2023-12-01", "2024-02-01")["date"].tolist()
        == daily.fetch(["EPOCH"], "2023-12-01", "2024-02-01")["date"].tolist()
        == [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")]
    )
    tokyo = CsvSource(tmp_path, timezone="Asia/Tokyo")  # a universe with `timezone: Asia/Tokyo`
    assert (
        tokyo.fetch(["ISO"], "2023-12-01", "2024-02-01")["date"].tolist()
        == tokyo.fetch(["EPOCH"], "2023-12-01", "2024-02-01")["date"].tolist()
        == [pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")]
    )


def test_epochs_mixing_seconds_and_milliseconds_are_refused_with_both_lines(tmp_path: Path) -> None:
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(["1489399200", "1489402800", "1489406400000"]))
    with pytest.raises(
        MalformedDataError,
        match=r"EURUSD\.csv line 4, column 'Time': epoch 1489406400000 is in milliseconds while line 2 "
        r"\(1489399200\) is in seconds",
    ):
        _fetch(_source(tmp_path))


def test_naive_local_times_are_read_in_the_universe_timezone(tmp_path: Path) -> None:
    # New York local times across the spring DST change: 01:00 EST is 06:00 UTC, 03:00 EDT is 07:00 UTC.
    _write(
        tmp_path, "BTCUSD.csv", HEADER, *_rows(["2017-03-12 00:00", "2017-03-12 01:00", "2017-03-12 03:00"])
    )
    source = _source(tmp_path, timezone="America/New_York", calendars={"BTCUSD": "24x7"})
    assert _fetch(source, "BTCUSD")["date"].dt.hour.tolist() == [5, 6, 7]


@pytest.mark.parametrize(
    ("stamps", "line", "what"),
    [
        (["2017-11-05 00:00", "2017-11-05 01:00", "2017-11-05 01:00", "2017-11-05 02:00"], 3, "occurs twice"),
        (["2017-03-12 01:00", "2017-03-12 02:00", "2017-03-12 03:00"], 3, "does not exist"),
    ],
    ids=["repeated-hour-2017-11-05", "skipped-hour-2017-03-12"],
)
def test_local_times_at_a_dst_change_are_refused_with_line_and_reason(
    tmp_path: Path, stamps: list[str], line: int, what: str
) -> None:
    _write(tmp_path, "BTCUSD.csv", HEADER, *_rows(stamps))
    source = _source(tmp_path, timezone="America/New_York", calendars={"BTCUSD": "24x7"})
    with pytest.raises(
        MalformedDataError,
        match=rf"BTCUSD\.csv line {line}, column 'Time': '{stamps[line - 2]}' {what} in America/New_York "
        r"\(a daylight-saving change\)",
    ):
        _fetch(source, "BTCUSD")


def test_a_repeated_hour_in_a_file_read_as_utc_names_the_dst_change(tmp_path: Path) -> None:
    stamps = ["2017-11-05 00:00", "2017-11-05 01:00", "2017-11-05 01:00", "2017-11-05 02:00"]
    _write(tmp_path, "BTCUSD.csv", HEADER, *_rows(stamps))
    with pytest.raises(
        MalformedDataError,
        match=r"BTCUSD\.csv: lines \[3, 4\] are different bars opening at 2017-11-05 01:00 UTC; keep one; "
        r"2017-11-05 01:00 is a daylight-saving change in America/New_York \(repeats there\).*local-time ",
    ):
        _fetch(_source(tmp_path, calendars={"BTCUSD": "24x7"}), "BTCUSD")


def test_new_york_local_fx_file_read_as_utc_is_refused_at_the_weekly_open(tmp_path: Path) -> None:
    # A New York-time export: the FX week opens at 17:00 local, written as naive 17:00, read as 17:00 UTC,
    # four hours before the market opens (21:00 UTC in summer).
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(_hours("2017-06-04 17:00", 5)))
    with pytest.raises(
        MalformedDataError,
        match=r"EURUSD\.csv line 2: the bar opening Sun 2017-06-04 17:00 UTC lies in closed time of "
        r"calendar '24x5'; if the file is in local time, declare its zone as `timezone:`",
    ):
        _fetch(_source(tmp_path))
    assert len(_fetch(_source(tmp_path, timezone="America/New_York"))) == 5  # declared: 21:00 UTC onwards


def test_fx_bars_off_the_utc_hour_grid_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:30", 4)))
    with pytest.raises(
        MalformedDataError, match=r"line 2: the bar opening Tue 2017-03-14 10:30 UTC is off the H1"
    ):
        _fetch(_source(tmp_path))


def test_timeframe_is_detected_and_checked_against_the_universe(tmp_path: Path) -> None:
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:00", 6, step="30min")))
    with pytest.raises(
        MalformedDataError,
        match=r"EURUSD\.csv holds M30 bars \(lines 2 and 3 are 30 minutes apart\) but the universe declares "
        r"H1; set `timeframe: M30`",
    ):
        _fetch(_source(tmp_path))
    assert len(_fetch(_source(tmp_path, Timeframe.M30))) == 6
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:00", 6)))
    with pytest.raises(MalformedDataError, match=r"holds H1 bars .* but the universe declares D1"):
        _fetch(_source(tmp_path, Timeframe.D1))


def test_a_file_mixing_timeframes_is_refused_with_lines(tmp_path: Path) -> None:
    quarter_hours = _hours("2017-03-14 10:00", 8, step="15min")  # 10:00 .. 11:45
    hours = _hours("2017-03-14 12:00", 5)  # then H1 bars 12:00 .. 16:00
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(quarter_hours + hours))
    with pytest.raises(
        MalformedDataError,
        match=r"EURUSD\.csv lines \[10, 14\]: 5 bars in a row 1 hour apart \(H1 bars\) "
        r"among bars 15 minutes apart \(M15\): the data mixes timeframes",
    ):
        _fetch(_source(tmp_path, Timeframe.M15))


def test_conflicting_duplicate_open_times_are_refused(tmp_path: Path) -> None:
    rows = _rows(_hours("2017-03-14 10:00", 3))
    _write(tmp_path, "EURUSD.csv", HEADER, *rows, rows[1].replace(",100", ",200"))
    with pytest.raises(
        MalformedDataError, match=r"lines \[3, 5\] are different bars opening at 2017-03-14 11:00 UTC"
    ):
        _fetch(_source(tmp_path))


def test_weekends_and_the_fx_week_need_no_bars(tmp_path: Path) -> None:
    friday = _hours("2017-03-10 19:00", 3)  # 19:00, 20:00, 21:00 UTC: the week ends 22:00 UTC (17:00 EST)
    sunday = _hours("2017-03-12 21:00", 3)  # DST began: the week opens 21:00 UTC (17:00 EDT)
    _write(tmp_path, "EURUSD.csv", HEADER, *_rows(friday + sunday))
    assert len(_fetch(_source(tmp_path))) == 6


def test_the_bundled_hourly_sample_is_the_whole_fx_year_but_christmas() -> None:
    universe = load_universe(UNIVERSES_DIR / "sample_fx_h1.yaml")
    assert universe.timeframe is Timeframe.H1
    eurusd = universe.instrument("EURUSD")
    assert (eurusd.tick_size, eurusd.pip_position, eurusd.lot_size, eurusd.min_volume) == (1e-5, 4, 1e5, 1e3)
    assert (eurusd.swap_long, eurusd.swap_short, eurusd.calendar) == (-0.42, 0.42, "24x5")
    bars = SampleSource.for_universe(SAMPLE_DIR, universe).fetch(["EURUSD"], "2017-01-01", "2018-01-01")
    assert len(bars) == 6_225
    expected = bar_open_times("24x5", Timeframe.H1, "2017-01-01", "2017-12-29 22:00")
    have = pd.DatetimeIndex(bars["date"])
    assert have.difference(expected).empty  # no bar outside the FX week
    missing = expected.difference(have)
    assert len(missing) == 15 and set(missing.date) == {date(2017, 12, 24), date(2017, 12, 25)}
    first = bars.iloc[0]
    assert first["date"] == pd.Timestamp("2017-01-01 22:00", tz="UTC")
    assert (first["open"], first["close"]) == (1.05236, 1.05227)


def test_each_file_is_parsed_once_however_many_sources_and_steps_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    _write(folder, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:00", 6)))
    _write(folder, "GBPUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:00", 6), base=1.22))
    parses: list[str] = []
    real = csv_module.read_bar_file

    def counting(path: Path, symbol: str, timezone: str = "UTC") -> csv_module.ParsedBarFile:
        parses.append(path.name)
        return real(path, symbol, timezone)

    monkeypatch.setattr(csv_module, "read_bar_file", counting)
    no_universe = Settings.from_env(
        {"EMP_DATA_SOURCE": "csv", "EMP_CSV_DIR": str(folder), "EMP_HOME": str(tmp_path)}
    )
    with pytest.raises(InstrumentTermsMissingError, match="no instrument terms for EURUSD, GBPUSD") as asked:
        configured_universe(no_universe.data)  # the inferred-universe mode reads the folder ...
    with pytest.raises(InstrumentTermsMissingError):
        configured_universe(no_universe.data)  # ... and asking again does not read it again
    template = yaml.safe_load(str(asked.value).split("\n\n", 1)[1])
    assert (template["timeframe"], template["start_date"]) == ("H1", date(2017, 3, 14))
    template["instruments"] = [
        {**entry, "asset_class": "fx", "quote_currency": "USD", "tick_size": 0.00001, "pip_position": 4,
         "lot_size": 100000, "min_volume": 1000, "step_volume": 1000, "calendar": "24x5"}
        for entry in template["instruments"]
    ]  # fmt: skip
    universe_file = tmp_path / "universe.yaml"
    universe_file.write_text(yaml.safe_dump(template), encoding="utf-8")
    settings = Settings.from_env(
        {"EMP_DATA_SOURCE": "csv", "EMP_CSV_DIR": str(folder), "EMP_UNIVERSE_FILE": str(universe_file)}
    )
    for _ in range(3):  # e.g. the universe step, the bars step and a check, each building its own source
        universe = configured_universe(settings.data)
        assert len(configured_source(settings.data).fetch(universe.symbols, "2017-03-14", "2017-03-15")) == 12
    assert sorted(parses) == ["EURUSD.csv", "GBPUSD.csv"]
    _write(
        folder, "EURUSD.csv", HEADER, *_rows(_hours("2017-03-14 10:00", 7))
    )  # a changed file is read again
    assert len(configured_source(settings.data).fetch(["EURUSD"], "2017-03-14", "2017-03-15")) == 7
    assert sorted(parses) == ["EURUSD.csv", "EURUSD.csv", "GBPUSD.csv"]


def test_building_the_source_and_universe_reads_no_data_file_a_bad_one_fails_the_fetch(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    _write(folder, "EURUSD.csv", HEADER, "not,a,bar,file,at,all")
    universe_file = UNIVERSES_DIR / "sample_fx_h1.yaml"
    settings = Settings.from_env(
        {"EMP_DATA_SOURCE": "csv", "EMP_CSV_DIR": str(folder), "EMP_UNIVERSE_FILE": str(universe_file)}
    )
    source = configured_source(settings.data)
    assert configured_universe(settings.data).timeframe is Timeframe.H1 and source.timeframe is Timeframe.H1
    with pytest.raises(MalformedDataError, match=r"EURUSD\.csv line 2, column 'Open': 'a' is not a number"):
        source.fetch(["EURUSD"], "2017-01-02", "2017-01-03")


def test_gzip_file_named_csv_is_read(tmp_path: Path) -> None:
    text = "\n".join([HEADER, *_rows(_hours("2017-03-14 10:00", 3))]) + "\n"
    (tmp_path / "EURUSD.csv").write_bytes(gzip.compress(text.encode("utf-8")))
    assert len(_fetch(_source(tmp_path))) == 3
