"""Alembic migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from emp_pipeline.registry.engine import make_engine
from emp_pipeline.registry.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    schema_differences,
    upgrade_database,
)
from emp_pipeline.registry.models import Base


def test_upgrade_reaches_head_and_schema_matches_models(registry_url: str) -> None:
    assert current_revision(registry_url) is None

    reached = upgrade_database(registry_url)

    assert reached == head_revision() == current_revision(registry_url)
    assert schema_differences(registry_url) == []
    engine = make_engine(registry_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_upgrade_twice_is_a_no_op(registry_url: str) -> None:
    upgrade_database(registry_url)
    assert upgrade_database(registry_url) == head_revision()
    assert schema_differences(registry_url) == []


def test_schema_comparison_reports_drift(registry_url: str) -> None:
    """The no-diff assertion above means something: a database that drifted from the models is reported."""
    upgrade_database(registry_url)
    engine = make_engine(registry_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_orders_strategy_id"))
            connection.execute(text("ALTER TABLE control_flags ADD COLUMN stray INTEGER"))
    finally:
        engine.dispose()

    differences = [repr(difference) for difference in schema_differences(registry_url)]

    assert any("ix_orders_strategy_id" in d for d in differences)
    assert any("stray" in d for d in differences)


def test_downgrade_to_base_removes_the_schema_and_upgrade_rebuilds_it(registry_url: str) -> None:
    upgrade_database(registry_url)

    assert downgrade_database(registry_url, "base") is None
    engine = make_engine(registry_url)
    try:
        assert set(inspect(engine).get_table_names()) & set(Base.metadata.tables) == set()
    finally:
        engine.dispose()
    assert upgrade_database(registry_url) == head_revision()
    assert schema_differences(registry_url) == []
