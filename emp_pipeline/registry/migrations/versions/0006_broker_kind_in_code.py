"""The broker kind of an account is checked in code, not by the database: a new broker needs no migration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 11:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_broker"), type_="check")


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.create_check_constraint("broker", "broker IN ('paper', 'ctrader')")
