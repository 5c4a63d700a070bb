"""Every window of a study in bars of its universe's timeframe, derived in this one place.

Two kinds of window, and the rule that decides between them (docs/architecture.md, "Windows and
annualisation"):

* **counts of bars**: what describes the shape of a price path (feature look-backs such as the 20-bar
  volatility, the 14-bar ATR, the 252-bar extremes) is the same number of bars on every timeframe; those
  live where they are used (domain/sensory.py) and are not converted.
* **spans of time converted to bars**: what must cover enough *market history* (the walk-forward training
  window, its embargo, the regime volatility ranking and its warm-up, the HMM's minimum training set, the
  annualisation of every metric) is a span of time, turned into bars with `periods_per_year` of the
  universe. On daily exchange bars the spans give exactly the figures the daily study has always used
  (756, 252, 5, 252), so daily results stay bit-identical. The regime ranking and its warm-up are capped
  in bars (at three and one years of the most open daily calendar), which only intraday bars reach.

A universe that mixes calendars (FX next to shares next to crypto) is researched on one panel, the union of
its instruments' bars: a year of that panel holds as many rows as the most open calendar has bars, so its
factor is the LARGEST of its instruments' `periods_per_year` (a daily universe with crypto: 365).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from emp_pipeline.domain.timeframes import Timeframe, periods_per_year

MONTHS_PER_YEAR = 12
WEEKS_PER_YEAR = 52
# The default walk-forward training span: three years of history (756 daily exchange bars).
DEFAULT_TRAIN_MONTHS = 36
# Regimes rank volatility over three years and need one year of it before labelling, in bars at most the
# caps below (see `regime_volatility_lookback`).
REGIME_RANKING_YEARS = 3
REGIME_WARMUP_YEARS = 1
# Three and one years of the most open daily calendar (crypto, 365 days a year): no daily or weekly span
# reaches them, intraday ones do.
REGIME_RANKING_MAX_BARS = 3 * 365
REGIME_WARMUP_MAX_BARS = 365
# The HMM needs a year of bars before the year it labels.
HMM_MIN_TRAINING_YEARS = 1
# Trading days per calendar day never exceed 250/366 on an exchange (weekends and a few holidays): used to
# turn a count of bars into calendar days that surely hold them.
_MIN_SHARE_OF_CALENDAR_OPEN = 250.0 / 252.0
_DAYS_PER_LEAP_YEAR = 366
_LOOKBACK_MARGIN_DAYS = 14


class StudyWindowError(ValueError):
    """A window cannot be derived as asked; the message names the input and its accepted range."""


def universe_periods_per_year(timeframe: Timeframe | str, calendars: Iterable[str]) -> int:
    """The annualisation factor of a universe: the largest of its instruments' (see the module doc)."""
    factors = [periods_per_year(Timeframe.parse(timeframe), calendar) for calendar in calendars]
    if not factors:
        raise StudyWindowError("a universe without instruments has no periods per year; list its instruments")
    return max(factors)


@dataclass(frozen=True)
class StudyWindows:
    """The study's windows for a universe whose year holds ``periods_per_year`` bars.

    ``train_months`` is the walk-forward training span (EMP_WALK_FORWARD_TRAIN_MONTHS): three years by
    default; a short intraday sample can train on a few months instead.
    """

    periods_per_year: int
    train_months: int = DEFAULT_TRAIN_MONTHS

    def __post_init__(self) -> None:
        if self.periods_per_year < 1:
            raise StudyWindowError(f"periods_per_year must be >= 1, got {self.periods_per_year}")
        if self.train_months < 1:
            raise StudyWindowError(
                f"train_months must be >= 1 (a month of training), got {self.train_months}"
            )

    @classmethod
    def for_universe(
        cls, timeframe: Timeframe | str, calendars: Iterable[str], train_months: int = DEFAULT_TRAIN_MONTHS
    ) -> StudyWindows:
        return cls(universe_periods_per_year(timeframe, calendars), train_months)

    def bars_in_years(self, years: float) -> int:
        """Bars in a span of ``years`` (rounded to the nearest bar)."""
        return round(years * self.periods_per_year)

    @property
    def train_bars(self) -> int:
        """Walk-forward training window: ``train_months`` of bars (756 on daily exchange bars)."""
        return self.bars_in_years(self.train_months / MONTHS_PER_YEAR)

    @property
    def min_train_bars(self) -> int:
        """A period is evolved only with at least a third of the training window behind it (252 daily)."""
        return self.train_bars // 3

    @property
    def embargo_bars(self) -> int:
        """At least one week of bars between training and test (5 daily exchange bars, 120 FX H1 bars)."""
        return math.ceil(self.periods_per_year / WEEKS_PER_YEAR)

    @property
    def regime_volatility_lookback(self) -> int:
        """Bars the rule classifier ranks volatility over: three years, at most 1,095 bars.

        What is ranked is a 20-bar volatility: among 1,095 bars (~55 of its own disjoint windows) its 80th
        percentile is as settled as a longer span would make it, and a longer span only delays the first
        label. Daily and weekly bars never reach the cap (756 on exchange days, 1,095 on crypto days, 156
        weeks); intraday bars do: 1,095 FX H1 bars are about nine weeks, so a one-year H1 sample has regimes.
        """
        return min(self.bars_in_years(REGIME_RANKING_YEARS), REGIME_RANKING_MAX_BARS)

    @property
    def regime_min_history(self) -> int:
        """Bars of volatility the rule classifier needs before it labels: one year, at most 365 bars (252
        daily; about three weeks of FX H1)."""
        return min(self.bars_in_years(REGIME_WARMUP_YEARS), REGIME_WARMUP_MAX_BARS)

    @property
    def hmm_min_training_bars(self) -> int:
        """Training bars below which the HMM leaves a symbol's year in warm-up: one year (252 daily)."""
        return self.bars_in_years(HMM_MIN_TRAINING_YEARS)

    @property
    def training_lookback_days(self) -> int:
        """Calendar days before a period that surely hold its training window and embargo."""
        bars = self.train_bars + self.embargo_bars
        # Bars per calendar day at the least: the year's bars over a leap year, less a few holidays.
        per_day = self.periods_per_year * _MIN_SHARE_OF_CALENDAR_OPEN / _DAYS_PER_LEAP_YEAR
        return math.ceil(bars / per_day) + _LOOKBACK_MARGIN_DAYS
