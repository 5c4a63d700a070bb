"""The costs a strategy was measured with travel with it: recorded with its run, read back with the strategy,
filled in by migration 0007 for runs recorded before, and used by the parity gate's replay."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import Engine, insert, select

from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import genome_to_dict
from emp_pipeline.domain.sleeve import fee_cost
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.parity.gates import GateData, GateSettings, parity_gate, stored_strategy
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import InvalidRegistryInputError, UnknownEvolutionRunError
from emp_pipeline.registry.migrate import downgrade_database, schema_differences, upgrade_database
from emp_pipeline.registry.models import EvolutionRun, RunStatus, Strategy, StrategyStatus
from emp_pipeline.registry.records import NewStrategy
from emp_pipeline.registry.research import (
    active_strategies,
    evolution_run_costs,
    evolution_run_id,
    get_strategy,
    list_strategies,
    record_evolution_run,
    record_strategies,
    set_strategy_status,
)
from emp_pipeline_tests.integration.test_parity import OPEN_LIMITS, wide_stops

TRAIN = {"train_start": dt.date(2010, 1, 1), "train_end": dt.date(2011, 12, 31), "embargo_days": 5}
GENOME = {"version": 1, "direction": "long", "long_entry": {"feature": "what_ret_5", "threshold": 0.1}}
MEASURED = Costs(fee_bps=2.0, slippage_bps=0.5)


def _record(engine: Engine, costs: Costs, config: dict | None = None) -> tuple[str, str]:
    with session_scope(engine) as session:
        run_id = record_evolution_run(
            session, period="2012-01", seed=7, config=config or {"population": 4}, costs=costs, **TRAIN
        )
        (strategy_id,) = record_strategies(session, run_id, [NewStrategy(GENOME, 1, 0, "seed", 1.0)])
    return run_id, strategy_id


def test_a_strategy_is_read_back_with_the_costs_of_its_run(registry_engine: Engine) -> None:
    run_id, strategy_id = _record(registry_engine, MEASURED)
    with session_scope(registry_engine) as session:
        set_strategy_status(session, strategy_id, StrategyStatus.ACTIVE, "test")
        assert get_strategy(session, strategy_id).costs == MEASURED
        assert [record.costs for record in active_strategies(session)] == [MEASURED]
        assert [record.costs for record in list_strategies(session, period="2012-01")] == [MEASURED]
        assert evolution_run_costs(session, run_id) == MEASURED
        stored = session.get(EvolutionRun, run_id)
        assert stored is not None
        assert (stored.costs, stored.config) == (MEASURED.to_dict(), {"population": 4})


def test_costs_are_part_of_the_run_identity_as_before_they_had_a_column(registry_engine: Engine) -> None:
    """Same id as when the terms were keys of the config (ids of earlier runs stay valid); other costs make
    another run, so a strategy is never silently re-labelled with costs it was not measured with."""
    run_id, _ = _record(registry_engine, MEASURED)
    legacy_identity = {"population": 4, "fee_bps": 2.0, "slippage_bps": 0.5}
    assert run_id == evolution_run_id("2012-01", seed=7, config=legacy_identity, **TRAIN)
    other_run, _ = _record(registry_engine, Costs(fee_bps=1.0, slippage_bps=0.5))
    assert other_run != run_id
    with session_scope(registry_engine) as session:
        assert evolution_run_costs(session, run_id) == MEASURED


def test_cost_terms_inside_the_config_are_refused(registry_engine: Engine) -> None:
    with pytest.raises(InvalidRegistryInputError, match="config names the cost terms fee_bps: pass them"):
        _record(registry_engine, MEASURED, config={"population": 4, "fee_bps": 3.0})
    with session_scope(registry_engine) as session:
        assert session.scalars(select(EvolutionRun)).all() == []
        with pytest.raises(UnknownEvolutionRunError, match="materialize evolved_strategies"):
            evolution_run_costs(session, "no-such-run")


def _legacy_run(engine: Engine, run_id: str, config: dict) -> None:
    """A run and its strategy as revision 0006 stored them: the costs, if any, inside the config."""
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    with session_scope(engine) as session:
        session.execute(
            insert(EvolutionRun.__table__).values(
                id=run_id,
                period="2012-01",
                train_start=TRAIN["train_start"],
                train_end=TRAIN["train_end"],
                embargo_days=5,
                seed=7,
                config=config,
                started_at=now,
                status=RunStatus.SUCCEEDED.value,
            )
        )
        session.execute(
            insert(Strategy.__table__).values(
                id=f"strategy-of-{run_id}",
                genome=GENOME,
                genome_version=1,
                evolution_run_id=run_id,
                period="2012-01",
                generation=0,
                operator="seed",
                fitness=1.0,
                status=StrategyStatus.ACTIVE.value,
                created_at=now,
            )
        )


def test_migration_0007_gives_runs_recorded_before_it_their_costs(registry_url: str) -> None:
    """The pipeline always wrote fee_bps and slippage_bps into the config: they move to the costs column. A
    run without them (recorded by hand) gets 1.0 bps, the only costs research measured with before 0007."""
    upgrade_database(registry_url, "0006")
    engine = make_engine(registry_url)
    try:
        _legacy_run(engine, "pipeline-run", {"population_size": 40, "fee_bps": 2.0, "slippage_bps": 0.5})
        _legacy_run(engine, "hand-made-run", {"population": 4})

        upgrade_database(registry_url)
        assert schema_differences(registry_url) == []
        with session_scope(engine) as session:
            assert get_strategy(session, "strategy-of-pipeline-run").costs == MEASURED
            assert get_strategy(session, "strategy-of-hand-made-run").costs == Costs(
                fee_bps=1.0, slippage_bps=1.0
            )
            configs = dict(session.execute(select(EvolutionRun.id, EvolutionRun.config)).all())
        assert configs == {"pipeline-run": {"population_size": 40}, "hand-made-run": {"population": 4}}

        downgrade_database(registry_url, "0006")
        with session_scope(engine) as session:
            table = EvolutionRun.__table__
            restored = dict(session.execute(select(table.c.id, table.c.config)).all())
        assert restored["pipeline-run"] == {"population_size": 40, "fee_bps": 2.0, "slippage_bps": 0.5}
    finally:
        engine.dispose()


def test_the_parity_gate_replays_a_strategy_with_its_measured_costs(registry_engine: Engine) -> None:
    """Measured with 5 bps fees: the gate's backtest and live replay both pay 5 bps, not the 1 bps default."""
    measured = Costs(fee_bps=5.0, slippage_bps=0.0)
    with session_scope(registry_engine) as session:
        run_id = record_evolution_run(
            session, period="2012-01", seed=7, config={"population": 4}, costs=measured, **TRAIN
        )
        (strategy_id,) = record_strategies(
            session, run_id, [NewStrategy(genome_to_dict(wide_stops()), 1, 0, "seed", 1.0)]
        )
    strategy = stored_strategy(registry_engine, strategy_id)
    assert strategy.costs == measured and strategy.genome == wide_stops()

    market = generate_market(n_instruments=2, n_bars=380, seed=3)
    dates = pd.DatetimeIndex(sorted(market.bars["date"].unique()))
    fine = tuple(dataclasses.replace(m, step_volume=1e-10, min_volume=1e-10) for m in market.instruments)
    data = GateData(market.bars, fine, dates[260], dates[-1] + pd.Timedelta(days=1))
    report = parity_gate(strategy, data, GateSettings(parity_audits=0), OPEN_LIMITS)

    trades = report.backtest_trades
    assert len(trades) >= 3
    notional = trades["units"] * trades["entry_price"]
    assert trades["entry_fee"].tolist() == pytest.approx([fee_cost(n, 5.0) for n in notional], rel=1e-12)
    assert report.decision_passed, report.describe()
