"""The regime chart shades every bar over the whole range, one-day regimes included."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.reporting.regime_chart import RegimeChartError, regime_chart_png, regime_spans


def _frames(days: int, labels: list[str], warmup: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    dates = pd.bdate_range("2000-01-03", periods=days, tz="UTC")
    prices = pd.DataFrame({"date": dates, "symbol": "X", "adj_close": np.linspace(100.0, 200.0, days)})
    regimes = pd.DataFrame(
        {"date": dates, "symbol": "X", "regime": labels, "warmup": np.arange(days) < warmup}
    )
    return prices, regimes


def test_spans_cover_every_bar_up_to_the_next_one():
    dates = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]).to_numpy()
    labels = np.array(["", "range", "bull_trend", "bull_trend", "range"])
    spans = regime_spans(dates, labels)
    assert [(span.label, str(span.start)[:10], str(span.end)[:10]) for span in spans] == [
        ("range", "2020-01-03", "2020-01-06"),  # a one-bar regime spans to the next bar, weekend included
        ("bull_trend", "2020-01-06", "2020-01-08"),
        ("range", "2020-01-08", "2020-01-09"),  # the last bar: one median spacing
    ]
    # Contiguous: each span ends where the next begins, so no labelled bar is left white.
    assert all(left.end == right.start for left, right in itertools.pairwise(spans))
    assert regime_spans(dates[:0], labels[:0]) == []
    with pytest.raises(RegimeChartError, match="5 dates but 4 labels"):
        regime_spans(dates, labels[:4])


def test_alternating_one_day_regimes_leave_no_white_column():
    days = 120
    labels = [REGIME_LABELS[index % len(REGIME_LABELS)] for index in range(days)]
    prices, regimes = _frames(days, labels)
    image = imread(io.BytesIO(regime_chart_png(prices, regimes, dpi=72)))[..., :3]
    # The panel's middle row (between the legend and the x labels): inside the axes, every pixel is shaded.
    row = image[image.shape[0] // 2]
    white = np.all(row > 0.97, axis=1)
    inside = np.flatnonzero(~white)
    assert inside.size > 0.8 * image.shape[1]
    left, right = inside[0], inside[-1]
    assert not white[left : right + 1].any(), np.flatnonzero(white[left : right + 1])


def test_many_years_keep_every_span_and_a_small_picture():
    days = 12 * 261
    rng = np.random.default_rng(7)
    labels = list(rng.choice(list(REGIME_LABELS), size=days))
    prices, regimes = _frames(days, labels, warmup=30)
    dates = regimes["date"].dt.tz_convert(None).to_numpy()
    marks = np.where(regimes["warmup"], "", regimes["regime"]).astype(str)
    spans = regime_spans(dates, marks)
    covered = sum(int(((dates >= span.start) & (dates < span.end)).sum()) for span in spans)
    assert covered == days - 30  # every settled bar in exactly one span
    png = regime_chart_png(prices, regimes)
    assert png.startswith(b"\x89PNG") and len(png) < 150_000
