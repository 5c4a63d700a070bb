"""The paper broker's books in the registry schema: its resting stop and take-profit distances, and an index
on orders by (account, symbol), which a book's reads (its position, what superseded its levels) go through.

Until 0004 the paper broker created `paper_protective_levels` itself on first use (no foreign keys, outside
the migrations). A registry where it did so keeps its resting levels: the old table is renamed aside, the
table is created as the models describe it, the rows whose order exists are copied over, and the old table
is dropped. A row without its order could not protect anything (the broker only rests levels of recorded
orders) and is left behind.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "paper_protective_levels"
_RUNTIME_TABLE = "paper_protective_levels_runtime"
_INDEX = "ix_paper_protective_levels_account_id"
_ORDERS_INDEX = "ix_orders_account_id_symbol"


def upgrade() -> None:
    created_at_run_time = sa.inspect(op.get_bind()).has_table(_TABLE)
    if created_at_run_time:
        op.rename_table(_TABLE, _RUNTIME_TABLE)
        op.execute(f"DROP INDEX IF EXISTS {_INDEX}")  # index names are per schema: it would clash below
    op.create_table(
        _TABLE,
        sa.Column("client_order_id", sa.String(length=50), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("stop_distance", sa.Double(), nullable=True),
        sa.Column("take_profit_distance", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_paper_protective_levels_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name=op.f("fk_paper_protective_levels_client_order_id_orders"),
        ),
        sa.PrimaryKeyConstraint("client_order_id", name=op.f("pk_paper_protective_levels")),
    )
    op.create_index(_INDEX, _TABLE, ["account_id"], unique=False)
    op.create_index(_ORDERS_INDEX, "orders", ["account_id", "symbol"], unique=False)
    if created_at_run_time:
        op.execute(
            f"INSERT INTO {_TABLE} (client_order_id, account_id, stop_distance, take_profit_distance) "
            f"SELECT r.client_order_id, o.account_id, r.stop_distance, r.take_profit_distance "
            f"FROM {_RUNTIME_TABLE} r JOIN orders o ON o.client_order_id = r.client_order_id"
        )
        op.drop_table(_RUNTIME_TABLE)


def downgrade() -> None:
    op.drop_index(_ORDERS_INDEX, table_name="orders")
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_table(_TABLE)
