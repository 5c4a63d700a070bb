"""Which universe and market-data source this environment uses, decided from the data settings.

Kept apart from the Dagster layer so the CLI, the live job and the tests make the same choice. Bar data is
read only when a run fetches it; `partition_plan` reads no bar file, so a bad data file fails the run
that reads it, never the loading of the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.ctrader import CTraderAccess, CTraderSource
from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.data.yahoo import YahooFinanceSource
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.instruments import Universe, load_universe
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import DataSettings, ResearchSettings


class CTraderAccessMissingError(ValueError):
    """EMP_DATA_SOURCE=ctrader, but the caller has no cTrader connection to hand to the source."""


def configured_source(data: DataSettings, ctrader: CTraderAccess | None = None) -> MarketDataSource:
    """The source of the configured kind, reading the universe's timeframe (and, for files, its timezone
    and calendars) when a universe file is configured. The cTrader source also needs `ctrader`."""
    if data.source == "ctrader":
        return _ctrader_source(data, ctrader, configured_universe(data))
    universe = load_universe(data.universe_file) if data.universe_file is not None else None
    if data.source == "sample":
        return SampleSource.for_universe(SAMPLE_DIR, universe) if universe else SampleSource()
    if data.source == "csv":
        return CsvSource.for_universe(data.csv_dir, universe) if universe else CsvSource(data.csv_dir)
    if universe is None:
        return YahooFinanceSource()
    return YahooFinanceSource(timeframe=universe.timeframe, calendars=universe.calendars)


def configured_universe(data: DataSettings) -> Universe:
    """The universe file. Without one (a CSV folder only, see DataSettings) the run stops with the universe
    file to write: the instruments' terms cannot come from the bars."""
    if data.universe_file is not None:
        return load_universe(data.universe_file)
    raise CsvSource(data.csv_dir).terms_missing(name=f"csv-{data.csv_dir.name}")


def universe_with_venue_terms(data: DataSettings, ctrader: CTraderAccess | None = None) -> Universe:
    """The universe whose terms are stored and traded: the file's, or with the cTrader source the file's
    instruments carrying the venue's current trading terms (tick, pip, lot, volumes, swaps)."""
    universe = configured_universe(data)
    if data.source != "ctrader":
        return universe
    venue = _ctrader_source(data, ctrader, universe)
    return replace(universe, instruments=venue.instruments(universe.instruments))


def _ctrader_source(data: DataSettings, ctrader: CTraderAccess | None, universe: Universe) -> CTraderSource:
    if ctrader is None:
        raise CTraderAccessMissingError(
            "EMP_DATA_SOURCE=ctrader needs the cTrader account: CTRADER_ACCOUNT_ID, CTRADER_CLIENT_ID/SECRET "
            "and a stored token (emp token authorize)"
        )
    return CTraderSource(
        ctrader.config, ctrader.tokens, timeframe=universe.timeframe, symbol_map=dict(data.ctrader_symbol_map)
    )


@dataclass(frozen=True)
class PartitionPlan:
    """What the bar partitions cover and how they chunk: days, open end, timeframe, calendars."""

    first_day: date
    last_day: date | None  # None: open-ended, up to the chunk in progress
    timeframe: Timeframe
    calendars: frozenset[str]


def partition_plan(data: DataSettings) -> PartitionPlan:
    """The universe file's dates, timeframe and calendars; without a universe file (a CSV folder whose
    terms are not written yet) EMP_DATA_START_DATE onwards at EMP_TIMEFRAME on UTC days."""
    if data.universe_file is not None:
        universe = load_universe(data.universe_file)
        return PartitionPlan(
            universe.start_date,
            universe.end_date,
            universe.timeframe,
            frozenset(universe.calendars.values()),
        )
    return PartitionPlan(data.start_date, None, data.timeframe, frozenset())


def configured_study_windows(data: DataSettings, research: ResearchSettings) -> StudyWindows:
    """The study's windows in bars of the universe's timeframe, from its instruments' calendars.

    Without a universe file (a CSV folder) the calendars are unknown until the run asks for the terms, and
    no research runs before that: the windows then assume the FX calendar of the configured timeframe.
    """
    if data.universe_file is not None:
        universe = load_universe(data.universe_file)
        calendars = universe.calendars.values()
        return StudyWindows.for_universe(universe.timeframe, calendars, research.train_months)
    return StudyWindows.for_universe(data.timeframe, [CALENDAR_24X5], research.train_months)
