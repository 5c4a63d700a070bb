"""Perception resources: FRED macro series for WHY (emp_pipeline/data/fred.py) and the regime classifier."""

from __future__ import annotations

from dagster import ConfigurableResource

from emp_pipeline.data.fred import FRED_BASE_URL, FredSource
from emp_pipeline.domain.study_windows import StudyWindows


class FredResource(ConfigurableResource):
    """FRED's API for the WHY features; the key arrives as EnvVar("FRED_API_KEY"), None when it is unset."""

    api_key: str | None = None
    base_url: str = FRED_BASE_URL
    timeout_seconds: float = 15.0

    @property
    def is_configured(self) -> bool:
        return bool(self.api_key)

    def source(self) -> FredSource:
        return FredSource(self.api_key, base_url=self.base_url, timeout_seconds=self.timeout_seconds)


class RegimeClassifierResource(ConfigurableResource):
    """Which regime classifier `market_regimes` runs: "rules" (default) or "hmm" (EMP_REGIME_CLASSIFIER)."""

    kind: str = "rules"
    # The universe's bars per year: the rule classifier's ranking window and the HMM's minimum training set
    # are spans of time turned into bars (domain/study_windows.py).
    periods_per_year: int = 252

    def windows(self) -> StudyWindows:
        return StudyWindows(self.periods_per_year)
