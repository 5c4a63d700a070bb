"""Which universe and market-data source this environment uses, decided from the data settings.

Kept apart from the Dagster layer so the CLI, the live job and the tests make the same choice. Bar data is
read only when a run fetches it; `partition_date_range` reads no bar file, so a bad data file fails the run
that reads it, never the loading of the definitions.
"""

from __future__ import annotations

from datetime import date

from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.data.yahoo import YahooFinanceSource
from emp_pipeline.domain.instruments import Universe, load_universe
from emp_pipeline.settings import DataSettings


def configured_source(data: DataSettings) -> MarketDataSource:
    """The source of the configured kind, reading the universe's timeframe (and, for files, its timezone
    and calendars) when a universe file is configured."""
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


def partition_date_range(data: DataSettings) -> tuple[date, date | None]:
    """(first day, last day or None = open) the partitions cover: the universe file's dates, or
    EMP_DATA_START_DATE onwards when no universe file is configured."""
    if data.universe_file is not None:
        universe = load_universe(data.universe_file)
        return universe.start_date, universe.end_date
    return data.start_date, None
