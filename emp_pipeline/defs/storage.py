"""Storage every concern shares: the registry database and the Parquet data lake."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from dagster import ConfigurableResource
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.migrate import ensure_embedded_registry, upgrade_database
from emp_pipeline.storage.datasets import Dataset
from emp_pipeline.storage.parquet_frames import DatedFrameStore


class DataLakeResource(ConfigurableResource):
    """The Parquet datasets the IO manager writes, for checks and jobs that read them directly."""

    base_dir: str

    def store(self, dataset: Dataset) -> DatedFrameStore:
        return dataset.store(self.base_dir)

    def read(
        self, dataset: Dataset, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        return dataset.read(self.base_dir, start, end)


class DatabaseResource(ConfigurableResource):
    """The strategy registry: a SQLite file in the embedded mode, PostgreSQL in production (same schema)."""

    url: str

    def engine(self) -> Engine:
        """One pooled engine per process and URL, shared by every asset op running in that process.

        An embedded SQLite registry is migrated to the latest revision on first use (see
        ensure_embedded_registry); PostgreSQL is migrated only by `emp db upgrade`.
        """
        ensure_embedded_registry(self.url)
        return shared_engine(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work that commits when the block succeeds and rolls back when it raises."""
        with session_scope(self.engine()) as session:
            yield session

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply the Alembic migrations up to `revision`; returns the revision the database is now at."""
        return upgrade_database(self.url, revision)
