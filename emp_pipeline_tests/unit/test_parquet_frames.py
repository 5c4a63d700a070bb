import logging
import os
import stat

import pandas as pd
import pytest

from emp_pipeline.storage.parquet_frames import DatedFrameStore, FrameStoreError, HistoryLossError


def _frame(days: list[str], value: float, symbols: tuple[str, ...] = ("AAA", "BBB")) -> pd.DataFrame:
    rows = [
        {"date": pd.Timestamp(day, tz="UTC"), "symbol": symbol, "value": value}
        for day in days
        for symbol in symbols
    ]
    return pd.DataFrame(rows, columns=["date", "symbol", "value"])


def test_window_write_replaces_only_that_window_across_years(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2020-12-30", "2020-12-31", "2021-01-04"], 1.0), "2020-12-30", "2021-01-05")
    store.write_window(_frame(["2020-12-31", "2021-01-04"], 2.0), "2020-12-31", "2021-01-05")

    stored = store.read_window()
    assert len(stored) == 6
    assert not stored.duplicated(["symbol", "date"]).any()
    by_day = stored.groupby(stored["date"].dt.strftime("%Y-%m-%d"))["value"].first().to_dict()
    assert by_day == {"2020-12-30": 1.0, "2020-12-31": 2.0, "2021-01-04": 2.0}
    assert sorted(path.name for path in (tmp_path / "bars").glob("*.parquet")) == [
        "2020.parquet",
        "2021.parquet",
    ]


def test_a_shorter_frame_is_refused_naming_dataset_window_symbols_and_counts(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    days = ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"]
    store.write_window(_frame(days, 1.0), "2021-01-04", "2021-01-08")
    before = (tmp_path / "bars" / "2021.parquet").read_bytes()

    short = _frame(days, 2.0).iloc[
        :-3
    ]  # AAA and BBB on three days, then AAA only on the fourth... minus 3 rows
    with pytest.raises(HistoryLossError) as refused:
        store.write_window(short, "2021-01-04", "2021-01-08")

    message = str(refused.value)
    assert "bars" in message and "[2021-01-04, 2021-01-08)" in message
    assert "AAA: 4 stored, 3 supplied, 1 stored rows missing (2021-01-07)" in message
    assert "BBB: 4 stored, 2 supplied, 2 stored rows missing (2021-01-06 .. 2021-01-07)" in message
    assert [(s.symbol, s.stored, s.supplied, s.missing) for s in refused.value.shortfalls] == [
        ("AAA", 4, 3, 1),
        ("BBB", 4, 2, 2),
    ]
    assert (tmp_path / "bars" / "2021.parquet").read_bytes() == before


def test_an_empty_frame_never_deletes_a_window_and_nothing_is_written_in_any_year(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2020-12-31", "2021-01-04"], 1.0), "2020-12-31", "2021-01-05")
    files = {path.name: path.read_bytes() for path in (tmp_path / "bars").glob("*.parquet")}

    with pytest.raises(HistoryLossError, match="lacks 4 stored rows"):
        store.write_window(_frame([], 0.0), "2020-12-31", "2021-01-05")
    # New rows for 2020 would have been fine on their own: the refusal covers the whole write.
    with pytest.raises(HistoryLossError, match="lacks 2 stored rows"):
        store.write_window(_frame(["2020-12-31"], 5.0), "2020-12-31", "2021-01-05")

    assert {path.name: path.read_bytes() for path in (tmp_path / "bars").glob("*.parquet")} == files


def test_revised_values_and_new_rows_for_the_same_keys_are_accepted(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2021-01-04"], 1.0, ("AAA",)), "2021-01-04", "2021-01-06")
    store.write_window(_frame(["2021-01-04", "2021-01-05"], 2.0), "2021-01-04", "2021-01-06")
    assert store.read_window()["value"].tolist() == [2.0, 2.0, 2.0, 2.0]


def test_replace_history_deletes_explicitly_and_logs_what_it_removed(tmp_path, caplog):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2021-01-04", "2021-01-05"], 1.0), "2021-01-04", "2021-01-06")
    assert store.shortfalls(_frame([], 0.0), "2021-01-05", "2021-01-06")[0].symbol == "AAA"

    with caplog.at_level(logging.WARNING, logger="emp_pipeline.storage.parquet_frames"):
        store.write_window(_frame([], 0.0), "2021-01-05", "2021-01-06", replace_history=True)

    assert store.read_window()["date"].dt.strftime("%Y-%m-%d").unique().tolist() == ["2021-01-04"]
    assert "replace_history removes 2 stored rows of [2021-01-05, 2021-01-06)" in caplog.text
    assert "BBB: 1 stored, 0 supplied" in caplog.text


def test_a_symbol_less_dataset_keeps_its_dates(tmp_path):
    store = DatedFrameStore(tmp_path, "equity")
    frame = pd.DataFrame(
        {"date": pd.to_datetime(["2021-01-04", "2021-01-05"], utc=True), "equity": [1.0, 2.0]}
    )
    store.write_window(frame, "2021-01-04", "2021-01-06")
    with pytest.raises(
        HistoryLossError, match=r"rows: 2 stored, 1 supplied, 1 stored rows missing \(2021-01-05\)"
    ):
        store.write_window(frame.iloc[:1], "2021-01-04", "2021-01-06")


def test_an_orphan_temporary_file_of_a_killed_writer_is_removed_by_the_next_writer(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2021-01-04"], 1.0), "2021-01-04", "2021-01-05")
    orphan = tmp_path / "bars" / ".2021.parquet.4242.deadbeef.tmp"
    orphan.write_bytes(b"PAR1 half a file")

    store.write_window(_frame(["2021-01-05"], 1.0), "2021-01-05", "2021-01-06")

    assert not orphan.exists()
    assert sorted(path.name for path in (tmp_path / "bars").iterdir()) == [".lock", "2021.parquet"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_take_the_mode_an_ordinary_open_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        DatedFrameStore(tmp_path, "bars").write_window(
            _frame(["2021-01-04"], 1.0), "2021-01-04", "2021-01-05"
        )
        DatedFrameStore(tmp_path, "report").write_all(_frame(["2021-01-04"], 1.0))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "bars" / "2021.parquet").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "report" / "all.parquet").stat().st_mode) == mode


def test_rows_outside_the_window_are_refused_and_nothing_is_written(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2021-01-04"], 1.0), "2021-01-04", "2021-01-05")
    with pytest.raises(FrameStoreError, match="outside the window"):
        store.write_window(_frame(["2021-01-04", "2021-01-08"], 9.0), "2021-01-04", "2021-01-05")
    assert store.read_window()["value"].tolist() == [1.0, 1.0]


def test_read_window_bounds_are_half_open(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(
        _frame(["2021-01-04", "2021-01-05", "2021-01-06"], 1.0, ("AAA",)), "2021-01-01", "2021-02-01"
    )
    days = store.read_window("2021-01-05", "2021-01-06")["date"].dt.strftime("%Y-%m-%d").tolist()
    assert days == ["2021-01-05"]
    assert store.read_window("2022-01-01").empty
