"""Fixtures for integration tests: real PostgreSQL and SQLite databases, one fresh database per test; Redis.

PostgreSQL runs at 127.0.0.1:5432 with trust auth (README.md; `.ci/run` starts it). Each test
gets its own uniquely named database, dropped afterwards, so tests never see each other's rows and can run
in parallel.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
from psycopg2 import sql
from sqlalchemy import Engine

from emp_pipeline.registry.engine import make_engine
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline_tests.fakes.ctrader_token_server import FakeCTraderTokenServer
from emp_pipeline_tests.integration.token_fixtures import CLIENT_ID, CLIENT_SECRET, REDIS_URL

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
POSTGRES_ADMIN_DATABASES = ("postgres", "test")


def _admin_connection() -> psycopg2.extensions.connection:
    errors = []
    for database in POSTGRES_ADMIN_DATABASES:
        try:
            connection = psycopg2.connect(
                host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, dbname=database, connect_timeout=5
            )
        except psycopg2.OperationalError as error:
            errors.append(f"{database}: {error}".strip())
            continue
        connection.autocommit = True
        return connection
    raise RuntimeError(
        f"PostgreSQL at {POSTGRES_HOST}:{POSTGRES_PORT} is not reachable ({'; '.join(errors)}): "
        "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
    )


def _create_database(name: str, template: str | None = None) -> str:
    admin = _admin_connection()
    try:
        with admin.cursor() as cursor:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template is not None:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            cursor.execute(statement)
    finally:
        admin.close()
    return f"postgresql+psycopg2://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


def _drop_database(name: str) -> None:
    admin = _admin_connection()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            )
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def _unique_name(kind: str) -> str:
    return f"emp_{kind}_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; it is dropped (connections terminated) afterwards."""
    name = _unique_name("test")
    try:
        yield _create_database(name)
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def postgres_registry_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session, cloned by `migrated_registry_url`."""
    name = _unique_name("template")
    try:
        upgrade_database(_create_database(name))  # disposes its engine: a template must have no connections
        yield name
    finally:
        _drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file in the test's temporary directory (created on first connection)."""
    return f"sqlite:///{tmp_path / 'registry.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest) -> str:
    """The same test once against SQLite (embedded mode) and once against PostgreSQL (production); empty."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_registry_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Like `registry_url`, but already migrated to head (PostgreSQL: cloned from a migrated template)."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        upgrade_database(url)
        yield url
        return
    name = _unique_name("test")
    try:
        yield _create_database(name, template=request.getfixturevalue("postgres_registry_template"))
    finally:
        _drop_database(name)


@pytest.fixture
def registry_engine(migrated_registry_url: str) -> Iterator[Engine]:
    """An engine on a fresh registry database at the latest revision."""
    engine = make_engine(migrated_registry_url)
    try:
        yield engine
    finally:
        engine.dispose()


# --- cTrader token tests: a private Redis key prefix and a local token server (see token_fixtures) ---


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A Redis key prefix no other test uses; every key under it is deleted afterwards."""
    prefix = f"emp:test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture
def token_server() -> Iterator[FakeCTraderTokenServer]:
    """A local cTrader token endpoint over loopback HTTP that knows the shared test client."""
    with FakeCTraderTokenServer(CLIENT_ID, CLIENT_SECRET) as server:
        yield server
