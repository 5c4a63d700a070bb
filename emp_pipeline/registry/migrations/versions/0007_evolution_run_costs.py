"""Evolution runs record their costs: the `Costs` every backtest of the run paid, which its strategies keep.

Before this revision the costs were two keys of the run's `config` JSON (``fee_bps``, ``slippage_bps``), which
every pipeline run wrote. The upgrade moves them into the new non-null `costs` JSON column; a run whose config
lacks a term (a run recorded by hand, not by the pipeline) gets 1.0 basis points for it, the only costs the
walk-forward research could measure with before costs became a setting. The downgrade moves them back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here on purpose: a migration must not change meaning when the code's defaults change.
PRE_0007_COSTS = {"fee_bps": 1.0, "slippage_bps": 1.0}

_runs = sa.table(
    "evolution_runs", sa.column("id", sa.String), sa.column("config", sa.JSON), sa.column("costs", sa.JSON)
)


def upgrade() -> None:
    op.add_column("evolution_runs", sa.Column("costs", sa.JSON(), nullable=True))
    connection = op.get_bind()
    for run_id, config in connection.execute(sa.select(_runs.c.id, _runs.c.config)).all():
        remaining = dict(config)
        costs = {term: float(remaining.pop(term, default)) for term, default in PRE_0007_COSTS.items()}
        connection.execute(_runs.update().where(_runs.c.id == run_id).values(config=remaining, costs=costs))
    with op.batch_alter_table("evolution_runs") as batch:
        batch.alter_column("costs", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    connection = op.get_bind()
    for run_id, config, costs in connection.execute(
        sa.select(_runs.c.id, _runs.c.config, _runs.c.costs)
    ).all():
        connection.execute(_runs.update().where(_runs.c.id == run_id).values(config={**config, **costs}))
    with op.batch_alter_table("evolution_runs") as batch:
        batch.drop_column("costs")
