"""Registry access for the pipeline: a session goes in, plain values come out; no Dagster here.

Writes that may be repeated (a retried Dagster run, a re-materialised partition, a replayed broker report)
are idempotent: they use natural or content-derived keys with dialect-aware `INSERT ... ON CONFLICT`, so the
database, not a read-then-write race, decides what already exists. SQLite and PostgreSQL are both supported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.registry.errors import (
    ClientOrderIdConflictError,
    FillConflictError,
    InvalidOrderTransitionError,
    InvalidRegistryInputError,
    InvalidStatusTransitionError,
    UnknownAccountError,
    UnknownEvolutionRunError,
    UnknownOrderError,
    UnknownStrategyError,
    UnsupportedDatabaseError,
)
from emp_pipeline.registry.models import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    Account,
    BrokerKind,
    ControlFlag,
    EvolutionRun,
    Fill,
    Instrument,
    MarketRegime,
    Order,
    OrderSide,
    OrderStatus,
    Performance,
    Position,
    RunStatus,
    Strategy,
    StrategyOperator,
    StrategyParent,
    StrategyStatus,
    StrategyStatusChange,
    WindowKind,
    utc_now,
)
from emp_pipeline.registry.position_accounting import PositionState, apply_fill
from emp_pipeline.registry.records import (
    AccountRecord,
    Ancestor,
    FillRecord,
    FlagRecord,
    NewStrategy,
    OrderRecord,
    PerformanceEntry,
    PerformanceRecord,
    PositionRecord,
    StatusChange,
    StrategyRecord,
)

RecordT = TypeVar("RecordT")

KILL_SWITCH = "kill_switch"
SQLITE_BUSY_TIMEOUT_MS = 30_000
UPSERT_CHUNK_ROWS = 5_000
PERFORMANCE_COLUMNS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_days",
    "win_rate",
    "profit_factor",
    "trade_count",
    "exposure",
    "turnover",
    "deflated_sharpe",
)
_INTEGER_METRICS = frozenset({"max_drawdown_days", "trade_count"})

# Strategy lifecycle: a candidate is promoted (active) or rejected by the out-of-sample gates; an active
# strategy is retired when it decays or is superseded, and a retired one may pass the gates again.
STRATEGY_TRANSITIONS: dict[str, frozenset[str]] = {
    StrategyStatus.CANDIDATE: frozenset({StrategyStatus.ACTIVE, StrategyStatus.REJECTED}),
    StrategyStatus.ACTIVE: frozenset({StrategyStatus.RETIRED}),
    StrategyStatus.RETIRED: frozenset({StrategyStatus.ACTIVE}),
    StrategyStatus.REJECTED: frozenset(),
}

# Order lifecycle: forward along pending -> submitted -> accepted -> partially_filled -> filled; rejected and
# cancelled may end any live order; `unknown` (lost acknowledgement) may be entered from any live state and
# left to any state once reconciliation with the broker tells the truth.
_ORDER_PROGRESS = {
    OrderStatus.PENDING: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
}
TERMINAL_ORDER_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


# ------------------------------------------------------------------------------------------- engine, sessions


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine tuned for the registry's concurrency: several processes writing the same database.

    SQLite gets foreign keys, WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE`
    transactions, so two writers queue on the lock instead of failing with "database is locked" when a read
    turns into a write. `foreign_keys=False` is only for migrations, which rebuild SQLite tables.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise UnsupportedDatabaseError(
            f"database URL {parsed.render_as_string(hide_password=True)!r} is neither sqlite nor "
            "postgresql: set EMP_DATABASE_URL to a sqlite:/// or postgresql:// URL"
        )
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    in_memory = parsed.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str) -> Engine:
    """One engine per process and URL: pools must not cross a fork, and an engine per call leaks them."""
    key = (os.getpid(), url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url)
        return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commit if the block succeeds, roll back if it raises."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _insert(session: Session, model: type[Any]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model.__table__)
    if dialect == "sqlite":
        return sqlite.insert(model.__table__)
    raise UnsupportedDatabaseError(f"the registry supports sqlite and postgresql, not {dialect!r}")


def _upsert(
    session: Session,
    model: type[Any],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
) -> int:
    """Insert `rows`, replacing every non-key column of rows whose `keys` already exist.

    Rows repeating a key within `rows` collapse to the last one (PostgreSQL refuses to update a row twice in
    one statement); the count returned is of distinct keys.
    """
    rows = list({tuple(row[key] for key in keys): row for row in rows}.values())
    if not rows:
        return 0
    statement = _insert(session, model)
    replaced = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues"); without it an
    # ON CONFLICT statement falls back to the driver's executemany, one round trip per row on psycopg2.
    table = model.__table__
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_=replaced).returning(
        *(table.c[key] for key in keys)
    )
    for start in range(0, len(rows), UPSERT_CHUNK_ROWS):
        session.execute(statement, list(rows[start : start + UPSERT_CHUNK_ROWS])).all()
    return len(rows)


def _insert_once(session: Session, model: type[Any], row: Mapping[str, Any], key: str) -> tuple[Any, bool]:
    """Insert `row` unless its unique `key` is taken; returns (the stored row, whether this call inserted it).

    `ON CONFLICT DO NOTHING` makes a concurrent loser a no-op that then reads the winner's row, refreshed from
    the database in case the session already held a stale copy.
    """
    statement = (
        _insert(session, model).values(row).on_conflict_do_nothing(index_elements=[key]).returning(model.id)
    )
    created = session.execute(statement).scalar_one_or_none() is not None
    stored = session.scalars(
        select(model).where(getattr(model, key) == row[key]).execution_options(populate_existing=True)
    ).one()
    return stored, created


def _record_from_row(record_type: type[RecordT], row: Any) -> RecordT:
    """The plain record of an ORM row whose columns bear the record's field names (no session ties)."""
    return record_type(**{field.name: getattr(row, field.name) for field in dataclasses.fields(record_type)})


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidRegistryInputError(
            f"value is not plain finite JSON ({error}): pass dicts/lists of str, int, finite float, bool"
        ) from error


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _require_aware(name: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRegistryInputError(f"{name}={value!r} is naive: pass a timezone-aware datetime (UTC)")
    return value


def _check_member(name: str, value: str, allowed: type[Any]) -> str:
    values = [member.value for member in allowed]
    if value not in values:
        raise InvalidRegistryInputError(f"{name}={value!r} is not one of {', '.join(values)}")
    return str(value)


# ------------------------------------------------------------------------------------------- instruments


def upsert_instruments(session: Session, instruments: Iterable[InstrumentMeta]) -> int:
    """Store the universe's reference data; a symbol already present gets its fields replaced."""
    now = utc_now()
    rows = [
        {
            "symbol": meta.symbol,
            "name": meta.name,
            "asset_class": AssetClass(meta.asset_class).value,
            "quote_currency": meta.quote_currency,
            "tick_size": float(meta.tick_size),
            "pip_position": int(meta.pip_position),
            "lot_size": float(meta.lot_size),
            "min_volume": float(meta.min_volume),
            "step_volume": float(meta.step_volume),
            "calendar": meta.calendar,
            "updated_at": now,
        }
        for meta in instruments
    ]
    return _upsert(session, Instrument, rows, keys=("symbol",))


def load_instruments(session: Session) -> list[InstrumentMeta]:
    """Every stored instrument, by symbol, rebuilt (and so re-validated) as InstrumentMeta."""
    fields = [c for c in Instrument.__table__.columns if c.name != "updated_at"]
    rows = session.execute(select(*fields).order_by(Instrument.symbol)).mappings()
    return [InstrumentMeta(**{**row, "asset_class": AssetClass(row["asset_class"])}) for row in rows]


# ------------------------------------------------------------------------------------------- market regimes


def upsert_market_regimes(session: Session, frame: pd.DataFrame, classifier: str) -> int:
    """Store a regime frame (domain.regimes contract) for one classifier, replacing rows with the same keys.

    Probabilities are taken from every `prob_<label>` column. Rows are written in bulk with
    `ON CONFLICT DO UPDATE`, so re-materialising a partition rewrites it and never duplicates it.
    """
    missing = {"date", "symbol", "regime"} - set(frame.columns)
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    if missing or not prob_columns:
        raise InvalidRegistryInputError(
            f"regime frame lacks columns {sorted(missing) or 'prob_<label>'}: pass the frame produced by "
            "emp_pipeline.domain.regimes (date, symbol, regime, prob_<label>..., warmup)"
        )
    if frame.empty:
        return 0
    if frame.duplicated(["symbol", "date"]).any():
        duplicates = frame.loc[frame.duplicated(["symbol", "date"], keep=False), ["symbol", "date"]].head(3)
        raise InvalidRegistryInputError(
            f"regime frame has several rows per (symbol, date), e.g. {duplicates.to_dict('records')}: "
            "a classifier emits one label per symbol and day; de-duplicate the frame first"
        )
    dates = pd.DatetimeIndex(frame["date"])
    if dates.tz is not None:
        dates = dates.tz_convert("UTC")
    day_values = dates.date
    labels = [c.removeprefix("prob_") for c in prob_columns]
    probabilities = frame[prob_columns].to_numpy(dtype=np.float64)
    probabilities = np.where(np.isfinite(probabilities), probabilities, np.nan)
    warmup = frame["warmup"].to_numpy(dtype=bool) if "warmup" in frame.columns else np.zeros(len(frame), bool)
    probability_maps = [
        {label: (None if math.isnan(p) else p) for label, p in zip(labels, row, strict=True)}
        for row in probabilities.tolist()
    ]
    keys = ("symbol", "date", "classifier")
    bind = session.get_bind()
    if bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg2":
        staged = pd.DataFrame(
            {
                "symbol": frame["symbol"].astype(str).to_numpy(),
                "date": day_values,
                "classifier": classifier,
                "regime": frame["regime"].astype(str).to_numpy(),
                "probabilities": [json.dumps(m) for m in probability_maps],
                "warmup": warmup,
            }
        )
        return _copy_upsert_postgresql(session, MarketRegime, staged, keys)
    rows = [
        {
            "symbol": symbol,
            "date": day,
            "classifier": classifier,
            "regime": str(regime),
            "probabilities": probability_map,
            "warmup": bool(is_warmup),
        }
        for symbol, day, regime, probability_map, is_warmup in zip(
            frame["symbol"].astype(str).tolist(),
            day_values,
            frame["regime"].tolist(),
            probability_maps,
            warmup,
            strict=True,
        )
    ]
    return _upsert(session, MarketRegime, rows, keys=keys)


def _copy_upsert_postgresql(
    session: Session, model: type[Any], frame: pd.DataFrame, keys: Sequence[str]
) -> int:
    """PostgreSQL bulk upsert: COPY into a temporary staging table, then one INSERT ... ON CONFLICT.

    About 2-3x faster than batched INSERTs for 100k rows; `frame` holds the table's columns, JSON as text.
    """
    table = model.__table__.name
    columns = ", ".join(f'"{name}"' for name in frame.columns)
    updates = ", ".join(f'"{name}" = excluded."{name}"' for name in frame.columns if name not in keys)
    conflict = ", ".join(f'"{name}"' for name in keys)
    staging = f"staging_{table}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
        cursor.copy_expert(f"COPY {staging} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
        cursor.execute(f"DROP TABLE {staging}")
    finally:
        cursor.close()
    return len(frame)


def load_market_regimes(
    session: Session,
    classifier: str,
    symbols: Sequence[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> pd.DataFrame:
    """Stored regimes back as a regime frame: date (UTC midnight), symbol, regime, prob_<label>..., warmup."""
    columns = (MarketRegime.date, MarketRegime.symbol, MarketRegime.regime, MarketRegime.probabilities)
    query = select(*columns, MarketRegime.warmup).where(MarketRegime.classifier == classifier)
    if symbols is not None:
        query = query.where(MarketRegime.symbol.in_(list(symbols)))
    if start is not None:
        query = query.where(MarketRegime.date >= start)
    if end is not None:
        query = query.where(MarketRegime.date <= end)
    rows = session.execute(query.order_by(MarketRegime.symbol, MarketRegime.date)).all()
    records = [
        {
            "date": day,
            "symbol": symbol,
            "regime": regime,
            **{f"prob_{label}": p for label, p in probabilities.items()},
            "warmup": warmup,
        }
        for day, symbol, regime, probabilities, warmup in rows
    ]
    frame = pd.DataFrame.from_records(
        records, columns=None if records else ["date", "symbol", "regime", "warmup"]
    )
    frame["date"] = pd.to_datetime(frame["date"]).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    frame[prob_columns] = frame[prob_columns].astype(np.float64)
    return frame[["date", "symbol", "regime", *prob_columns, "warmup"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------ evolution, strategies


def evolution_run_id(
    period: str,
    train_start: dt.date,
    train_end: dt.date,
    embargo_days: int,
    seed: int,
    config: Mapping[str, Any],
) -> str:
    """Content id of a run: the same period, window, seed and config always name the same run."""
    identity = {
        "period": period,
        "train_start": train_start.isoformat(),
        "train_end": train_end.isoformat(),
        "embargo_days": embargo_days,
        "seed": seed,
        "config": config,
    }
    return hashlib.sha256(_canonical_json(identity).encode()).hexdigest()[:32]


def strategy_content_id(genome: Mapping[str, Any], evolution_run_id: str) -> str:
    """Content id of a strategy: its canonical genome JSON within its run (stable across re-runs)."""
    text = f"{evolution_run_id}:{_canonical_json(genome)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record_evolution_run(
    session: Session,
    *,
    period: str,
    train_start: dt.date,
    train_end: dt.date,
    embargo_days: int,
    seed: int,
    config: Mapping[str, Any],
) -> str:
    """Register (or restart) the run for this period and configuration; returns its id, status `running`."""
    if train_end < train_start:
        raise InvalidRegistryInputError(
            f"train_end {train_end} is before train_start {train_start}: swap them"
        )
    run_id = evolution_run_id(period, train_start, train_end, embargo_days, seed, config)
    row = {
        "id": run_id,
        "period": period,
        "train_start": train_start,
        "train_end": train_end,
        "embargo_days": embargo_days,
        "seed": seed,
        "config": dict(config),
        "started_at": utc_now(),
        "finished_at": None,
        "status": RunStatus.RUNNING.value,
    }
    _upsert(session, EvolutionRun, [row], keys=("id",))
    return run_id


def finish_evolution_run(session: Session, run_id: str, status: str = RunStatus.SUCCEEDED) -> None:
    """Mark a run succeeded or failed, with the time it ended."""
    _check_member("status", status, RunStatus)
    result = session.execute(
        update(EvolutionRun)
        .where(EvolutionRun.id == run_id)
        .values(status=str(status), finished_at=utc_now())
    )
    if result.rowcount == 0:
        raise UnknownEvolutionRunError(
            f"evolution run {run_id!r} is not registered: call record_evolution_run first"
        )


def record_strategies(session: Session, run_id: str, strategies: Sequence[NewStrategy]) -> list[str]:
    """Record a run's strategies and their lineage; returns their ids in input order.

    Idempotent: a strategy whose (genome, run) is already stored is left as it is (same id, same status), and
    lineage edges are only added. A genome seen twice in the batch (e.g. an elite carried into a later
    generation) is one strategy: its first occurrence gives generation and operator, parents are merged.
    Parents must be in this batch or already stored.
    """
    run = session.get(EvolutionRun, run_id)
    if run is None:
        raise UnknownEvolutionRunError(
            f"evolution run {run_id!r} is not registered: call record_evolution_run first"
        )
    ids: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    parents: dict[str, set[str]] = {}
    now = utc_now()
    for candidate in strategies:
        _check_member("operator", candidate.operator, StrategyOperator)
        strategy_id = strategy_content_id(candidate.genome, run_id)
        ids.append(strategy_id)
        parents.setdefault(strategy_id, set()).update(p for p in candidate.parent_ids if p != strategy_id)
        if strategy_id in rows:
            continue
        rows[strategy_id] = {
            "id": strategy_id,
            "genome": dict(candidate.genome),
            "genome_version": candidate.genome_version,
            "evolution_run_id": run_id,
            "period": run.period,
            "generation": candidate.generation,
            "operator": str(candidate.operator),
            "fitness": _finite_or_none(candidate.fitness),
            "status": StrategyStatus.CANDIDATE.value,
            "created_at": now,
        }
    if not rows:
        return ids

    external_parents = set().union(*parents.values()) - rows.keys()
    known = _existing_strategy_ids(session, external_parents)
    if unknown := sorted(external_parents - known):
        raise UnknownStrategyError(
            f"parent strategies {unknown[:5]} are neither in this batch nor in the registry: record parents "
            "first (or in the same batch) and refer to them by strategy_content_id(genome, run_id)"
        )

    statement = _insert(session, Strategy).on_conflict_do_nothing(index_elements=["id"])
    created: list[str] = []
    for start in range(0, len(rows), UPSERT_CHUNK_ROWS):
        chunk = list(rows.values())[start : start + UPSERT_CHUNK_ROWS]
        created.extend(session.scalars(statement.returning(Strategy.id), chunk).all())
    if created:
        session.execute(
            _insert(session, StrategyStatusChange),
            [
                {
                    "strategy_id": strategy_id,
                    "from_status": None,
                    "to_status": StrategyStatus.CANDIDATE.value,
                    "at": now,
                    "reason": f"created by evolution run {run_id}",
                }
                for strategy_id in created
            ],
        )
    edges = [
        {"child_id": child, "parent_id": parent} for child, ps in parents.items() for parent in sorted(ps)
    ]
    if edges:
        edge_insert = _insert(session, StrategyParent).on_conflict_do_nothing(
            index_elements=["child_id", "parent_id"]
        )
        session.execute(edge_insert, edges)
    return ids


def _existing_strategy_ids(session: Session, strategy_ids: Iterable[str]) -> set[str]:
    wanted = list(strategy_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(session.scalars(select(Strategy.id).where(Strategy.id.in_(wanted[start : start + 500]))))
    return found


def get_strategy(session: Session, strategy_id: str) -> StrategyRecord:
    row = session.get(Strategy, strategy_id)
    if row is None:
        raise UnknownStrategyError(
            f"strategy {strategy_id!r} is not in the registry: check the id (see strategies)"
        )
    return _record_from_row(StrategyRecord, row)


def strategies_for_run(session: Session, run_id: str) -> list[StrategyRecord]:
    """A run's strategies, best fitness first."""
    query = (
        select(Strategy)
        .where(Strategy.evolution_run_id == run_id)
        .order_by(Strategy.fitness.desc().nulls_last(), Strategy.id)
    )
    return [_record_from_row(StrategyRecord, row) for row in session.scalars(query)]


def active_strategies(session: Session, period: str | None = None) -> list[StrategyRecord]:
    """Strategies currently allowed to trade (optionally of one period), best fitness first."""
    query = select(Strategy).where(Strategy.status == StrategyStatus.ACTIVE.value)
    if period is not None:
        query = query.where(Strategy.period == period)
    query = query.order_by(Strategy.fitness.desc().nulls_last(), Strategy.id)
    return [_record_from_row(StrategyRecord, row) for row in session.scalars(query)]


def ancestry(session: Session, strategy_id: str) -> list[Ancestor]:
    """Every ancestor of a strategy up to the seeds (the strategy itself excluded), newest generation first.

    One recursive query; UNION (not UNION ALL) visits each ancestor once, so the heavily re-converging lineage
    of a genetic algorithm stays linear in the number of ancestors.
    """
    get_strategy(session, strategy_id)
    edges = StrategyParent.__table__
    found = (
        select(edges.c.parent_id.label("id"))
        .where(edges.c.child_id == strategy_id)
        .cte("ancestors", recursive=True)
    )
    found = found.union(select(edges.c.parent_id).join(found, edges.c.child_id == found.c.id))
    query: Select[Any] = (
        select(Strategy.id, Strategy.evolution_run_id, Strategy.generation, Strategy.operator)
        .join(found, Strategy.id == found.c.id)
        .order_by(Strategy.generation.desc(), Strategy.id)
    )
    ancestors = session.execute(query).all()
    parents_of: dict[str, list[str]] = {row.id: [] for row in ancestors}
    ids = list(parents_of)
    for start in range(0, len(ids), 500):
        edge_rows = session.execute(
            select(edges.c.child_id, edges.c.parent_id)
            .where(edges.c.child_id.in_(ids[start : start + 500]))
            .order_by(edges.c.child_id, edges.c.parent_id)
        )
        for child, parent in edge_rows:
            parents_of[child].append(parent)
    return [
        Ancestor(
            strategy_id=row.id,
            evolution_run_id=row.evolution_run_id,
            generation=row.generation,
            operator=row.operator,
            parent_ids=tuple(parents_of[row.id]),
        )
        for row in ancestors
    ]


def set_strategy_status(session: Session, strategy_id: str, new_status: str, reason: str) -> bool:
    """Move a strategy along its lifecycle and record why; returns False if it already had that status.

    The row is locked (PostgreSQL `FOR UPDATE`, SQLite's write lock) so two promoters cannot both act on
    the same old status.
    """
    _check_member("new_status", new_status, StrategyStatus)
    row = session.scalars(select(Strategy).where(Strategy.id == strategy_id).with_for_update()).one_or_none()
    if row is None:
        raise UnknownStrategyError(f"strategy {strategy_id!r} is not in the registry: check the id")
    if row.status == new_status:
        return False
    allowed = STRATEGY_TRANSITIONS[StrategyStatus(row.status)]
    if new_status not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (it is final)"
        raise InvalidStatusTransitionError(
            f"strategy {strategy_id} cannot go from {row.status} to {new_status}; from {row.status} it may "
            f"go to {options}"
        )
    session.add(
        StrategyStatusChange(
            strategy_id=strategy_id,
            from_status=row.status,
            to_status=str(new_status),
            at=utc_now(),
            reason=reason,
        )
    )
    row.status = str(new_status)
    session.flush()
    return True


def status_history(session: Session, strategy_id: str) -> list[StatusChange]:
    query = (
        select(StrategyStatusChange)
        .where(StrategyStatusChange.strategy_id == strategy_id)
        .order_by(StrategyStatusChange.at, StrategyStatusChange.id)
    )
    return [_record_from_row(StatusChange, row) for row in session.scalars(query)]


# ------------------------------------------------------------------------------------------- performance


def record_performance(session: Session, entries: Iterable[PerformanceEntry]) -> int:
    """Store metrics per (strategy, period, window kind), replacing what an earlier run stored for that key.

    Non-finite metric values (NaN, inf: e.g. a profit factor without losing trades) are stored as NULL, since
    JSON and SQLite cannot hold them faithfully; NULL means "undefined for this window".
    """
    now = utc_now()
    rows = []
    for entry in entries:
        _check_member("kind", entry.kind, WindowKind)
        metrics = {str(name): _metric_value(value) for name, value in entry.metrics.items()}
        columns = {name: metrics.get(name) for name in PERFORMANCE_COLUMNS}
        for name in _INTEGER_METRICS:
            if columns[name] is not None:
                columns[name] = int(columns[name])
        rows.append(
            {
                "strategy_id": entry.strategy_id,
                "period": entry.period,
                "kind": str(entry.kind),
                "start": entry.start,
                "end": entry.end,
                **columns,
                "metrics": metrics,
                "recorded_at": now,
            }
        )
    if unknown := sorted(
        {row["strategy_id"] for row in rows}
        - _existing_strategy_ids(session, {row["strategy_id"] for row in rows})
    ):
        raise UnknownStrategyError(
            f"performance given for unrecorded strategies {unknown[:5]}: record them first"
        )
    return _upsert(session, Performance, rows, keys=("strategy_id", "period", "kind"))


def _metric_value(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return _finite_or_none(value)


def performance_records(
    session: Session,
    *,
    strategy_ids: Sequence[str] | None = None,
    period: str | None = None,
    kind: str | None = None,
) -> list[PerformanceRecord]:
    query = select(Performance)
    if strategy_ids is not None:
        query = query.where(Performance.strategy_id.in_(list(strategy_ids)))
    if period is not None:
        query = query.where(Performance.period == period)
    if kind is not None:
        query = query.where(Performance.kind == kind)
    query = query.order_by(Performance.period, Performance.strategy_id, Performance.kind)
    return [
        PerformanceRecord(
            strategy_id=row.strategy_id,
            period=row.period,
            kind=row.kind,
            start=row.start,
            end=row.end,
            metrics=dict(row.metrics),
        )
        for row in session.scalars(query)
    ]


# ------------------------------------------------------------------------------------------- accounts, orders


def get_or_create_account(
    session: Session, *, broker: str, name: str, currency: str, initial_cash: float
) -> AccountRecord:
    """The account (broker, name), created with `initial_cash` if absent; concurrent callers get one row."""
    _check_member("broker", broker, BrokerKind)
    row = {
        "broker": str(broker),
        "name": name,
        "currency": currency,
        "initial_cash": float(initial_cash),
        "cash": float(initial_cash),
        "created_at": utc_now(),
    }
    session.execute(
        _insert(session, Account).on_conflict_do_nothing(index_elements=["broker", "name"]), [row]
    )
    account = session.scalars(select(Account).where(Account.broker == broker, Account.name == name)).one()
    return _record_from_row(AccountRecord, account)


def get_or_create_paper_account(
    session: Session, name: str = "paper", currency: str = "USD", initial_cash: float = 100_000.0
) -> AccountRecord:
    """The paper broker's account; an existing one keeps its cash (currency, initial cash not reset)."""
    return get_or_create_account(
        session, broker=BrokerKind.PAPER, name=name, currency=currency, initial_cash=initial_cash
    )


def get_account(session: Session, account_id: int) -> AccountRecord:
    row = session.get(Account, account_id)
    if row is None:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    return _record_from_row(AccountRecord, row)


def create_order_if_absent(
    session: Session,
    *,
    client_order_id: str,
    account_id: int,
    symbol: str,
    side: str,
    quantity: float,
    bar_time: dt.datetime,
    target_position: float,
    strategy_id: str | None = None,
    order_type: str = "market",
) -> tuple[OrderRecord, bool]:
    """Record an order intent exactly once per client order id; returns (order, created).

    Safe against concurrent callers in several processes: the unique index decides, `ON CONFLICT DO NOTHING`
    makes the loser a no-op, and the loser reads the winner's row. Only the caller that gets created=True may
    submit the order to the broker.
    """
    if not client_order_id or len(client_order_id) > CLIENT_ORDER_ID_MAX_LENGTH:
        raise InvalidRegistryInputError(
            f"client_order_id {client_order_id!r} must be 1..{CLIENT_ORDER_ID_MAX_LENGTH} characters "
            "(the cTrader limit): derive a shorter id, e.g. a hash of strategy, symbol and bar time"
        )
    _check_member("side", side, OrderSide)
    if not (math.isfinite(quantity) and quantity > 0):
        raise InvalidRegistryInputError(
            f"order quantity {quantity} must be a positive finite number; side gives sign"
        )
    _require_aware("bar_time", bar_time)
    if session.get(Account, account_id) is None:
        raise UnknownAccountError(f"account {account_id} is not in the registry: create it first")
    if strategy_id is not None and session.get(Strategy, strategy_id) is None:
        raise UnknownStrategyError(
            f"order for unrecorded strategy {strategy_id!r}: record the strategy first"
        )
    now = utc_now()
    row = {
        "client_order_id": client_order_id,
        "account_id": account_id,
        "strategy_id": strategy_id,
        "symbol": symbol,
        "side": str(side),
        "quantity": float(quantity),
        "order_type": order_type,
        "bar_time": bar_time,
        "target_position": float(target_position),
        "status": OrderStatus.PENDING.value,
        "broker_order_id": None,
        "error": None,
        "created_at": now,
        "updated_at": now,
    }
    order, created = _insert_once(session, Order, row, "client_order_id")
    if not created:
        requested = (account_id, symbol, str(side), float(quantity))
        stored = (order.account_id, order.symbol, order.side, order.quantity)
        if requested != stored:
            raise ClientOrderIdConflictError(
                f"client order id {client_order_id!r} already names order {stored} (account, symbol, side, "
                f"quantity), not {requested}: client order ids must be derived from the order's identity"
            )
    return _record_from_row(OrderRecord, order), created


def get_order(session: Session, client_order_id: str) -> OrderRecord:
    return _record_from_row(OrderRecord, _locked_order(session, client_order_id, lock=False))


def _locked_order(session: Session, client_order_id: str, *, lock: bool = True) -> Order:
    query = (
        select(Order)
        .where(Order.client_order_id == client_order_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    order = session.scalars(query).one_or_none()
    if order is None:
        raise UnknownOrderError(f"no order with client order id {client_order_id!r}: create it first")
    return order


def orders_for_account(
    session: Session, account_id: int, statuses: Iterable[str] | None = None
) -> list[OrderRecord]:
    query = select(Order).where(Order.account_id == account_id)
    if statuses is not None:
        query = query.where(Order.status.in_([str(s) for s in statuses]))
    return [
        _record_from_row(OrderRecord, row)
        for row in session.scalars(query.order_by(Order.created_at, Order.id))
    ]


def _check_order_transition(order: Order, new_status: str) -> None:
    current = order.status
    if current == new_status:
        return
    if current in TERMINAL_ORDER_STATUSES:
        raise InvalidOrderTransitionError(
            f"order {order.client_order_id} is already {current} (final) and cannot become {new_status}: "
            "reconcile with the broker instead of replaying old events"
        )
    if new_status in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.UNKNOWN):
        return
    if current == OrderStatus.UNKNOWN:
        return
    if _ORDER_PROGRESS[OrderStatus(new_status)] < _ORDER_PROGRESS[OrderStatus(current)]:
        raise InvalidOrderTransitionError(
            f"order {order.client_order_id} cannot go back from {current} to {new_status}: the event is "
            "stale; ignore it or reconcile with the broker"
        )


def update_order_status(
    session: Session,
    client_order_id: str,
    status: str,
    *,
    broker_order_id: str | None = None,
    error: str | None = None,
) -> OrderRecord:
    """Move an order along its lifecycle (see _ORDER_PROGRESS); repeating the current status is a no-op."""
    _check_member("status", status, OrderStatus)
    order = _locked_order(session, client_order_id)
    _check_order_transition(order, status)
    order.status = str(status)
    if broker_order_id is not None:
        order.broker_order_id = broker_order_id
    if error is not None:
        order.error = error
    order.updated_at = utc_now()
    session.flush()
    return _record_from_row(OrderRecord, order)


def record_fill(
    session: Session,
    *,
    client_order_id: str,
    broker_fill_id: str,
    price: float,
    quantity: float,
    filled_at: dt.datetime,
    fee: float = 0.0,
) -> tuple[FillRecord, bool]:
    """Record an execution once per broker fill id and apply it to the position, cash and order status.

    Returns (fill, created). A replayed report (same broker_fill_id, same contents) changes nothing; the
    same id with different contents raises FillConflictError. Cash moves by -signed quantity x price - fee.
    """
    if not (math.isfinite(price) and price > 0 and math.isfinite(quantity) and quantity > 0):
        raise InvalidRegistryInputError(
            f"fill price {price} and quantity {quantity} must be positive finite numbers"
        )
    if not (math.isfinite(fee) and fee >= 0):
        raise InvalidRegistryInputError(f"fill fee {fee} must be a non-negative finite number")
    _require_aware("filled_at", filled_at)
    order = _locked_order(session, client_order_id)
    row = {
        "order_id": order.id,
        "broker_fill_id": broker_fill_id,
        "price": float(price),
        "quantity": float(quantity),
        "fee": float(fee),
        "filled_at": filled_at,
    }
    fill, created = _insert_once(session, Fill, row, "broker_fill_id")
    if not created:
        if (fill.order_id, fill.price, fill.quantity, fill.fee) != (
            order.id,
            float(price),
            float(quantity),
            fee,
        ):
            raise FillConflictError(
                f"broker fill {broker_fill_id!r} is already recorded as order {fill.order_id}, "
                f"{fill.quantity} @ {fill.price} fee {fill.fee}, not order {order.id}, {quantity} @ {price} "
                f"fee {fee}: check the broker feed for a reused fill id"
            )
        return _record_from_row(FillRecord, fill), False

    signed_quantity = quantity if order.side == OrderSide.BUY else -quantity
    _apply_to_position(session, order.account_id, order.symbol, signed_quantity, price, fee)
    session.execute(
        update(Account)
        .where(Account.id == order.account_id)
        .values(cash=Account.cash - (signed_quantity * price + fee))
    )
    filled_total = session.scalar(select(func.sum(Fill.quantity)).where(Fill.order_id == order.id)) or 0.0
    if order.status not in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        complete = filled_total >= order.quantity * (1 - 1e-9)
        order.status = OrderStatus.FILLED.value if complete else OrderStatus.PARTIALLY_FILLED.value
        order.updated_at = utc_now()
    session.flush()
    return _record_from_row(FillRecord, fill), True


def _apply_to_position(
    session: Session, account_id: int, symbol: str, signed_quantity: float, price: float, fee: float
) -> None:
    blank = {
        "account_id": account_id,
        "symbol": symbol,
        "quantity": 0.0,
        "avg_price": 0.0,
        "realised_pnl": 0.0,
        "updated_at": utc_now(),
    }
    session.execute(
        _insert(session, Position)
        .values(blank)
        .on_conflict_do_nothing(index_elements=["account_id", "symbol"])
    )
    position = session.scalars(
        select(Position)
        .where(Position.account_id == account_id, Position.symbol == symbol)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    state = apply_fill(
        PositionState(position.quantity, position.avg_price, position.realised_pnl),
        signed_quantity,
        price,
        fee,
    )
    position.quantity = state.quantity
    position.avg_price = state.avg_price
    position.realised_pnl = state.realised_pnl
    position.updated_at = utc_now()


def fills_for_order(session: Session, client_order_id: str) -> list[FillRecord]:
    order = _locked_order(session, client_order_id, lock=False)
    query = select(Fill).where(Fill.order_id == order.id).order_by(Fill.filled_at, Fill.id)
    return [_record_from_row(FillRecord, row) for row in session.scalars(query)]


def positions_for_account(
    session: Session, account_id: int, *, include_flat: bool = False
) -> list[PositionRecord]:
    """The account's net positions by symbol (flat ones only if asked: they still carry realised PnL)."""
    query = select(Position).where(Position.account_id == account_id)
    if not include_flat:
        query = query.where(Position.quantity != 0.0)
    return [_record_from_row(PositionRecord, row) for row in session.scalars(query.order_by(Position.symbol))]


# ------------------------------------------------------------------------------------------- control flags


def set_flag(session: Session, name: str, enabled: bool, *, reason: str = "", updated_by: str = "") -> None:
    """Turn an operational flag (e.g. KILL_SWITCH) on or off, recording who did it and why."""
    row = {
        "name": name,
        "enabled": bool(enabled),
        "reason": reason,
        "updated_at": utc_now(),
        "updated_by": updated_by,
    }
    _upsert(session, ControlFlag, [row], keys=("name",))


def flag_enabled(session: Session, name: str) -> bool:
    """Whether a flag is on; a flag never set is off."""
    return bool(session.scalar(select(ControlFlag.enabled).where(ControlFlag.name == name)))


def get_flag(session: Session, name: str) -> FlagRecord | None:
    row = session.get(ControlFlag, name, populate_existing=True)
    if row is None:
        return None
    return _record_from_row(FlagRecord, row)
