"""The regime chart: each symbol's adjusted close on a log axis, the background shaded by its regime.

Rendered with matplotlib's Agg canvas straight to PNG bytes (no pyplot, no display, no global state), so an
asset can embed it in markdown metadata. Long ranges thin the price line to a fixed number of points per
panel, so the picture stays small enough for the event log whatever the range; the shading is never thinned:
every bar's regime is drawn as part of a span covering [its bar, the next bar), so a one-day regime is a thin
band, not a white gap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.dates import date2num
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from emp_pipeline.domain.regimes import REGIME_LABELS

REGIME_COLOURS: dict[str, str] = {
    "bull_trend": "#2ca02c",
    "bear_trend": "#d62728",
    "range": "#bbbbbb",
    "high_volatility": "#ff7f0e",
}
MAX_POINTS_PER_PANEL = 500


class RegimeChartError(ValueError):
    """The frames cannot be charted; the message names the missing columns."""


@dataclass(frozen=True)
class RegimeSpan:
    """Consecutive bars with one label: shaded from the first bar's time up to the next label's first bar."""

    label: str
    start: np.datetime64
    end: np.datetime64


def regime_spans(dates: np.ndarray, labels: np.ndarray) -> list[RegimeSpan]:
    """The shading of one panel: runs of equal labels over the sorted `dates`, each ending where the next bar
    begins (the last at the last bar plus the median bar spacing, one day for a single bar). An empty label
    (a warm-up day) is left unshaded."""
    if len(dates) != len(labels):
        raise RegimeChartError(f"{len(dates)} dates but {len(labels)} labels")
    if len(dates) == 0:
        return []
    times = np.asarray(dates, dtype="datetime64[ns]")
    spacing = np.median(np.diff(times)) if len(times) > 1 else np.timedelta64(1, "D")
    ends = np.append(times[1:], times[-1] + spacing)
    changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate(([0], changes))
    lasts = np.append(changes - 1, len(times) - 1)
    return [
        RegimeSpan(str(labels[first]), times[first], ends[last])
        for first, last in zip(starts, lasts, strict=True)
        if labels[first] != ""
    ]


def _thin(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Every k-th row (and always the last) so a panel never draws more than about max_points."""
    if len(frame) <= max_points:
        return frame
    step = int(np.ceil(len(frame) / max_points))
    positions = np.unique(np.append(np.arange(0, len(frame), step), len(frame) - 1))
    return frame.iloc[positions]


def regime_chart_png(
    prices: pd.DataFrame, regimes: pd.DataFrame, max_points: int = MAX_POINTS_PER_PANEL, dpi: int = 72
) -> bytes:
    """PNG bytes: one panel per symbol of `regimes`, adj_close (from `prices`) shaded by regime.

    `prices` needs date, symbol, adj_close; `regimes` date, symbol, regime (and optionally warmup: warm-up
    days are left unshaded, their neutral label is no finding). Days without a price are dropped.
    """
    for name, frame, columns in (
        ("prices", prices, ("date", "symbol", "adj_close")),
        ("regimes", regimes, ("date", "symbol", "regime")),
    ):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise RegimeChartError(f"{name} frame is missing columns {missing}")
    labelled = regimes.assign(warmup=regimes["warmup"] if "warmup" in regimes.columns else False)
    joined = labelled.loc[:, ["date", "symbol", "regime", "warmup"]].merge(
        prices.loc[:, ["date", "symbol", "adj_close"]], on=["date", "symbol"], how="inner"
    )
    symbols = sorted(joined["symbol"].astype(str).unique())
    figure = Figure(figsize=(9.0, 1.9 * max(len(symbols), 1) + 0.5), dpi=dpi, layout="constrained")
    if not symbols:
        figure.text(0.5, 0.5, "no regimes to chart", ha="center", va="center")
    axes = figure.subplots(len(symbols), 1, squeeze=False, sharex=True)[:, 0] if symbols else []
    limits: list[float] = []
    for ax, symbol in zip(axes, symbols, strict=True):
        full = joined.loc[joined["symbol"] == symbol].sort_values("date")
        panel = _thin(full, max_points)
        dates = panel["date"].dt.tz_convert(None).to_numpy()
        ax.plot(dates, panel["adj_close"].to_numpy(dtype=np.float64), color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(symbol, fontsize=8)
        ax.tick_params(labelsize=7)
        full_dates = full["date"].dt.tz_convert(None).to_numpy()
        labels = np.where(full["warmup"].to_numpy(dtype=bool), "", full["regime"].astype(str).to_numpy())
        spans = regime_spans(full_dates, labels)
        for label in REGIME_LABELS:
            # Tiles that meet exactly: without antialiasing no seam shows between neighbouring spans.
            ax.broken_barh(
                [
                    (date2num(span.start), date2num(span.end) - date2num(span.start))
                    for span in spans
                    if span.label == label
                ],
                (0.0, 1.0),
                transform=ax.get_xaxis_transform(),
                color=REGIME_COLOURS[label],
                alpha=0.35,
                linewidth=0.0,
                antialiased=False,
            )
        limits += [date2num(full_dates[0]), date2num(spans[-1].end if spans else full_dates[-1])]
    if symbols:
        axes[0].set_xlim(min(limits), max(limits))  # shared by every panel
        handles = [Patch(color=REGIME_COLOURS[label], alpha=0.5, label=label) for label in REGIME_LABELS]
        axes[0].legend(handles=handles, loc="upper left", fontsize=7, ncol=4, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
