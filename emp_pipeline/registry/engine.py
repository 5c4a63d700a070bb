"""Engines and sessions for the registry: one tuned engine per process and URL, one unit of work per block."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from emp_pipeline.registry.errors import UnsupportedDatabaseError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine tuned for the registry's concurrency: several processes writing the same database.

    SQLite gets foreign keys, WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE`
    transactions, so two writers queue on the lock instead of failing with "database is locked" when a read
    turns into a write. `foreign_keys=False` is only for migrations, which rebuild SQLite tables.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise UnsupportedDatabaseError(
            f"database URL {parsed.render_as_string(hide_password=True)!r} is neither sqlite nor "
            "postgresql: set EMP_DATABASE_URL to a sqlite:/// or postgresql:// URL"
        )
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    in_memory = parsed.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str) -> Engine:
    """One engine per process and URL: pools must not cross a fork, and an engine per call leaks them."""
    key = (os.getpid(), url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url)
        return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commit if the block succeeds, roll back if it raises."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
