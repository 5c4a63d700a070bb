"""The lake's datasets are named once (storage/datasets.py), and every reader and writer goes through them."""

import ast
from pathlib import Path

import pandas as pd
import pytest

import emp_pipeline
from emp_pipeline.storage.datasets import (
    DATASETS,
    LIVE_EQUITY,
    MARKET_BARS,
    PERCEPTION_INPUTS,
    QUARANTINE_DIR,
    UnknownDatasetError,
    dataset_named,
)

PACKAGE = Path(emp_pipeline.__file__).parent


def _frame(days: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"date": pd.to_datetime(days, utc=True), "symbol": "SPY", "close": range(1, len(days) + 1)}
    )


def test_each_dataset_has_one_name_and_its_own_folder(tmp_path: Path) -> None:
    names = [dataset.name for dataset in DATASETS]
    assert len(names) == len(set(names))
    assert [dataset.name for dataset in PERCEPTION_INPUTS] == [
        "market_bars",
        "sensory_features",
        "market_regimes",
    ]
    assert MARKET_BARS.store(tmp_path).directory == tmp_path / "market_bars"
    assert LIVE_EQUITY.store(tmp_path, "account_3").directory == tmp_path / "live_equity" / "account_3"
    assert MARKET_BARS.quarantine_store(tmp_path, "run-1").directory == (
        tmp_path / QUARANTINE_DIR / "market_bars" / "run-1"
    )


def test_what_a_store_writes_the_dataset_reads_back_by_window(tmp_path: Path) -> None:
    frame = _frame(["2024-01-02", "2024-01-03", "2024-01-04"])
    MARKET_BARS.store(tmp_path).write_window(
        frame, pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-05", tz="UTC")
    )

    pd.testing.assert_frame_equal(MARKET_BARS.read(tmp_path), frame)
    middle = MARKET_BARS.read(tmp_path, "2024-01-03", "2024-01-04")
    assert middle["date"].tolist() == [pd.Timestamp("2024-01-03", tz="UTC")]
    assert MARKET_BARS.read(tmp_path / "elsewhere").empty


def test_an_unknown_name_is_refused_with_the_datasets_there_are() -> None:
    assert dataset_named("sensory_features") is PERCEPTION_INPUTS[1]
    with pytest.raises(
        UnknownDatasetError, match="'market_bar' is no dataset of the lake; the datasets are market_bars"
    ):
        dataset_named("market_bar")


def test_the_name_market_bars_is_written_once_in_production_code() -> None:
    written = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "market_bars":
                written.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(written) == 1 and written[0].startswith("storage/datasets.py:"), written
