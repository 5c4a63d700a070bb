"""Alembic migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import InvalidRegistryInputError
from emp_pipeline.registry.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    schema_differences,
    upgrade_database,
)
from emp_pipeline.registry.models import Base
from emp_pipeline.registry.orders import create_order_if_absent, open_orders_and_resting_levels
from emp_pipeline.registry.positions import get_or_create_account, get_or_create_paper_account


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


def test_levels_the_paper_broker_created_at_run_time_survive_the_upgrade(registry_url: str) -> None:
    """Before 0004 the paper broker created its table on first use; upgrading keeps the levels of orders."""
    upgrade_database(registry_url, "0003")
    engine = make_engine(registry_url)
    try:
        with session_scope(engine) as session:
            account = get_or_create_paper_account(session)
            create_order_if_absent(
                session, client_order_id="entry", account_id=account.id, symbol="XYZ", side="buy",
                quantity=10.0, bar_time=dt.datetime(2024, 3, 4, tzinfo=dt.UTC), target_position=10.0,
            )  # fmt: skip
        with engine.begin() as connection:  # the table as the broker created it, without foreign keys
            connection.execute(
                text(
                    "CREATE TABLE paper_protective_levels (client_order_id VARCHAR(50) PRIMARY KEY, "
                    "account_id INTEGER NOT NULL, stop_distance DOUBLE PRECISION, "
                    "take_profit_distance DOUBLE PRECISION)"
                )
            )
            connection.execute(
                text(
                    "CREATE INDEX ix_paper_protective_levels_account_id "
                    "ON paper_protective_levels (account_id)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO paper_protective_levels VALUES ('entry', :a, 2.5, NULL), ('gone', :a, 1, 1)"
                ),
                {"a": account.id},
            )
    finally:
        engine.dispose()

    assert upgrade_database(registry_url) == head_revision()

    assert schema_differences(registry_url) == []
    engine = make_engine(registry_url)
    try:
        with session_scope(engine) as session:
            _, (kept,) = open_orders_and_resting_levels(session, account.id, ["pending"])
    finally:
        engine.dispose()
    assert (kept.entry.client_order_id, kept.stop_distance, kept.take_profit_distance) == ("entry", 2.5, None)


def test_a_new_broker_kind_needs_no_migration_and_accounts_survive_0006(registry_url: str) -> None:
    """0006 drops the database CHECK on accounts.broker (the kind is checked in code, broker.interface)."""
    upgrade_database(registry_url, "0005")
    engine = make_engine(registry_url)
    insert = text(
        "INSERT INTO accounts (broker, name, currency, initial_cash, cash, created_at) "
        "VALUES (:broker, :name, 'USD', 1000.0, 1000.0, CURRENT_TIMESTAMP)"
    )
    try:
        with engine.begin() as connection:
            connection.execute(insert, {"broker": "paper", "name": "kept"})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"broker": "ib", "name": "refused-by-0005"})

        upgrade_database(registry_url)

        with engine.begin() as connection:
            connection.execute(insert, {"broker": "ib", "name": "a-new-broker"})
            brokers = connection.execute(text("SELECT broker, name FROM accounts ORDER BY id")).all()
        assert [tuple(row) for row in brokers] == [("paper", "kept"), ("ib", "a-new-broker")]
        with session_scope(engine) as session, pytest.raises(InvalidRegistryInputError, match="broker='ib'"):
            get_or_create_account(session, broker="ib", name="x", currency="USD", initial_cash=1.0)
    finally:
        engine.dispose()
    assert schema_differences(registry_url) == []
