"""Features and regimes of a window of days, computed from history that starts at a fixed anchor.

The stored value of a day must not depend on how a range of days was split into runs, so every day is
computed from history that starts at a FIXED anchor, never at the run's first day: the days of calendar
year Y are computed from data starting on Jan 1 of Y - N (N = FEATURE_HISTORY_YEARS for features,
REGIME_HISTORY_YEARS for regimes). Rolling sums, Wilder averages and the HMM's forward filter then see the
same inputs in the same order whichever run computes the day, so the stored frames are identical bit for bit.

The HMM classifier is refitted per calendar year on the REGIME_HISTORY_YEARS years strictly before Jan 1 of
that year (its training window), then filters forward from the start of that window; a symbol with fewer
training bars than a year of its timeframe holds (StudyWindows.hmm_min_training_bars) is left in warm-up
(neutral label) for that year. The rule classifier's volatility ranking and its warm-up are spans of time
in bars too (StudyWindows). The anchors are calendar years whatever the timeframe, so on intraday bars a
bar's features and regime do not depend on how the runs were split either.

The perception assets store what these functions return, and the look-ahead and parity gates judge the same
functions (`window_features`, `window_regimes` adapt them to a frame of bars), so a gate tests the
computation the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from emp_pipeline.domain.regimes import (
    NEUTRAL_LABEL,
    PROBABILITY_COLUMNS,
    REGIME_COLUMNS,
    REGIME_LABELS,
    RegimeConfig,
    RuleConfig,
    make_classifier,
)
from emp_pipeline.domain.sensory import SensoryCortex, empty_features
from emp_pipeline.domain.study_windows import StudyWindows

# Features look back 252 bars at most (counts of bars on every timeframe): two years of history also lets
# the Wilder averages settle, so a day's features equal those of a run over the whole history.
FEATURE_HISTORY_YEARS = 2
# Rules rank volatility over three years of bars; the HMM trains on the five years before each year.
REGIME_HISTORY_YEARS = 5


def year_start(year: int) -> pd.Timestamp:
    return pd.Timestamp(year=year, month=1, day=1, tz="UTC")


def year_blocks(start: pd.Timestamp, end: pd.Timestamp) -> Iterator[tuple[int, pd.Timestamp, pd.Timestamp]]:
    """(year, first, end) for each calendar year the window [start, end) touches, clipped to the window."""
    last = end - pd.Timedelta(microseconds=1)
    for year in range(start.year, last.year + 1):
        yield year, max(start, year_start(year)), min(end, year_start(year + 1))


def rows_between(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return frame.loc[(frame["date"] >= start) & (frame["date"] < end)]


def compute_features_by_year(
    cortex: SensoryCortex,
    bars: pd.DataFrame,
    macro: pd.DataFrame | None,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    """Features of the days in [start, end), each year's days computed from bars since its fixed anchor."""
    pieces = []
    for year, first, block_end in year_blocks(start, end):
        history = rows_between(bars, year_start(year - FEATURE_HISTORY_YEARS), block_end)
        if history.empty:
            continue
        pieces.append(rows_between(cortex.compute(history, macro), first, block_end))
    pieces = [piece for piece in pieces if not piece.empty]
    return pd.concat(pieces, ignore_index=True) if pieces else empty_features()


def neutral_regimes(bars: pd.DataFrame) -> pd.DataFrame:
    """Warm-up rows (neutral label, uniform probabilities) for symbols a classifier could not be fitted on."""
    frame = pd.DataFrame(
        {"date": bars["date"].array, "symbol": bars["symbol"].to_numpy(), "regime": NEUTRAL_LABEL}
    )
    for column in PROBABILITY_COLUMNS:
        frame[column] = 1.0 / len(REGIME_LABELS)
    frame["warmup"] = True
    frame["date"] = frame["date"].astype("datetime64[ns, UTC]")
    return frame.loc[:, list(REGIME_COLUMNS)]


def regime_config(kind: str, windows: StudyWindows) -> RegimeConfig:
    """The classifier of `kind` with its ranking window and warm-up in bars of the universe's timeframe."""
    rules = RuleConfig(
        volatility_lookback=windows.regime_volatility_lookback, min_history=windows.regime_min_history
    )
    return RegimeConfig(kind=kind, rules=rules)


def classify_by_year(
    kind: str,
    bars: pd.DataFrame,
    features: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    windows: StudyWindows,
) -> pd.DataFrame:
    """Regimes of the days in [start, end); year Y is fitted on years before Jan 1 of Y (see module doc)."""
    config = regime_config(kind, windows)
    pieces = []
    for year, first, block_end in year_blocks(start, end):
        anchor, training_end = year_start(year - REGIME_HISTORY_YEARS), year_start(year)
        block_bars = rows_between(bars, anchor, block_end)
        block_features = rows_between(features, anchor, block_end)
        if block_features.empty:
            continue
        untrained: list[str] = []
        if kind == "hmm":
            training_bars = block_bars.loc[block_bars["date"] < training_end]
            counts = training_bars["symbol"].value_counts()
            untrained = sorted(
                str(symbol)
                for symbol in block_bars["symbol"].unique()
                if counts.get(symbol, 0) < windows.hmm_min_training_bars
            )
            trained_bars = block_bars.loc[~block_bars["symbol"].isin(untrained)]
            window_bars = rows_between(block_bars, first, block_end)
            pieces.append(neutral_regimes(window_bars.loc[window_bars["symbol"].isin(untrained)]))
            if trained_bars.empty:
                continue
            classifier = make_classifier(config).fit(
                training_bars.loc[~training_bars["symbol"].isin(untrained)], None
            )
            labelled = classifier.classify(trained_bars, None)
        else:
            classifier = make_classifier(config).fit(block_bars, block_features)
            labelled = classifier.classify(block_bars, block_features)
        pieces.append(rows_between(labelled, first, block_end))
    pieces = [piece for piece in pieces if not piece.empty]
    if not pieces:
        return neutral_regimes(bars.iloc[0:0])
    frame = pd.concat(pieces, ignore_index=True)
    return frame.sort_values(["symbol", "date"], kind="mergesort").reset_index(drop=True)


def _span(bars: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first day, day after the last) of a frame's dates: the window a whole frame covers."""
    dates = pd.DatetimeIndex(bars["date"])
    return dates.min().normalize(), dates.max().normalize() + pd.Timedelta(days=1)


def window_features(
    cortex: SensoryCortex, macro: pd.DataFrame | None = None
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``bars -> features`` over the bars' whole span, computed as the sensory_features asset computes."""

    def compute(bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return empty_features()
        return compute_features_by_year(cortex, bars, macro, *_span(bars))

    return compute


def window_regimes(kind: str, windows: StudyWindows) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    """``(bars, features) -> regimes`` over the bars' span, computed as the market_regimes asset computes."""

    def compute(bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return neutral_regimes(bars)
        return classify_by_year(kind, bars, features, *_span(bars), windows=windows)

    return compute
