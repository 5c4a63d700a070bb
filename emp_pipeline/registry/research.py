"""The research aggregate: evolution runs, their strategies and lineage, status history, and performance.

Ids are content-derived (a run from its period, window, seed, config and costs; a strategy from its genome
within its run), so re-running a period records nothing twice.

A run records the `Costs` its backtests paid, and every `StrategyRecord` read from here carries its run's
costs: what the strategy was measured with is what the gates replay and the live job trades it with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from emp_pipeline.domain.costs import Costs
from emp_pipeline.registry.errors import (
    InvalidRegistryInputError,
    InvalidStatusTransitionError,
    UnknownEvolutionRunError,
    UnknownStrategyError,
)
from emp_pipeline.registry.input_checks import canonical_json, check_member, finite_or_none
from emp_pipeline.registry.models import (
    EvolutionRun,
    Performance,
    RunStatus,
    Strategy,
    StrategyOperator,
    StrategyParent,
    StrategyStatus,
    StrategyStatusChange,
    WindowKind,
    utc_now,
)
from emp_pipeline.registry.records import (
    STRATEGY_COLUMNS,
    Ancestor,
    NewStrategy,
    PerformanceEntry,
    PerformanceRecord,
    StatusChange,
    StrategyRecord,
)
from emp_pipeline.registry.statements import (
    UPSERT_CHUNK_ROWS,
    dialect_insert,
    record_from_row,
    upsert_rows,
)

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
    "dsr_trials",
)
_INTEGER_METRICS = frozenset({"max_drawdown_days", "trade_count", "dsr_trials"})

# Strategy lifecycle: a candidate is promoted (active) or rejected by the out-of-sample gates; an active
# strategy is retired when it decays or is superseded, and a retired one may pass the gates again.
STRATEGY_TRANSITIONS: dict[str, frozenset[str]] = {
    StrategyStatus.CANDIDATE: frozenset({StrategyStatus.ACTIVE, StrategyStatus.REJECTED}),
    StrategyStatus.ACTIVE: frozenset({StrategyStatus.RETIRED}),
    StrategyStatus.RETIRED: frozenset({StrategyStatus.ACTIVE}),
    StrategyStatus.REJECTED: frozenset(),
}


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
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:32]


def strategy_content_id(genome: Mapping[str, Any], evolution_run_id: str) -> str:
    """Content id of a strategy: its canonical genome JSON within its run (stable across re-runs)."""
    text = f"{evolution_run_id}:{canonical_json(genome)}"
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
    costs: Costs,
) -> str:
    """Register (or restart) the run of this period, config and costs; returns its id, status `running`.

    The costs are part of the run's identity as top-level terms of its config (where runs recorded before
    the `costs` column kept them, so their ids stay the same); `config` itself must not name them.
    """
    if train_end < train_start:
        raise InvalidRegistryInputError(
            f"train_end {train_end} is before train_start {train_start}: swap them"
        )
    terms = costs.to_dict()
    if clash := sorted(terms.keys() & config.keys()):
        raise InvalidRegistryInputError(
            f"config names the cost terms {', '.join(clash)}: pass them only as costs= (a Costs value)"
        )
    run_id = evolution_run_id(period, train_start, train_end, embargo_days, seed, {**config, **terms})
    row = {
        "id": run_id,
        "period": period,
        "train_start": train_start,
        "train_end": train_end,
        "embargo_days": embargo_days,
        "seed": seed,
        "config": dict(config),
        "costs": terms,
        "started_at": utc_now(),
        "finished_at": None,
        "status": RunStatus.RUNNING.value,
    }
    upsert_rows(session, EvolutionRun, [row], keys=("id",))
    return run_id


def finish_evolution_run(session: Session, run_id: str, status: str = RunStatus.SUCCEEDED) -> None:
    """Mark a run succeeded or failed, with the time it ended."""
    check_member("status", status, RunStatus)
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
        check_member("operator", candidate.operator, StrategyOperator)
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
            "fitness": finite_or_none(candidate.fitness),
            "status": StrategyStatus.CANDIDATE.value,
            "created_at": now,
        }
    if not rows:
        return ids

    external_parents = set().union(*parents.values()) - rows.keys()
    known = existing_strategy_ids(session, external_parents)
    if unknown := sorted(external_parents - known):
        raise UnknownStrategyError(
            f"parent strategies {unknown[:5]} are neither in this batch nor in the registry: record parents "
            "first (or in the same batch) and refer to them by strategy_content_id(genome, run_id)"
        )

    statement = dialect_insert(session, Strategy).on_conflict_do_nothing(index_elements=["id"])
    created: list[str] = []
    for start in range(0, len(rows), UPSERT_CHUNK_ROWS):
        chunk = list(rows.values())[start : start + UPSERT_CHUNK_ROWS]
        created.extend(session.scalars(statement.returning(Strategy.id), chunk).all())
    if created:
        session.execute(
            dialect_insert(session, StrategyStatusChange),
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
        edge_insert = dialect_insert(session, StrategyParent).on_conflict_do_nothing(
            index_elements=["child_id", "parent_id"]
        )
        session.execute(edge_insert, edges)
    return ids


def existing_strategy_ids(session: Session, strategy_ids: Iterable[str]) -> set[str]:
    wanted = list(strategy_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(session.scalars(select(Strategy.id).where(Strategy.id.in_(wanted[start : start + 500]))))
    return found


def evolution_run_ga_text(session: Session, run_ids: Sequence[str]) -> dict[str, str]:
    """Each run's GA as a report shows it: "40 x 8, seed 1334985416" (population x generations, run seed)."""
    rows = session.execute(
        select(EvolutionRun.id, EvolutionRun.config, EvolutionRun.seed).where(EvolutionRun.id.in_(run_ids))
    )
    return {
        run_id: f"{config.get('population_size')} x {config.get('generations')}, seed {seed}"
        for run_id, config, seed in rows
    }


def evolution_run_costs(session: Session, run_id: str) -> Costs:
    """The costs a run's backtests paid (and its strategies trade with)."""
    stored = session.scalar(select(EvolutionRun.costs).where(EvolutionRun.id == run_id))
    if stored is None:
        raise UnknownEvolutionRunError(
            f"evolution run {run_id!r} is not registered: materialize evolved_strategies for its period"
        )
    return Costs.from_dict(stored, source=f"evolution run {run_id}")


def _strategy_records(session: Session, query: Select[Any]) -> list[StrategyRecord]:
    """Records of the strategies `query` selects (a select of Strategy rows), each with its run's costs."""
    rows = session.execute(
        query.add_columns(EvolutionRun.costs).join(EvolutionRun, Strategy.evolution_run_id == EvolutionRun.id)
    )
    return [
        StrategyRecord(
            **{name: getattr(strategy, name) for name in STRATEGY_COLUMNS},
            costs=Costs.from_dict(costs, source=f"evolution run {strategy.evolution_run_id}"),
        )
        for strategy, costs in rows
    ]


def get_strategy(session: Session, strategy_id: str) -> StrategyRecord:
    found = _strategy_records(session, select(Strategy).where(Strategy.id == strategy_id))
    if not found:
        raise UnknownStrategyError(
            f"strategy {strategy_id!r} is not in the registry: check the id (see strategies)"
        )
    return found[0]


def active_strategies(session: Session, period: str | None = None) -> list[StrategyRecord]:
    """Strategies currently allowed to trade (optionally of one period), best fitness first."""
    query = select(Strategy).where(Strategy.status == StrategyStatus.ACTIVE.value)
    if period is not None:
        query = query.where(Strategy.period == period)
    query = query.order_by(Strategy.fitness.desc().nulls_last(), Strategy.id)
    return _strategy_records(session, query)


def list_strategies(
    session: Session, *, period: str | None = None, status: str | None = None, limit: int | None = None
) -> list[StrategyRecord]:
    """Strategies of a period and/or status (all when None), newest period first, best fitness first."""
    query = select(Strategy)
    if period is not None:
        query = query.where(Strategy.period == period)
    if status is not None:
        check_member("status", status, StrategyStatus)
        query = query.where(Strategy.status == status)
    query = query.order_by(Strategy.period.desc(), Strategy.fitness.desc().nulls_last(), Strategy.id)
    return _strategy_records(session, query.limit(limit) if limit is not None else query)


def strategy_periods(session: Session) -> list[str]:
    """Every period with recorded strategies, oldest first."""
    return list(session.scalars(select(Strategy.period).distinct().order_by(Strategy.period)))


def parent_ids(session: Session, strategy_id: str) -> tuple[str, ...]:
    """The strategy's direct parents (none for a seed or an immigrant), sorted."""
    edges = StrategyParent.__table__
    query = select(edges.c.parent_id).where(edges.c.child_id == strategy_id).order_by(edges.c.parent_id)
    return tuple(session.scalars(query))


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
    check_member("new_status", new_status, StrategyStatus)
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
    return [record_from_row(StatusChange, row) for row in session.scalars(query)]


def record_performance(session: Session, entries: Iterable[PerformanceEntry]) -> int:
    """Store metrics per (strategy, period, window kind), replacing what an earlier run stored for that key.

    Non-finite metric values (NaN, inf: e.g. a profit factor without losing trades) are stored as NULL, since
    JSON and SQLite cannot hold them faithfully; NULL means "undefined for this window".
    """
    now = utc_now()
    rows = []
    for entry in entries:
        check_member("kind", entry.kind, WindowKind)
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
        - existing_strategy_ids(session, {row["strategy_id"] for row in rows})
    ):
        raise UnknownStrategyError(
            f"performance given for unrecorded strategies {unknown[:5]}: record them first"
        )
    return upsert_rows(session, Performance, rows, keys=("strategy_id", "period", "kind"))


def _metric_value(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return finite_or_none(value)


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


def activation_time(session: Session, strategy_id: str) -> dt.datetime | None:
    """When the strategy last became active (the start of its live track record), or None if never."""
    changes = [c for c in status_history(session, strategy_id) if c.to_status == StrategyStatus.ACTIVE.value]
    return changes[-1].at if changes else None
