"""Macro series from FRED's HTTP JSON API, dated by when each value became known.

The WHY dimension must not see a value before it was published, so every row carries `available_from`:
- series marked `use_vintages` are read from ALFRED's real-time data (output_type=4, initial release only):
  `available_from` is the observation's first-release date (`realtime_start`). Observations older than the
  series' first stored vintage get that vintage's date: later than the truth, never earlier.
- other series (daily market rates that are not revised) get `date + release_lag_days`.
The output is the long macro frame `SensoryCortex.compute(bars, macro)` reads.

A FRED outage must not block the daily update: `fetch` leaves out the series FRED could not deliver after
its retries (the sensory cortex then gives their WHY features a neutral 0 with the availability flag at 0)
and says which in the `MacroFetch` it returns, for the asset's metadata. Once one series has failed that way
the rest are not requested, so an outage costs one series' retries, not every series'. A rejected key or
an unknown series is not an outage: those still fail the run, since only a person can fix them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import requests

logger = logging.getLogger(__name__)

FRED_BASE_URL = "https://api.stlouisfed.org/fred"
# ALFRED's whole real-time range: every vintage FRED has.
REALTIME_START = "1776-07-04"
REALTIME_END = "9999-12-31"
PAGE_LIMIT = 100_000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class FredError(RuntimeError):
    """FRED could not deliver a series; the message says what to check."""


class FredNotConfiguredError(FredError):
    """No API key: set FRED_API_KEY, or run without macro features (WHY stays neutral)."""


class FredApiKeyError(FredError):
    """FRED rejected the API key; fixing the key is the only remedy, retrying won't help."""


class FredRequestError(FredError):
    """FRED rejected the request (unknown series, bad parameter) or answered with something unreadable."""


class FredUnavailableError(FredError):
    """FRED kept failing with transient errors (timeouts, 5xx, 429) after all retries."""


@dataclass(frozen=True)
class FredSeries:
    """One series to fetch and how its availability is dated (see the module docstring)."""

    series_id: str
    release_lag_days: int = 1
    use_vintages: bool = False


# Daily market series: published the next business day and not revised, so a one-day lag dates them.
DEFAULT_SERIES: tuple[FredSeries, ...] = (
    FredSeries("DFF"),  # effective federal funds rate (policy rate)
    FredSeries("DGS10"),  # 10-year Treasury constant-maturity yield
    FredSeries("VIXCLS"),  # CBOE VIX close
    FredSeries("DAAA"),  # Moody's Aaa corporate bond yield
    FredSeries("DBAA"),  # Moody's Baa corporate bond yield
    FredSeries("DCOILWTICO", release_lag_days=7),  # WTI spot, updated weekly from EIA data
)

MACRO_FRAME_COLUMNS: tuple[str, ...] = ("series", "date", "available_from", "value")


def empty_macro() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": pd.Series(dtype="object"),
            "date": pd.Series(dtype="datetime64[ns, UTC]"),
            "available_from": pd.Series(dtype="datetime64[ns, UTC]"),
            "value": pd.Series(dtype="float64"),
        }
    )


class FredSource:
    """A `requests` client for fred/series/observations with timeouts, retries and key-safe errors."""

    name = "fred"

    def __init__(
        self,
        api_key: str | None,
        series: Sequence[FredSeries] = DEFAULT_SERIES,
        base_url: str = FRED_BASE_URL,
        timeout_seconds: float = 15.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        self._api_key = api_key or None
        self.series = tuple(series)
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._session = session or requests.Session()

    @property
    def is_configured(self) -> bool:
        """False without a key: callers then pass no macro and the WHY features stay neutral."""
        return self._api_key is not None

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _get(self, params: dict[str, str | int]) -> dict:
        """One GET with retries on transient failures; FRED's JSON body on success."""
        url = f"{self.base_url}/series/observations"
        series_id = params["series_id"]
        last_problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = self._session.get(url, params=params, timeout=self.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as error:
                last_problem = self._scrub(f"{type(error).__name__}: {error}")
                continue
            if response.status_code in RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                continue
            return self._read_body(response, str(series_id))
        raise FredUnavailableError(
            f"FRED did not answer for series {series_id!r} after {self.max_retries + 1} attempts "
            f"({last_problem}); try again later"
        )

    def _read_body(self, response: requests.Response, series_id: str) -> dict:
        try:
            body = response.json()
        except ValueError as error:
            raise FredRequestError(
                f"FRED answered HTTP {response.status_code} for series {series_id!r} with a non-JSON body"
            ) from error
        if response.status_code != 200 or "error_message" in body:
            message = self._scrub(str(body.get("error_message", "no error message")))
            if "api_key" in message:
                raise FredApiKeyError(f"FRED rejected the API key (check FRED_API_KEY): {message}")
            raise FredRequestError(f"FRED rejected the request for series {series_id!r}: {message}")
        if not isinstance(body.get("observations"), list):
            raise FredRequestError(f"FRED's answer for series {series_id!r} has no 'observations' list")
        return body

    def observations(self, series: FredSeries, start: date | str, end: date | str) -> pd.DataFrame:
        """One series as (series, date, available_from, value); FRED's "." (no value) rows are dropped."""
        if not self.is_configured:
            raise FredNotConfiguredError("FRED_API_KEY is not set; set it to fetch macro series from FRED")
        params: dict[str, str | int] = {
            "series_id": series.series_id,
            "api_key": str(self._api_key),
            "file_type": "json",
            "observation_start": str(pd.Timestamp(start).date()),
            "observation_end": str(pd.Timestamp(end).date()),
            "limit": PAGE_LIMIT,
        }
        if series.use_vintages:
            params.update(realtime_start=REALTIME_START, realtime_end=REALTIME_END, output_type=4)
        rows: list[dict] = []
        offset = 0
        while True:
            body = self._get({**params, "offset": offset})
            page = body["observations"]
            rows.extend(page)
            offset += len(page)
            if not page or offset >= int(body.get("count", 0)):
                break
        return self._to_frame(series, rows)

    @staticmethod
    def _to_frame(series: FredSeries, rows: list[dict]) -> pd.DataFrame:
        if not rows:
            return empty_macro()
        raw = pd.DataFrame(rows)
        missing = {"date", "value"} - set(raw.columns)
        if missing or (series.use_vintages and "realtime_start" not in raw.columns):
            raise FredRequestError(
                f"FRED observations for {series.series_id!r} lack fields {sorted(missing)}"
            )
        values = pd.to_numeric(raw["value"].where(raw["value"] != "."), errors="coerce")
        dates = pd.to_datetime(raw["date"], format="%Y-%m-%d").dt.tz_localize("UTC")
        if series.use_vintages:
            released = pd.to_datetime(raw["realtime_start"], format="%Y-%m-%d").dt.tz_localize("UTC")
            available = released.where(released >= dates, dates)
        else:
            available = dates + pd.Timedelta(days=series.release_lag_days)
        frame = pd.DataFrame(
            {"series": series.series_id, "date": dates, "available_from": available, "value": values}
        ).dropna(subset=["value"])
        frame = frame.astype({"date": "datetime64[ns, UTC]", "available_from": "datetime64[ns, UTC]"})
        return frame.sort_values(["available_from", "date"], kind="mergesort").reset_index(drop=True)

    def fetch(self, start: date | str, end: date | str) -> MacroFetch:
        """All configured series between start and end (observation dates), as one long macro frame,
        less the series FRED could not deliver (see the module docstring)."""
        frames: list[pd.DataFrame] = []
        unavailable: dict[str, str] = {}
        for series in self.series:
            if unavailable:
                unavailable[series.series_id] = "not requested: FRED was unavailable"
                continue
            try:
                frames.append(self.observations(series, start, end))
            except FredUnavailableError as error:
                unavailable[series.series_id] = str(error)
                logger.warning("FRED outage, WHY degrades to neutral for the missing series: %s", error)
        frames = [frame for frame in frames if not frame.empty]
        frame = (
            pd.concat(frames, ignore_index=True).loc[:, list(MACRO_FRAME_COLUMNS)]
            if frames
            else empty_macro()
        )
        return MacroFetch(
            frame=frame,
            start=str(pd.Timestamp(start).date()),
            end=str(pd.Timestamp(end).date()),
            unavailable=unavailable,
        )


@dataclass(frozen=True)
class MacroFetch:
    """Macro series for WHY, and the series that could not be fetched (their WHY features stay neutral)."""

    frame: pd.DataFrame
    start: str
    end: str
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """One line for run metadata: complete, or which series are missing, over which span, and why."""
        if not self.unavailable:
            return "complete"
        first_reason = next(iter(self.unavailable.values()))
        return (
            f"degraded: FRED unavailable for {', '.join(self.unavailable)} ({first_reason}); WHY is neutral "
            f"(availability flag 0) where it reads them, for observations {self.start} .. {self.end}"
        )
