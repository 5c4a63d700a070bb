"""The strategy registry: what the pipeline remembers between runs, in SQLite or PostgreSQL.

- `models`: the SQLAlchemy schema; `migrations/`: Alembic revisions; `migrate`: upgrade/inspect any URL.
- One module per aggregate, each session-in, plain-values-out: `instruments`, `regimes`, `research` (evolution
  runs, strategies, lineage, status history, performance), `orders` (orders and fills), `positions` (accounts
  and their positions), `control` (operational flags); `records`: those plain values.
- `engine`: engines and sessions; `statements`: the dialect-aware upserts the aggregates share;
  `input_checks`: refusals of bad input before any write.
- `errors`: the exceptions it raises; `position_accounting`: average-price position arithmetic.
"""
