"""The strategy registry: what the pipeline remembers between runs, in SQLite or PostgreSQL.

- `models`: the SQLAlchemy schema; `migrations/`: Alembic revisions; `migrate`: upgrade/inspect any URL.
- `repository`: session-in, plain-values-out functions (instruments, regimes, evolution runs, strategies and
  lineage, performance, accounts, orders, fills, positions, control flags); `records`: those plain values.
- `errors`: the exceptions it raises; `position_accounting`: average-price position arithmetic.
"""
