"""The sensory cortex: bars (and optional macro series) in, causal features in five dimensions out.

WHAT is price action, HOW participation, WHEN time, WHY macro context and ANOMALY the unusual. Every value at
bar t is computed from bars up to t (rolling windows, Wilder averages and shifted volatilities only) and from
macro values released on or before t's date. Where a look-back is incomplete the value is NaN and the row's
``warmup`` flag is True; nothing is back-filled. WHY is the exception by design: a macro series that is absent
or not yet released gives neutral 0 with its ``why_<role>_available`` flag at 0, so bars never wait on macro.
WHY changes and ranks count business days (see macro_grid), not bars.

Prices are split/dividend adjusted first (open, high and low scaled by adj_close / close), so ``what_atr_14``
is in adjusted price units, the same units as ``adj_close``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from emp_pipeline.domain.bars import BAR_COLUMNS
from emp_pipeline.domain.calendars import CALENDAR_24X7, ROUND_THE_CLOCK_CALENDARS, scheduled_trading_days

if TYPE_CHECKING:
    from emp_pipeline.domain.instruments import InstrumentMeta

MACRO_COLUMNS: tuple[str, ...] = ("series", "date", "available_from", "value")

# Thresholds of the ANOMALY flags, in the units of the feature they flag.
VOL_SHOCK_THRESHOLD = 2.0
SIGMA_THRESHOLD = 3.0
YEAR_BARS = 252
# Calendar days of macro history read before the first bar, enough for the 252-business-day VIX rank.
MACRO_LOOKBACK_DAYS = 380

# Macro roles: each is fed by the first series present among its aliases (FRED ids first, then the names
# used by the bundled sample). The credit spread needs both of its legs.
MACRO_ALIASES: dict[str, tuple[str, ...]] = {
    "policy_rate": ("DFF", "FEDFUNDS", "EFFR", "policy_rate"),
    "yield_10y": ("DGS10", "GS10", "yield_10y"),
    "vix": ("VIXCLS", "VIX"),
    "oil": ("DCOILWTICO", "WTI", "oil"),
    "credit_aaa": ("AAA", "DAAA"),
    "credit_baa": ("BAA", "DBAA"),
}
MACRO_ROLES: tuple[str, ...] = ("policy_rate", "yield_10y", "vix", "credit_spread", "oil")

WHAT_FEATURES: tuple[str, ...] = (
    "what_log_return_1",
    "what_log_return_5",
    "what_log_return_20",
    "what_trend_slope_20",
    "what_trend_slope_50",
    "what_ma_distance_20",
    "what_ma_distance_50",
    "what_ma_distance_200",
    "what_momentum_60",
    "what_rsi_14",
    "what_atr_14",
    "what_volatility_20",
)
HOW_FEATURES: tuple[str, ...] = ("how_volume_z_20", "how_range_expansion", "how_close_location")
WHEN_FEATURES: tuple[str, ...] = (
    "when_day_of_week",
    "when_month",
    "when_days_to_month_end",
    "when_days_since_prev_bar",
    "when_days_since_high_252",
    "when_days_since_low_252",
    "when_days_to_next_session",
    "when_weekend_session",
    "when_round_the_clock",
)
WHY_FEATURES: tuple[str, ...] = (
    "why_policy_rate_level",
    "why_policy_rate_change_60",
    "why_yield_10y_level",
    "why_yield_10y_change_20",
    "why_vix_level",
    "why_vix_rank_252",
    "why_credit_spread_level",
    "why_credit_spread_change_60",
    "why_oil_return_20",
    *(f"why_{role}_available" for role in MACRO_ROLES),
)
ANOMALY_FEATURES: tuple[str, ...] = (
    "anomaly_vol_shock",
    "anomaly_vol_shock_flag",
    "anomaly_gap_sigma",
    "anomaly_gap_flag",
    "anomaly_return_z",
    "anomaly_return_flag",
)
FEATURE_COLUMNS: tuple[str, ...] = (
    *WHAT_FEATURES,
    *HOW_FEATURES,
    *WHEN_FEATURES,
    *WHY_FEATURES,
    *ANOMALY_FEATURES,
)
# The features whose NaN means "look-back incomplete"; WHY is neutral-with-flag instead.
PRICE_FEATURES: tuple[str, ...] = (*WHAT_FEATURES, *HOW_FEATURES, *WHEN_FEATURES, *ANOMALY_FEATURES)


class SensoryError(ValueError):
    """Bars or macro input that the cortex cannot read; the message names what to fix."""


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (a flat market has no move to measure)."""
    out = np.full(numerator.shape, np.nan)
    valid = ~np.isnan(numerator) & ~np.isnan(denominator)
    nonzero = valid & (denominator != 0)
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    out[valid & (denominator == 0)] = 0.0
    return out


def _rolling_slope(values: pd.Series, window: int) -> np.ndarray:
    """OLS slope of values on bar index over the trailing window, from rolling sums (O(n), causal)."""
    index = pd.Series(np.arange(len(values), dtype=np.float64), index=values.index)
    sum_y = values.rolling(window).sum().to_numpy()
    sum_xy = (index * values).rolling(window).sum().to_numpy()
    sum_x = window * index.to_numpy() - window * (window - 1) / 2.0
    denominator = window * window * (window * window - 1) / 12.0
    return (window * sum_xy - sum_x * sum_y) / denominator


def _days_since_extreme(values: np.ndarray, window: int, highest: bool) -> np.ndarray:
    """Bars since the most recent max (or min) within the trailing window; NaN until the window is full.

    As ``argmax`` (``argmin``) over each reversed window would answer: ties and NaN (which ``argmax`` and
    ``argmin`` both pick first) go to the most recent bar. A monotonic queue makes it one pass instead of
    252 comparisons per bar, the costliest feature on a year of hourly bars.
    """
    out = np.full(values.shape, np.nan)
    if len(values) >= window:
        _bars_since_extreme(np.ascontiguousarray(values, dtype=np.float64), window, highest, out)
    return out


@njit(cache=True, inline="always")
def _at_least_as_extreme(value: float, other: float, highest: bool) -> bool:
    """Whether `value` ranks with or above `other`; NaN ranks above every number (argmax/argmin pick it)."""
    if math.isnan(value):
        return True
    if math.isnan(other):
        return False
    return value >= other if highest else value <= other


@njit(cache=True)
def _bars_since_extreme(values: np.ndarray, window: int, highest: bool, out: np.ndarray) -> None:
    """`_days_since_extreme` into `out` (from bar window - 1 on) with a queue of candidate positions: the
    oldest first, each more recent one ranking strictly below the ones before it."""
    queue = np.empty(len(values), dtype=np.int64)
    head, tail = 0, 0
    for t in range(len(values)):
        while tail > head and _at_least_as_extreme(values[t], values[queue[tail - 1]], highest):
            tail -= 1  # outranked by a bar at least as extreme and more recent
        queue[tail] = t
        tail += 1
        if queue[head] <= t - window:
            head += 1  # left the window
        if t >= window - 1:
            out[t] = t - queue[head]


def _wilder(values: pd.Series, period: int) -> pd.Series:
    """Wilder's smoothing (EMA with alpha 1/period), NaN until `period` values were seen."""
    return values.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def _days_to_next_session(dates: pd.DatetimeIndex, calendar: str) -> np.ndarray:
    """Calendar days from each bar to the instrument's next session as scheduled in advance.

    Only what was known at the bar's close: the trading weekdays and the regular holiday rules. Ad-hoc
    closures are left out (2001-09-10 is one day before its next scheduled session, not seven), since a rule
    that could see them would pick exactly the bars before a surprise closure.
    """
    sessions = scheduled_trading_days(calendar, dates[0], dates[-1] + pd.Timedelta(days=14))
    following = sessions.searchsorted(dates, side="right")
    out = np.full(len(dates), np.nan)
    known = following < len(sessions)
    out[known] = (sessions[following[known]] - dates[known]).days
    return out


def _symbol_price_features(bars: pd.DataFrame, meta: InstrumentMeta) -> dict[str, np.ndarray]:
    """WHAT, HOW, WHEN and ANOMALY features of one symbol's bars (sorted by date)."""
    factor = (bars["adj_close"] / bars["close"]).to_numpy()
    close = bars["adj_close"].reset_index(drop=True)
    high = pd.Series(bars["high"].to_numpy() * factor)
    low = pd.Series(bars["low"].to_numpy() * factor)
    open_ = bars["open"].to_numpy() * factor
    volume = bars["volume"].reset_index(drop=True)
    dates = pd.DatetimeIndex(bars["date"])

    log_close = np.log(close / close.iloc[0])
    log_return = log_close.diff()
    previous_close = close.shift(1)
    true_range = pd.concat(
        [high - low, (high - previous_close).abs(), (low - previous_close).abs()], axis=1
    ).max(axis=1, skipna=True)
    atr = _wilder(true_range, 14)
    vol_5 = log_return.rolling(5).std()
    vol_20 = log_return.rolling(20).std()
    vol_60 = log_return.rolling(60).std()
    previous_vol_20 = vol_20.shift(1).to_numpy()
    gains = _wilder(log_return.clip(lower=0.0), 14).to_numpy()
    losses = _wilder((-log_return).clip(lower=0.0), 14).to_numpy()
    total = gains + losses
    rsi = 100.0 * _safe_ratio(gains, total)
    rsi[(total == 0) & ~np.isnan(total)] = 50.0

    close_values = close.to_numpy()
    atr_values = atr.to_numpy()
    features: dict[str, np.ndarray] = {
        "what_log_return_1": log_return.to_numpy(),
        "what_log_return_5": log_close.diff(5).to_numpy(),
        "what_log_return_20": log_close.diff(20).to_numpy(),
        "what_trend_slope_20": _rolling_slope(log_close, 20),
        "what_trend_slope_50": _rolling_slope(log_close, 50),
        "what_momentum_60": _safe_ratio(log_close.diff(60).to_numpy(), vol_20.to_numpy() * np.sqrt(60.0)),
        "what_rsi_14": rsi,
        "what_atr_14": atr_values,
        "what_volatility_20": vol_20.to_numpy(),
    }
    for window in (20, 50, 200):
        moving_average = close.rolling(window).mean().to_numpy()
        features[f"what_ma_distance_{window}"] = _safe_ratio(close_values - moving_average, atr_values)

    volume_values = volume.to_numpy()
    volume_z = _safe_ratio(
        volume_values - volume.rolling(20).mean().to_numpy(), volume.rolling(20).std().to_numpy()
    )
    volume_z[volume_values == 0] = 0.0
    bar_range = (high - low).to_numpy()
    features["how_volume_z_20"] = volume_z
    features["how_range_expansion"] = _safe_ratio(true_range.to_numpy(), atr.shift(1).to_numpy())
    features["how_close_location"] = _safe_ratio(
        (close_values - low.to_numpy()) - (high.to_numpy() - close_values), bar_range
    )

    month_end = dates + pd.offsets.MonthEnd(0)
    features["when_day_of_week"] = dates.day_of_week.to_numpy(dtype=np.float64)
    features["when_month"] = dates.month.to_numpy(dtype=np.float64)
    features["when_days_to_month_end"] = (month_end - dates).days.to_numpy(dtype=np.float64)
    features["when_days_since_prev_bar"] = (
        pd.Series(dates).diff().dt.days.to_numpy(dtype=np.float64, na_value=np.nan)
    )
    features["when_days_since_high_252"] = _days_since_extreme(high.to_numpy(), YEAR_BARS, highest=True)
    features["when_days_since_low_252"] = _days_since_extreme(low.to_numpy(), YEAR_BARS, highest=False)
    features["when_days_to_next_session"] = _days_to_next_session(dates, meta.calendar)
    features["when_weekend_session"] = np.full(len(bars), 1.0 if meta.calendar == CALENDAR_24X7 else 0.0)
    round_the_clock = meta.calendar in ROUND_THE_CLOCK_CALENDARS
    features["when_round_the_clock"] = np.full(len(bars), 1.0 if round_the_clock else 0.0)

    shock = _safe_ratio(vol_5.to_numpy(), vol_60.to_numpy())
    gap = _safe_ratio(np.log(open_ / previous_close.to_numpy()), previous_vol_20)
    return_z = _safe_ratio(log_return.to_numpy(), previous_vol_20)
    features["anomaly_vol_shock"] = shock
    features["anomaly_vol_shock_flag"] = np.where(
        np.isnan(shock), np.nan, (shock > VOL_SHOCK_THRESHOLD) * 1.0
    )
    features["anomaly_gap_sigma"] = gap
    features["anomaly_gap_flag"] = np.where(np.abs(gap) > SIGMA_THRESHOLD, np.sign(gap), 0.0)
    features["anomaly_gap_flag"][np.isnan(gap)] = np.nan
    features["anomaly_return_z"] = return_z
    features["anomaly_return_flag"] = np.where(np.abs(return_z) > SIGMA_THRESHOLD, np.sign(return_z), 0.0)
    features["anomaly_return_flag"][np.isnan(return_z)] = np.nan
    return features


def normalise_macro(frame: pd.DataFrame) -> pd.DataFrame:
    """Accept long (series, date, available_from, value) or wide (date, available_from, a column per series).

    Dates become midnight UTC like bar dates, so a value released on a bar's day is usable on that bar.
    """
    if "date" not in frame.columns or "available_from" not in frame.columns:
        raise SensoryError(
            f"macro frame needs 'date' and 'available_from' columns (release date), got {list(frame.columns)}"
        )
    if "series" in frame.columns:
        if "value" not in frame.columns:
            raise SensoryError("a long macro frame needs a 'value' column next to 'series'")
        long = frame.loc[:, list(MACRO_COLUMNS)].copy()
    else:
        long = frame.melt(id_vars=["date", "available_from"], var_name="series", value_name="value")
    long["series"] = long["series"].astype(str)
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype("float64")
    for column in ("date", "available_from"):
        stamps = pd.to_datetime(long[column])
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        long[column] = stamps.dt.normalize().dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    long = long.dropna(subset=["value", "available_from"])
    if (long["available_from"] < long["date"]).any():
        raise SensoryError("macro rows with available_from before their observation date; check the source")
    return long.sort_values(["series", "available_from", "date"], kind="mergesort").reset_index(drop=True)


def _series_for_aliases(macro: pd.DataFrame, aliases: Iterable[str]) -> pd.DataFrame | None:
    present = set(macro["series"].unique())
    for alias in aliases:
        if alias in present:
            return macro.loc[macro["series"] == alias, ["available_from", "value"]]
    return None


def _align_on_release(dates: pd.Series, series: pd.DataFrame) -> np.ndarray:
    """The latest value released on or before each date (merge_asof backward on the release date)."""
    left = pd.DataFrame({"date": dates.to_numpy()}).astype({"date": "datetime64[ns, UTC]"})
    right = series.sort_values("available_from", kind="mergesort")
    merged = pd.merge_asof(left, right, left_on="date", right_on="available_from", direction="backward")
    return merged["value"].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class _MacroRole:
    level: str | None
    change: str | None
    change_days: int
    change_kind: str  # "diff" for rates in points, "log" for prices, "rank" for percentile rank


_ROLE_FEATURES: dict[str, _MacroRole] = {
    "policy_rate": _MacroRole("why_policy_rate_level", "why_policy_rate_change_60", 60, "diff"),
    "yield_10y": _MacroRole("why_yield_10y_level", "why_yield_10y_change_20", 20, "diff"),
    "vix": _MacroRole("why_vix_level", "why_vix_rank_252", YEAR_BARS, "rank"),
    "credit_spread": _MacroRole("why_credit_spread_level", "why_credit_spread_change_60", 60, "diff"),
    "oil": _MacroRole(None, "why_oil_return_20", 20, "log"),
}


def _role_values(macro: pd.DataFrame, dates: pd.Series, role: str) -> np.ndarray | None:
    if role == "credit_spread":
        aaa = _series_for_aliases(macro, MACRO_ALIASES["credit_aaa"])
        baa = _series_for_aliases(macro, MACRO_ALIASES["credit_baa"])
        if aaa is None or baa is None:
            return None
        return _align_on_release(dates, baa) - _align_on_release(dates, aaa)
    series = _series_for_aliases(macro, MACRO_ALIASES[role])
    return None if series is None else _align_on_release(dates, series)


def macro_grid(bar_dates: pd.Series) -> pd.DatetimeIndex:
    """Business days from a year and a bit before the first bar to the last bar, plus every bar date.

    WHY look-backs run on this grid rather than on a symbol's bars, so a symbol with a short history still
    gets macro changes and ranks from its first bar; the grid ends at the last bar, so nothing later is read.
    """
    first, last = bar_dates.min(), bar_dates.max()
    business_days = pd.bdate_range(first - pd.Timedelta(days=MACRO_LOOKBACK_DAYS), last, tz="UTC")
    return business_days.union(pd.DatetimeIndex(bar_dates.unique())).astype("datetime64[ns, UTC]")


def _macro_features(macro: pd.DataFrame | None, grid: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """All WHY columns on the grid; an absent role (or one still in its look-back) is 0 with flag 0."""
    dates = pd.Series(grid)
    features: dict[str, np.ndarray] = {}
    for role, spec in _ROLE_FEATURES.items():
        values = None if macro is None else _role_values(macro, dates, role)
        if values is None:
            level = change = np.full(len(grid), np.nan)
        else:
            series = pd.Series(values)
            level = values
            if spec.change_kind == "diff":
                change = series.diff(spec.change_days).to_numpy()
            elif spec.change_kind == "log":
                change = np.log(series).diff(spec.change_days).to_numpy()
            else:
                change = series.rolling(spec.change_days).rank(pct=True).to_numpy() - 0.5
        available = ~np.isnan(level) & ~np.isnan(change)
        features[f"why_{role}_available"] = available.astype(np.float64)
        if spec.level is not None:
            features[spec.level] = np.where(available, level, 0.0)
        if spec.change is not None:
            features[spec.change] = np.where(available, change, 0.0)
    return features


def macro_coverage(features: pd.DataFrame) -> dict[str, float]:
    """Share of bars on which each macro role was available: the asset's metadata says what WHY knew."""
    if features.empty:
        return {role: 0.0 for role in MACRO_ROLES}
    return {role: float(features[f"why_{role}_available"].mean()) for role in MACRO_ROLES}


class SensoryCortex:
    """Turns canonical bars into the five-dimension feature frame for a known set of instruments."""

    def __init__(self, instruments: Sequence[InstrumentMeta]) -> None:
        self._instruments = {meta.symbol: meta for meta in instruments}

    def _meta(self, symbol: str) -> InstrumentMeta:
        meta = self._instruments.get(symbol)
        if meta is None:
            raise SensoryError(
                f"symbol {symbol!r} has no InstrumentMeta; add it to the universe the cortex was built with"
            )
        return meta

    def compute(self, bars: pd.DataFrame, macro: pd.DataFrame | None = None) -> pd.DataFrame:
        """Features for every bar: `date`, `symbol`, FEATURE_COLUMNS (float64) and `warmup` (bool).

        `bars` must be canonical (see domain.bars); `macro` is optional (see normalise_macro).
        """
        missing = [column for column in BAR_COLUMNS if column not in bars.columns]
        if missing:
            raise SensoryError(f"bars are missing columns {missing}; pass a canonical bar frame")
        macro_long = normalise_macro(macro) if macro is not None and not macro.empty else None
        if bars.empty:
            return empty_features()
        grid = macro_grid(bars["date"])
        why_on_grid = _macro_features(macro_long, grid)

        pieces: list[pd.DataFrame] = []
        for symbol, group in bars.groupby("symbol", sort=True):
            features = _symbol_price_features(group, self._meta(str(symbol)))
            positions = grid.get_indexer(pd.DatetimeIndex(group["date"]))
            features.update({column: values[positions] for column, values in why_on_grid.items()})
            frame = pd.DataFrame({column: features[column] for column in FEATURE_COLUMNS}, dtype=np.float64)
            frame.insert(0, "symbol", str(symbol))
            frame.insert(0, "date", group["date"].array)
            pieces.append(frame)
        out = pd.concat(pieces, ignore_index=True)
        out["date"] = out["date"].astype("datetime64[ns, UTC]")
        out["warmup"] = out.loc[:, list(PRICE_FEATURES)].isna().any(axis=1)
        return out


def empty_features() -> pd.DataFrame:
    """A zero-row feature frame with the canonical columns and dtypes."""
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in FEATURE_COLUMNS})
    frame.insert(0, "symbol", pd.Series(dtype="object"))
    frame.insert(0, "date", pd.Series(dtype="datetime64[ns, UTC]"))
    frame["warmup"] = pd.Series(dtype="bool")
    return frame
