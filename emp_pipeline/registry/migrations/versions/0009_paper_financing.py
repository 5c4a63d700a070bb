"""The paper account books overnight swaps: a ledger of one row per (account, symbol, rollover time).

Before it the paper account's cash moved with fills only; the backtest and the live fold charged swaps to
the sleeves. The ledger starts empty: rollovers that positions were held across before this revision are
booked, from each symbol's fills, by the paper broker's next catch-up, so the account reaches what the
kernel charged.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paper_financing",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("rollover_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("units", sa.Double(), nullable=False),
        sa.Column("nights", sa.Double(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_paper_financing_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "symbol", "rollover_at", name=op.f("pk_paper_financing")),
    )


def downgrade() -> None:
    op.drop_table("paper_financing")
