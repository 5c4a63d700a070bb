"""How numbers read in the UI: ratios rounded, returns as percent, no negative zero, tables cut to a page."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from emp_pipeline.reporting.formatting import (
    PercentAxisFormatter,
    markdown_tables,
    metric_text,
    percent_metadata,
    percent_text,
    ratio_metadata,
    ratio_text,
    rounded,
    short_id,
)


def test_ratios_round_to_two_decimals_and_never_read_as_negative_zero():
    assert ratio_text(0.0007239727601757728) == "0.00"
    assert ratio_text(1.23456) == "1.23"
    assert ratio_text(-0.004) == "0.00"
    assert ratio_text(-0.4) == "-0.40"
    assert math.copysign(1.0, rounded(-0.0001)) == 1.0
    assert [ratio_text(value) for value in (None, math.nan, math.inf, "text")] == ["n/a"] * 4


def test_returns_and_drawdowns_read_as_percent():
    assert percent_text(0.0007239727601757728) == "0.07%"
    assert percent_text(-0.1234567) == "-12.35%"
    assert percent_text(-0.00001) == "0.00%"
    assert percent_text(-0.0) == "0.00%"
    assert percent_text(0.0125, signed=True) == "+1.25%"
    assert percent_text(-0.00001, signed=True) == "0.00%"
    assert percent_text(0.123, 1) == "12.3%"
    assert percent_text(math.nan) == "n/a"


def test_metadata_values_keep_ratios_plottable():
    sharpe = ratio_metadata(np.float64(0.0007239727601757728))
    assert sharpe.value == 0.0 and math.copysign(1.0, sharpe.value) == 1.0
    assert ratio_metadata(1.23456).value == 1.23
    assert ratio_metadata(math.nan).value == "n/a"
    assert percent_metadata(-0.0).value == "0.00%"
    assert percent_metadata(-0.031).value == "-3.10%"


def test_metric_cells_follow_the_metric_name():
    assert metric_text("max_drawdown", -0.05) == "-5.00%"
    assert metric_text("total_return", 0.2) == "20.00%"
    assert metric_text("buy_and_hold_return", 0.2) == "20.00%"
    assert metric_text("sharpe", 1.234) == "1.23"
    assert metric_text("trade_count", np.int64(1234)) == "1,234"
    assert metric_text("strategy_id", "abc") == "abc"
    assert metric_text("passes", True) == "True"


def test_wide_tables_are_split_and_long_ids_shortened():
    frame = pd.DataFrame(
        {
            "strategy_id": ["0123456789abcdef0123456789abcdef", "short"],
            **{f"metric_{index}": [0.123456, -0.0001] for index in range(10)},
        }
    )
    text = markdown_tables(frame, keys=("strategy_id",), id_columns=("strategy_id",), max_columns=6)
    tables = text.split("\n\n")
    assert len(tables) == 2  # 10 metrics, 5 per table beside the key column
    for table in tables:
        header = table.splitlines()[0]
        assert header.count("|") - 1 <= 6 and "strategy_id" in header
    assert "01234567 " in text and "0123456789abcdef0" not in text and "short" in text
    assert "0.12" in text and "-0" not in text and "0.123456" not in text
    assert short_id("0123456789abcdef") == "01234567" and short_id("123456789") == "123456789"
    assert markdown_tables(pd.DataFrame()) == "none"
    with pytest.raises(ValueError, match=r"columns \['period'\] are not in the frame"):
        markdown_tables(frame, keys=("period",))


def test_percent_axis_labels_keep_small_ticks_apart_and_never_show_negative_zero():
    formatter = PercentAxisFormatter()
    labels = formatter.format_ticks([-0.004, -0.003, -0.002, -0.001, 0.0])
    assert labels == ["-0.4%", "-0.3%", "-0.2%", "-0.1%", "0.0%"]
    assert PercentAxisFormatter().format_ticks([-0.2, -0.1, -0.0]) == ["-20%", "-10%", "0%"]

    figure = Figure()
    axis = figure.subplots()
    axis.fill_between([0, 1, 2], [0.0, -0.0015, -0.0004], 0.0)
    axis.yaxis.set_major_formatter(PercentAxisFormatter())
    figure.canvas.draw()
    shown = [label.get_text() for label in axis.get_yticklabels()]
    assert shown and len(set(shown)) == len(shown)
    assert not any(text.replace("\u2212", "-").startswith("-0%") for text in shown), shown
