"""Instruments keep their execution terms: overnight swaps and the typical spread.

`InstrumentMeta` carried swaps (long, short, pips or percent, the weekday charged triple) and now a typical
spread, but the registry kept neither, so instruments read back from it traded without financing or spread.
Rows stored before this revision get what they were measured and traded with: no swaps, no spread
(Wednesday as the triple weekday, the spot-FX convention and the domain's default). The downgrade drops them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, type, server default: each added NOT NULL with its default, so existing rows get it.
_COLUMNS = (
    ("swap_long", sa.Double, "0"),
    ("swap_short", sa.Double, "0"),
    ("swap_type", lambda: sa.String(length=16), "pips"),
    ("swap_triple_weekday", sa.Integer, "2"),
    ("spread_pips", sa.Double, "0"),
)


def upgrade() -> None:
    with op.batch_alter_table("instruments") as batch:
        for name, column_type, default in _COLUMNS:
            batch.add_column(sa.Column(name, column_type(), server_default=default, nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("instruments") as batch:
        for name, _, _ in reversed(_COLUMNS):
            batch.drop_column(name)
