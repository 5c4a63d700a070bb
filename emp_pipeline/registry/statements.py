"""Dialect-aware write statements shared by the registry's aggregates (SQLite and PostgreSQL).

Writes that may be repeated (a retried Dagster run, a re-materialised partition, a replayed broker report)
are idempotent: they use natural or content-derived keys with `INSERT ... ON CONFLICT`, so the database, not
a read-then-write race, decides what already exists.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import Row, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from emp_pipeline.registry.errors import UnsupportedDatabaseError

RecordT = TypeVar("RecordT")

UPSERT_CHUNK_ROWS = 5_000


def dialect_insert(session: Session, model: type[Any]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model.__table__)
    if dialect == "sqlite":
        return sqlite.insert(model.__table__)
    raise UnsupportedDatabaseError(f"the registry supports sqlite and postgresql, not {dialect!r}")


def upsert_rows(
    session: Session,
    model: type[Any],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
) -> int:
    """Insert `rows`, replacing every non-key column of rows whose `keys` already exist.

    Rows repeating a key within `rows` collapse to the last one (PostgreSQL refuses to update a row twice in
    one statement); the count returned is of distinct keys.
    """
    rows = list({tuple(row[key] for key in keys): row for row in rows}.values())
    if not rows:
        return 0
    statement = dialect_insert(session, model)
    replaced = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues"); without it an
    # ON CONFLICT statement falls back to the driver's executemany, one round trip per row on psycopg2.
    table = model.__table__
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_=replaced).returning(
        *(table.c[key] for key in keys)
    )
    for start in range(0, len(rows), UPSERT_CHUNK_ROWS):
        session.execute(statement, list(rows[start : start + UPSERT_CHUNK_ROWS])).all()
    return len(rows)


def insert_once(
    session: Session, model: type[Any], row: Mapping[str, Any], key: str
) -> tuple[Row[Any], bool]:
    """Insert `row` unless its unique `key` is taken; returns (the stored row, whether this call inserted it).

    `ON CONFLICT DO NOTHING` makes a concurrent loser a no-op that then reads the winner's row from the
    database. The winner gets its row back from `RETURNING`: one statement when the key was free.
    """
    table = model.__table__
    inserted = session.execute(_insert_once_statement(session, model, key), dict(row)).one_or_none()
    if inserted is not None:
        return inserted, True
    return session.execute(select(table).where(table.c[key] == row[key])).one(), False


def _insert_once_statement(session: Session, model: type[Any], key: str) -> Any:
    dialect = session.get_bind().dialect.name
    return _cached_insert_once(dialect, model, key)


@cache
def _cached_insert_once(dialect: str, model: type[Any], key: str) -> Any:
    """`insert_once`'s statement per dialect, model and key, built once (orders and fills are hot paths)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    return insert(table).on_conflict_do_nothing(index_elements=[key]).returning(*table.c)


def record_from_row(record_type: type[RecordT], row: Any) -> RecordT:
    """The plain record of an ORM row whose columns bear the record's field names (no session ties)."""
    return record_type(**{name: getattr(row, name) for name in _field_names(record_type)})


@cache
def _field_names(record_type: type[Any]) -> tuple[str, ...]:
    """A record type's field names, looked up once (the paper broker builds records on every bar)."""
    return tuple(field.name for field in dataclasses.fields(record_type))


def copy_upsert_postgresql(
    session: Session, model: type[Any], frame: pd.DataFrame, keys: Sequence[str]
) -> int:
    """PostgreSQL bulk upsert: COPY into a temporary staging table, then one INSERT ... ON CONFLICT.

    About 2-3x faster than batched INSERTs for 100k rows; `frame` holds the table's columns, JSON as text.
    """
    table = model.__table__.name
    columns = ", ".join(f'"{name}"' for name in frame.columns)
    updates = ", ".join(f'"{name}" = excluded."{name}"' for name in frame.columns if name not in keys)
    conflict = ", ".join(f'"{name}"' for name in keys)
    staging = f"staging_{table}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
        cursor.copy_expert(f"COPY {staging} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
        cursor.execute(f"DROP TABLE {staging}")
    finally:
        cursor.close()
    return len(frame)
