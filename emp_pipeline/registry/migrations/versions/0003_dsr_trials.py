"""performance.dsr_trials: the number of trials each deflated Sharpe ratio was computed with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("performance") as batch:
        batch.add_column(sa.Column("dsr_trials", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("performance") as batch:
        batch.drop_column("dsr_trials")
