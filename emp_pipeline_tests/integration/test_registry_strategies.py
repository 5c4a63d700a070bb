"""Evolution runs, strategies, lineage, status lifecycle and performance, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest
from sqlalchemy import Engine, func, select

from emp_pipeline.domain.costs import Costs
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.errors import (
    InvalidRegistryInputError,
    InvalidStatusTransitionError,
    UnknownEvolutionRunError,
    UnknownStrategyError,
)
from emp_pipeline.registry.models import (
    EvolutionRun,
    Performance,
    Strategy,
    StrategyParent,
    StrategyStatusChange,
)
from emp_pipeline.registry.records import NewStrategy, PerformanceEntry
from emp_pipeline.registry.research import (
    active_strategies,
    ancestry,
    finish_evolution_run,
    get_strategy,
    list_strategies,
    performance_records,
    record_evolution_run,
    record_performance,
    record_strategies,
    set_strategy_status,
    status_history,
    strategy_content_id,
)

TRAIN = {"train_start": dt.date(2010, 1, 1), "train_end": dt.date(2011, 12, 31), "embargo_days": 5}


def genome(n: int) -> dict:
    return {"version": 1, "direction": "long", "long_entry": {"feature": "what_ret_5", "threshold": n / 10}}


def new_run(engine: Engine, period: str = "2012-01", seed: int = 7) -> str:
    with session_scope(engine) as session:
        return record_evolution_run(
            session, period=period, seed=seed, config={"population": 4}, costs=Costs(), **TRAIN
        )


def test_evolution_run_is_identified_by_its_content(registry_engine: Engine) -> None:
    first = new_run(registry_engine)
    with session_scope(registry_engine) as session:
        finish_evolution_run(session, first)
    again = new_run(registry_engine)
    other_seed = new_run(registry_engine, seed=8)

    assert again == first != other_seed
    with session_scope(registry_engine) as session:
        run = session.get(EvolutionRun, first)
        assert run is not None
        assert (run.status, run.finished_at, run.config) == ("running", None, {"population": 4})
        assert run.train_start == dt.date(2010, 1, 1) and run.embargo_days == 5
        finish_evolution_run(session, first, "failed")
    with session_scope(registry_engine) as session:
        run = session.get(EvolutionRun, first)
        assert run is not None and run.status == "failed"
        assert run.finished_at is not None and run.finished_at.tzinfo is dt.UTC
        with pytest.raises(UnknownEvolutionRunError, match="record_evolution_run"):
            finish_evolution_run(session, "no-such-run")


def record_family(engine: Engine, run_id: str) -> dict[str, str]:
    """Seeds a, b; c = crossover(a, b); d = mutation(c); d carried again as an elite (same genome)."""
    a, b, c, d = (strategy_content_id(genome(n), run_id) for n in range(4))
    batch = [
        NewStrategy(genome(0), 1, generation=0, operator="seed", fitness=0.1),
        NewStrategy(genome(1), 1, generation=0, operator="seed", fitness=0.2),
        NewStrategy(genome(2), 1, generation=1, operator="crossover", fitness=0.5, parent_ids=(a, b)),
        NewStrategy(genome(3), 1, generation=2, operator="mutation", fitness=0.9, parent_ids=(c,)),
        NewStrategy(genome(3), 1, generation=3, operator="elite", fitness=0.9, parent_ids=(d,)),
    ]
    with session_scope(engine) as session:
        ids = record_strategies(session, run_id, batch)
    assert ids == [a, b, c, d, d]
    return {"a": a, "b": b, "c": c, "d": d}


def count(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_strategies_round_trip_with_lineage_and_are_idempotent(registry_engine: Engine) -> None:
    run_id = new_run(registry_engine)
    ids = record_family(registry_engine, run_id)
    record_family(registry_engine, run_id)  # a retried materialisation

    assert count(registry_engine, Strategy) == 4
    assert count(registry_engine, StrategyParent) == 3  # c->a, c->b, d->c; the elite is d itself
    assert count(registry_engine, StrategyStatusChange) == 4
    with session_scope(registry_engine) as session:
        d = get_strategy(session, ids["d"])
        assert (d.genome, d.generation, d.operator, d.fitness) == (genome(3), 2, "mutation", 0.9)
        assert (d.status, d.period, d.evolution_run_id) == ("candidate", "2012-01", run_id)
        assert d.genome_version == 1
        assert d.created_at.tzinfo is dt.UTC
        period = list_strategies(session, period="2012-01")
        assert [(s.id, s.evolution_run_id) for s in period] == [(ids[k], run_id) for k in "dcba"]

        lineage = ancestry(session, ids["d"])
        assert [a.strategy_id for a in lineage] == [ids["c"], *sorted([ids["a"], ids["b"]])]
        assert lineage[0].parent_ids == tuple(sorted([ids["a"], ids["b"]]))
        assert [a.operator for a in lineage] == ["crossover", "seed", "seed"]
        assert all(a.parent_ids == () for a in lineage[1:])
        assert ancestry(session, ids["a"]) == []


def test_parents_may_come_from_an_earlier_run_but_must_exist(registry_engine: Engine) -> None:
    earlier = new_run(registry_engine, period="2011-12")
    ids = record_family(registry_engine, earlier)
    later = new_run(registry_engine, period="2012-01")
    immigrant = NewStrategy(genome(3), 1, 0, operator="immigrant", fitness=None, parent_ids=(ids["d"],))
    with session_scope(registry_engine) as session:
        [child] = record_strategies(session, later, [immigrant])
        assert child != ids["d"]  # same genome, different run: a different strategy
        assert [a.strategy_id for a in ancestry(session, child)][:2] == [ids["d"], ids["c"]]

    orphan = NewStrategy(genome(9), 1, 1, operator="mutation", fitness=1.0, parent_ids=("missing",))
    with session_scope(registry_engine) as session, pytest.raises(UnknownStrategyError, match="missing"):
        record_strategies(session, later, [orphan])
    with session_scope(registry_engine) as session, pytest.raises(UnknownEvolutionRunError):
        record_strategies(session, "no-such-run", [orphan])
    cloned = NewStrategy(genome(5), 1, 0, "cloning", 0.0)
    with session_scope(registry_engine) as session, pytest.raises(InvalidRegistryInputError, match="cloning"):
        record_strategies(session, later, [cloned])
    assert count(registry_engine, Strategy) == 5


def test_ancestry_of_a_long_converging_lineage_matches_a_graph_walk(registry_engine: Engine) -> None:
    """Thirty generations of 12, two random parents each: the recursive query visits each ancestor once."""
    rng = random.Random(3)
    run_id = new_run(registry_engine)
    batch, parents_of, previous = [], {}, []
    for generation in range(30):
        current = []
        for member in range(12):
            g = genome(generation * 100 + member)
            sid = strategy_content_id(g, run_id)
            parents = tuple(rng.sample(previous, 2)) if previous else ()
            parents_of[sid] = set(parents)
            operator = "crossover" if parents else "seed"
            batch.append(NewStrategy(g, 1, generation, operator, fitness=rng.random(), parent_ids=parents))
            current.append(sid)
        previous = current
    with session_scope(registry_engine) as session:
        record_strategies(session, run_id, batch)

    leaf = previous[0]
    expected, frontier = set(), [leaf]
    while frontier:
        for parent in parents_of[frontier.pop()]:
            if parent not in expected:
                expected.add(parent)
                frontier.append(parent)
    with session_scope(registry_engine) as session:
        lineage = ancestry(session, leaf)
    assert {a.strategy_id for a in lineage} == expected
    assert len(lineage) == len(expected)
    assert [a.generation for a in lineage] == sorted((a.generation for a in lineage), reverse=True)
    assert all(set(a.parent_ids) == parents_of[a.strategy_id] for a in lineage)


def test_status_lifecycle_is_enforced_and_recorded(registry_engine: Engine) -> None:
    ids = record_family(registry_engine, new_run(registry_engine))
    with session_scope(registry_engine) as session:
        assert set_strategy_status(session, ids["d"], "active", "passed out-of-sample gates")
        assert not set_strategy_status(session, ids["d"], "active", "again")
        assert set_strategy_status(session, ids["c"], "rejected", "deflated Sharpe below 0.5")
        assert [s.id for s in active_strategies(session)] == [ids["d"]]
        assert active_strategies(session, period="1999-01") == []

    with session_scope(registry_engine) as session:
        with pytest.raises(InvalidStatusTransitionError, match=r"from active to candidate.*retired"):
            set_strategy_status(session, ids["d"], "candidate", "demote")
        with pytest.raises(InvalidStatusTransitionError, match="nothing \\(it is final\\)"):
            set_strategy_status(session, ids["c"], "active", "second chance")
        with pytest.raises(InvalidStatusTransitionError, match="active, rejected"):
            set_strategy_status(session, ids["a"], "retired", "never traded")
        with pytest.raises(UnknownStrategyError):
            set_strategy_status(session, "nope", "active", "")
        with pytest.raises(InvalidRegistryInputError, match="new_status"):
            set_strategy_status(session, ids["a"], "paused", "")
        set_strategy_status(session, ids["d"], "retired", "superseded")
        set_strategy_status(session, ids["d"], "active", "passed the gates again")

    with session_scope(registry_engine) as session:
        history = status_history(session, ids["d"])
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, "candidate"),
        ("candidate", "active"),
        ("active", "retired"),
        ("retired", "active"),
    ]
    assert history[1].reason == "passed out-of-sample gates"
    assert history[0].at <= history[1].at <= history[3].at


def test_performance_upsert_replaces_per_strategy_period_and_window(registry_engine: Engine) -> None:
    ids = record_family(registry_engine, new_run(registry_engine))
    window = {"period": "2012-01", "start": dt.date(2012, 1, 2), "end": dt.date(2012, 1, 31)}
    metrics = {"sharpe": 1.25, "max_drawdown": -0.08, "trade_count": 14, "profit_factor": math.inf}
    metrics |= {"sortino": math.nan, "custom_skew": 0.3, "max_drawdown_days": 9.0}
    with session_scope(registry_engine) as session:
        record_performance(
            session,
            [
                PerformanceEntry(ids["d"], kind="out_of_sample", metrics=metrics, **window),
                PerformanceEntry(ids["d"], kind="in_sample", metrics={"sharpe": 2.0}, **window),
            ],
        )
        rerun = PerformanceEntry(ids["d"], kind="out_of_sample", metrics={**metrics, "sharpe": 0.4}, **window)
        record_performance(session, [rerun])

    assert count(registry_engine, Performance) == 2
    with session_scope(registry_engine) as session:
        oos = session.scalars(select(Performance).where(Performance.kind == "out_of_sample")).one()
        assert (oos.sharpe, oos.max_drawdown, oos.trade_count, oos.max_drawdown_days) == (0.4, -0.08, 14, 9)
        assert oos.profit_factor is None and oos.sortino is None and oos.cagr is None
        [record] = performance_records(session, strategy_ids=[ids["d"]], kind="out_of_sample")
        assert record.metrics == {
            "sharpe": 0.4,
            "max_drawdown": -0.08,
            "trade_count": 14,
            "profit_factor": None,
            "sortino": None,
            "custom_skew": 0.3,
            "max_drawdown_days": 9.0,
        }
        assert (record.start, record.end) == (dt.date(2012, 1, 2), dt.date(2012, 1, 31))
        assert len(performance_records(session, period="2012-01")) == 2
        with pytest.raises(UnknownStrategyError, match="record them first"):
            record_performance(session, [PerformanceEntry("ghost", kind="in_sample", metrics={}, **window)])
        with pytest.raises(InvalidRegistryInputError, match="kind"):
            record_performance(session, [PerformanceEntry(ids["a"], kind="holdout", metrics={}, **window)])
