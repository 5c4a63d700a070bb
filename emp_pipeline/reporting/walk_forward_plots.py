"""The walk-forward study's pictures: the stitched out-of-sample equity and drawdown, and the GA's fitness
per generation.

Rendered with matplotlib's Agg canvas straight to PNG bytes (no pyplot, no display, no global state) so an
asset can embed them in markdown metadata, which the UI shows on the materialization.
"""

from __future__ import annotations

import base64
import io

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emp_pipeline.reporting.formatting import PercentAxisFormatter

CURVE_COLUMNS = ("date", "period", "equity", "drawdown")
HISTORY_COLUMNS = ("generation", "best_fitness", "mean_fitness")


class WalkForwardPlotError(ValueError):
    """The frame cannot be plotted; the message names the missing columns."""


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise WalkForwardPlotError(f"{what} frame is missing columns {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise WalkForwardPlotError(f"{what} frame is empty: nothing to plot")


def _png(figure: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def equity_drawdown_png(curve: pd.DataFrame, dpi: int = 72) -> bytes:
    """Equity (top) and drawdown (bottom) of the stitched curve; dotted lines mark where periods begin."""
    _require(curve, CURVE_COLUMNS, "curve")
    ordered = curve.sort_values("date", kind="mergesort")
    dates = pd.to_datetime(ordered["date"], utc=True).dt.tz_localize(None)
    figure = Figure(figsize=(9, 5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.4))
    top.plot(dates, ordered["equity"], color="#1f77b4", linewidth=1.4)
    top.axhline(1.0, color="#999999", linewidth=0.8)
    top.set_ylabel("equity (start = 1)")
    top.set_title(f"Walk-forward out of sample: {ordered['period'].nunique()} period(s), {len(ordered)} bars")
    bottom.fill_between(dates, ordered["drawdown"], 0.0, color="#d62728", alpha=0.4, linewidth=0)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentAxisFormatter())
    starts = dates.groupby(ordered["period"].to_numpy()).min().sort_values()
    for start in starts.iloc[1:]:
        for axis in (top, bottom):
            axis.axvline(start, color="#bbbbbb", linewidth=0.7, linestyle=":")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    return _png(figure, dpi)


def fitness_per_generation_png(history: pd.DataFrame, title: str = "", dpi: int = 72) -> bytes:
    """Best and mean training fitness of each generation (one GA run)."""
    _require(history, HISTORY_COLUMNS, "history")
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    axis = figure.subplots()
    axis.plot(history["generation"], history["best_fitness"], marker="o", label="best", color="#2ca02c")
    axis.plot(history["generation"], history["mean_fitness"], marker=".", label="mean", color="#7f7f7f")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("generation")
    axis.set_ylabel("training fitness")
    axis.set_title(title or "Fitness per generation")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return _png(figure, dpi)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline (the UI renders data URLs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
