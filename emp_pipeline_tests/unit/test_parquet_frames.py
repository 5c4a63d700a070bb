import pandas as pd
import pytest

from emp_pipeline.storage.parquet_frames import DatedFrameStore, FrameStoreError


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


def test_writing_an_empty_window_deletes_its_rows(tmp_path):
    store = DatedFrameStore(tmp_path, "bars")
    store.write_window(_frame(["2021-01-04", "2021-01-05"], 1.0), "2021-01-04", "2021-01-06")
    store.write_window(_frame([], 0.0), "2021-01-05", "2021-01-06")
    assert store.read_window()["date"].dt.strftime("%Y-%m-%d").unique().tolist() == ["2021-01-04"]


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
