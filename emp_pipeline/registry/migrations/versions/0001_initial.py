"""Initial registry schema: instruments, evolution runs, strategies and lineage, performance, regimes,
accounts, orders, fills, positions and control flags.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:25:10.632342
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("broker", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("initial_cash", sa.Double(), nullable=False),
        sa.Column("cash", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("broker IN ('paper', 'ctrader')", name=op.f("ck_accounts_broker")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("broker", "name", name=op.f("uq_accounts_broker_name")),
    )
    op.create_table(
        "control_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_control_flags")),
    )
    op.create_table(
        "evolution_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("train_start", sa.Date(), nullable=False),
        sa.Column("train_end", sa.Date(), nullable=False),
        sa.Column("embargo_days", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_evolution_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evolution_runs")),
    )
    op.create_index("ix_evolution_runs_period", "evolution_runs", ["period"], unique=False)

    op.create_table(
        "instruments",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("asset_class", sa.String(length=16), nullable=False),
        sa.Column("quote_currency", sa.String(length=8), nullable=False),
        sa.Column("tick_size", sa.Double(), nullable=False),
        sa.Column("pip_position", sa.Integer(), nullable=False),
        sa.Column("lot_size", sa.Double(), nullable=False),
        sa.Column("min_volume", sa.Double(), nullable=False),
        sa.Column("step_volume", sa.Double(), nullable=False),
        sa.Column("calendar", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_instruments")),
    )
    op.create_table(
        "market_regimes",
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("classifier", sa.String(length=64), nullable=False),
        sa.Column("regime", sa.String(length=32), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("warmup", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "date", "classifier", name=op.f("pk_market_regimes")),
    )
    op.create_index("ix_market_regimes_date", "market_regimes", ["date"], unique=False)

    op.create_table(
        "positions",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("avg_price", sa.Double(), nullable=False),
        sa.Column("realised_pnl", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_positions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "symbol", name=op.f("pk_positions")),
    )
    op.create_table(
        "strategies",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("genome", sa.JSON(), nullable=False),
        sa.Column("genome_version", sa.Integer(), nullable=False),
        sa.Column("evolution_run_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=16), nullable=False),
        sa.Column("fitness", sa.Double(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "operator IN ('seed', 'crossover', 'mutation', 'elite', 'immigrant')",
            name=op.f("ck_strategies_operator"),
        ),
        sa.CheckConstraint(
            "status IN ('candidate', 'active', 'retired', 'rejected')", name=op.f("ck_strategies_status")
        ),
        sa.ForeignKeyConstraint(
            ["evolution_run_id"],
            ["evolution_runs.id"],
            name=op.f("fk_strategies_evolution_run_id_evolution_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategies")),
    )
    op.create_index("ix_strategies_evolution_run_id", "strategies", ["evolution_run_id"], unique=False)
    op.create_index("ix_strategies_status_period", "strategies", ["status", "period"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(length=50), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("order_type", sa.String(length=16), nullable=False),
        sa.Column("bar_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_position", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_orders_side")),
        sa.CheckConstraint(
            "status IN ('pending', 'submitted', 'accepted', 'partially_filled', 'filled', 'rejected', 'cancelled', 'unknown')",
            name=op.f("ck_orders_status"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_orders_quantity_positive")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_orders_account_id_accounts")),
        sa.ForeignKeyConstraint(
            ["strategy_id"], ["strategies.id"], name=op.f("fk_orders_strategy_id_strategies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
    )
    op.create_index("ix_orders_account_id_status", "orders", ["account_id", "status"], unique=False)
    op.create_index("ix_orders_strategy_id", "orders", ["strategy_id"], unique=False)

    op.create_table(
        "performance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("total_return", sa.Double(), nullable=True),
        sa.Column("cagr", sa.Double(), nullable=True),
        sa.Column("volatility", sa.Double(), nullable=True),
        sa.Column("sharpe", sa.Double(), nullable=True),
        sa.Column("sortino", sa.Double(), nullable=True),
        sa.Column("calmar", sa.Double(), nullable=True),
        sa.Column("max_drawdown", sa.Double(), nullable=True),
        sa.Column("max_drawdown_days", sa.Integer(), nullable=True),
        sa.Column("win_rate", sa.Double(), nullable=True),
        sa.Column("profit_factor", sa.Double(), nullable=True),
        sa.Column("trade_count", sa.Integer(), nullable=True),
        sa.Column("exposure", sa.Double(), nullable=True),
        sa.Column("turnover", sa.Double(), nullable=True),
        sa.Column("deflated_sharpe", sa.Double(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('in_sample', 'out_of_sample')", name=op.f("ck_performance_kind")),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_performance_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performance")),
        sa.UniqueConstraint(
            "strategy_id", "period", "kind", name=op.f("uq_performance_strategy_id_period_kind")
        ),
    )
    op.create_index("ix_performance_period_kind", "performance", ["period", "kind"], unique=False)

    op.create_table(
        "strategy_parents",
        sa.Column("child_id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=False),
        sa.CheckConstraint("child_id <> parent_id", name=op.f("ck_strategy_parents_not_self")),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["strategies.id"],
            name=op.f("fk_strategy_parents_child_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["strategies.id"],
            name=op.f("fk_strategy_parents_parent_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("child_id", "parent_id", name=op.f("pk_strategy_parents")),
    )
    op.create_index("ix_strategy_parents_parent_id", "strategy_parents", ["parent_id"], unique=False)

    op.create_table(
        "strategy_status_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "to_status IN ('candidate', 'active', 'retired', 'rejected')",
            name=op.f("ck_strategy_status_history_to_status"),
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_strategy_status_history_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategy_status_history")),
    )
    op.create_index(
        "ix_strategy_status_history_strategy_id_at",
        "strategy_status_history",
        ["strategy_id", "at"],
        unique=False,
    )

    op.create_table(
        "fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("broker_fill_id", sa.String(length=64), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("fee", sa.Double(), nullable=False),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price > 0", name=op.f("ck_fills_price_positive")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_fills_quantity_positive")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_fills_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("broker_fill_id", name=op.f("uq_fills_broker_fill_id")),
    )
    op.create_index("ix_fills_order_id", "fills", ["order_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_fills_order_id", table_name="fills")

    op.drop_table("fills")
    op.drop_index("ix_strategy_status_history_strategy_id_at", table_name="strategy_status_history")

    op.drop_table("strategy_status_history")
    op.drop_index("ix_strategy_parents_parent_id", table_name="strategy_parents")

    op.drop_table("strategy_parents")
    op.drop_index("ix_performance_period_kind", table_name="performance")

    op.drop_table("performance")
    op.drop_index("ix_orders_strategy_id", table_name="orders")
    op.drop_index("ix_orders_account_id_status", table_name="orders")

    op.drop_table("orders")
    op.drop_index("ix_strategies_status_period", table_name="strategies")
    op.drop_index("ix_strategies_evolution_run_id", table_name="strategies")

    op.drop_table("strategies")
    op.drop_table("positions")
    op.drop_index("ix_market_regimes_date", table_name="market_regimes")

    op.drop_table("market_regimes")
    op.drop_table("instruments")
    op.drop_index("ix_evolution_runs_period", table_name="evolution_runs")

    op.drop_table("evolution_runs")
    op.drop_table("control_flags")
    op.drop_table("accounts")
