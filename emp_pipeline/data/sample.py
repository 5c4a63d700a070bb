"""The bundled offline sample: real bars and macro series shipped with the package.

It lets the whole pipeline run with no network (the embedded default): daily ^GSPC, ^IXIC and GOOG
(universe `universes/sample.yaml`) and hourly EURUSD for 2017 (universe `universes/sample_fx_h1.yaml`). The
files under `sample/` were extracted by `scripts/extract_sample_data.py` and
`scripts/extract_intraday_sample.py`; `sample/ORIGIN.md` records where each one came from.

Macro series and when a value may be used (its release date, `available_from`):
- VIX (CBOE volatility index close) and WTI (crude oil spot close): daily market prices, known at that
  day's close, so usable from their own date, like a bar's close.
- AAA and BAA (Moody's corporate bond yields): monthly averages dated the first day of the month they
  average; the average is only known once the month is over, so each value is usable from the first day
  of the FOLLOWING month. Using it earlier would leak the month's future into features.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pandas as pd

from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.source import UnknownSymbolError
from emp_pipeline.domain.timeframes import Timeframe

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
MACRO_DIR = SAMPLE_DIR / "macro"
MACRO_COLUMNS = ("series", "date", "available_from", "value")
DAILY_MACRO_SERIES = ("VIX", "WTI")
MONTHLY_MACRO_SERIES = ("AAA", "BAA")


class SampleSource(CsvSource):
    """The bundled bar files (daily ^GSPC, ^IXIC, GOOG; hourly EURUSD), read by the same strict reader as
    any CSV folder."""

    name = "sample"

    def __init__(
        self,
        directory: Path = SAMPLE_DIR,
        *,
        timeframe: Timeframe = Timeframe.D1,
        timezone: str = "UTC",
        calendars: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(directory, timeframe=timeframe, timezone=timezone, calendars=calendars)

    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        available = self.available_symbols()
        unknown = [symbol for symbol in symbols if symbol not in available]
        if unknown:
            raise UnknownSymbolError(
                f"the bundled sample has no {', '.join(map(repr, unknown))}; it holds {', '.join(available)} "
                "(set EMP_DATA_SOURCE=csv or yahoo for other instruments)",
                symbol=unknown[0],
            )
        return super()._fetch_raw(symbols, start, end)


def _read_macro(series: str, directory: Path) -> pd.DataFrame:
    frame = pd.read_csv(directory / f"{series}.csv.gz", dtype={"date": str, "value": "float64"})
    dates = (
        pd.to_datetime(frame["date"], format="%Y-%m-%d").dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    )
    if series in MONTHLY_MACRO_SERIES:
        available_from = (dates + pd.offsets.MonthBegin(1)).astype("datetime64[ns, UTC]")
    else:
        available_from = dates
    return pd.DataFrame(
        {"series": series, "date": dates, "available_from": available_from, "value": frame["value"]}
    ).loc[:, list(MACRO_COLUMNS)]


def load_sample_macro(directory: Path = MACRO_DIR) -> dict[str, pd.DataFrame]:
    """Each bundled macro series as its own frame (series, date, available_from, value); see module doc."""
    return {series: _read_macro(series, directory) for series in (*DAILY_MACRO_SERIES, *MONTHLY_MACRO_SERIES)}


def load_sample_macro_frame(directory: Path = MACRO_DIR) -> pd.DataFrame:
    """All bundled macro series in one long frame, the shape SensoryCortex.compute(macro=...) reads."""
    return pd.concat(load_sample_macro(directory).values(), ignore_index=True)
