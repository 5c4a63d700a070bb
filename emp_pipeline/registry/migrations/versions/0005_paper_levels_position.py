"""Paper protective levels record the book position they protect, written when their entry fills.

A resting row migrated without it gets it from the book's fills the next time the paper broker reads it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("paper_protective_levels", sa.Column("position", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_protective_levels") as batch:
        batch.drop_column("position")
