"""Schema migrations, callable from code (`emp db upgrade`, DatabaseResource.upgrade, tests) for any URL.

The URL is handed to Alembic as an open connection, not through alembic.ini, so any database works and
passwords never pass through configparser interpolation. SQLite migrations run with foreign keys off
(batch mode rebuilds tables, which would otherwise cascade deletes) and are checked afterwards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from emp_pipeline.registry.engine import make_engine
from emp_pipeline.registry.errors import RegistryError
from emp_pipeline.registry.models import Base

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


def alembic_config() -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        location = ALEMBIC_INI.parent / "migrations"
        raise RegistryError(f"no migration scripts under {location}: reinstall emp-pipeline")
    return head


def upgrade_database(url: str, revision: str = "head") -> str | None:
    """Bring the registry at `url` up to `revision` (default: the latest); returns the revision reached."""
    return _migrate(url, command.upgrade, revision)


_embedded_checked: set[tuple[int, str]] = set()
_embedded_lock = threading.Lock()


def ensure_embedded_registry(url: str) -> None:
    """Bring an embedded (SQLite) registry to the latest revision on its first use in this process.

    A fresh clone's first `dagster job execute` or `make ui` run must not fail with "no such table": the
    embedded registry is a file nobody administers, so it is migrated where it is first opened. Concurrent
    first uses queue on SQLite's write lock (migrations begin IMMEDIATE), and the second finds it at head.
    PostgreSQL, production's registry, is only ever migrated on purpose (`emp db upgrade`, compose's
    emp_migrate service), so it is left alone here.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    key = (os.getpid(), url)
    with _embedded_lock:
        if key in _embedded_checked:
            return
        if current_revision(url) != head_revision():
            upgrade_database(url)
        _embedded_checked.add(key)


def downgrade_database(url: str, revision: str) -> str | None:
    """Take the registry at `url` back to `revision` ("base" drops every registry table); returns it."""
    return _migrate(url, command.downgrade, revision)


def _migrate(url: str, step: Callable[[Config, str], None], revision: str) -> str | None:
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            step(config, revision)
            if connection.dialect.name == "sqlite":
                broken = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise RegistryError(
                        f"migration to {revision} left rows with dangling foreign keys {broken[:5]}: "
                        "the upgrade was rolled back; report this migration as a bug"
                    )
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the registry at `url` is at (None if it was never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    """What Alembic autogenerate would change to make the database match the models (empty when in sync)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()
