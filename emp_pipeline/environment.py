"""Which universe and market-data source this environment uses, decided once from `Settings`.

Kept apart from the Dagster layer so the CLI, the live job and the tests make the same choice.
"""

from __future__ import annotations

from emp_pipeline.data.csv import CsvSource
from emp_pipeline.data.sample import SAMPLE_DIR, SampleSource
from emp_pipeline.data.source import MarketDataSource
from emp_pipeline.data.yahoo import YahooFinanceSource
from emp_pipeline.domain.instruments import Universe, load_universe
from emp_pipeline.settings import Settings


class ConfigurationError(ValueError):
    """The environment asks for something that cannot work; the message names the variable to fix."""


def configured_source(settings: Settings) -> MarketDataSource:
    """The source of the configured kind, reading the universe's timeframe (and, for files, its timezone
    and calendars) when a universe file is configured."""
    universe = load_universe(settings.universe_file) if settings.universe_file is not None else None
    if settings.data_source == "sample":
        return SampleSource.for_universe(SAMPLE_DIR, universe) if universe else SampleSource()
    if settings.data_source == "csv":
        if settings.csv_dir is None:
            raise ConfigurationError(
                "EMP_DATA_SOURCE=csv needs EMP_CSV_DIR, the folder of <SYMBOL>.csv files"
            )
        return CsvSource.for_universe(settings.csv_dir, universe) if universe else CsvSource(settings.csv_dir)
    if universe is None:
        return YahooFinanceSource()
    return YahooFinanceSource(timeframe=universe.timeframe, calendars=universe.calendars)


def configured_universe(settings: Settings) -> Universe:
    """The universe file. Without one a CSV folder stops the run with the universe file to write (its
    instruments' terms cannot come from the bars); other sources need EMP_UNIVERSE_FILE."""
    if settings.universe_file is not None:
        return load_universe(settings.universe_file)
    source = configured_source(settings)
    if not isinstance(source, CsvSource):
        raise ConfigurationError(f"EMP_DATA_SOURCE={settings.data_source} needs EMP_UNIVERSE_FILE")
    raise source.terms_missing(name=f"csv-{settings.csv_dir.name if settings.csv_dir else 'folder'}")
