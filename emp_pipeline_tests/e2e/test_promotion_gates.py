"""In a real Dagster run, a champion whose rule reads the next bar's return is stopped by the blocking gates.

The registry holds two candidates of the study's newest period with out-of-sample records that pass every
performance gate: a correct genome and one whose entry rule reads `what_future_return`. Materialising
`champion_strategies` runs the look-ahead analysis first and rejects the biased one before promotion; a
biased strategy that is already active is caught by the blocking checks, which fail the run and retire it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.perception.resources import RegimeClassifierResource
from emp_pipeline.defs.research.champions import champion_strategies
from emp_pipeline.defs.research.promotion_gates import (
    PromotionGatesResource,
    champions_free_of_lookahead,
    champions_live_parity,
    champions_trade_within_limits,
)
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Genome, genome_to_dict
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.parity.commands import add_parity_commands
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.instruments import store_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.records import NewStrategy, PerformanceEntry
from emp_pipeline.registry.research import (
    get_strategy,
    record_evolution_run,
    record_performance,
    record_strategies,
    set_strategy_status,
    status_history,
)
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore
from emp_pipeline_tests.unit.test_lookahead import biased_rule_genome, correct_genome

PERIOD = "2001-06"
PASSING_METRICS = {
    "sharpe": 2.0,
    "deflated_sharpe": 0.9,
    "max_drawdown": -0.05,
    "trade_count": 12,
    "null_p_value": 0.01,
}


def biased_features(instruments: Sequence[InstrumentMeta]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The gates' feature factory in this test: the cortex plus a column holding the next bar's return."""
    cortex = SensoryCortex(instruments)

    def compute(bars: pd.DataFrame) -> pd.DataFrame:
        features = cortex.compute(bars)
        log_close = np.log(bars["adj_close"])
        features["what_future_return"] = log_close.groupby(bars["symbol"]).shift(-1) - log_close
        return features

    return compute


class BiasedFeatureGates(PromotionGatesResource):
    """The gates with the look-ahead feature computation under test (the Python API for injecting one)."""

    def features(self, instruments: Sequence[InstrumentMeta]) -> Callable[[pd.DataFrame], pd.DataFrame]:
        return biased_features(instruments)


def _seed_registry(url: str, instruments: Sequence[InstrumentMeta], genomes: Sequence[Genome]) -> list[str]:
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            store_instruments(session, instruments, origin="test universe")
            run_id = record_evolution_run(
                session,
                period=PERIOD,
                train_start=dt.date(2000, 1, 3),
                train_end=dt.date(2001, 5, 31),
                embargo_days=0,
                seed=1,
                config={"test": "promotion gates"},
                costs=Costs(),
            )
            ids = record_strategies(
                session,
                run_id,
                [NewStrategy(genome_to_dict(g), 1, 0, "seed", 1.0 - k / 10) for k, g in enumerate(genomes)],
            )
            record_performance(
                session,
                [
                    PerformanceEntry(
                        i, PERIOD, "out_of_sample", dt.date(2001, 6, 1), dt.date(2001, 6, 30), PASSING_METRICS
                    )
                    for i in ids
                ],
            )
    finally:
        engine.dispose()
    return ids


def _seed_lake(root: Path, bars: pd.DataFrame, strategy_ids: Sequence[str]) -> None:
    DatedFrameStore(root, "market_bars").write_window(
        bars, bars["date"].min(), bars["date"].max() + pd.Timedelta(days=1)
    )
    DatedFrameStore(root, "walk_forward_report").write_all(
        pd.DataFrame({"date": [pd.Timestamp("2001-06-29", tz="UTC")], "period": [PERIOD], "equity": [1.0]})
    )
    evolved = pd.DataFrame(
        {
            "date": pd.Timestamp("2001-06-01", tz="UTC"),
            "strategy_id": list(strategy_ids),
            "rank": range(len(strategy_ids)),
        }
    )
    DatedFrameStore(root, "evolved_strategies").write_window(
        evolved, pd.Timestamp("2001-06-01", tz="UTC"), pd.Timestamp("2001-07-01", tz="UTC")
    )


# The seeded genomes size 0.5 of a sleeve: limits that let them trade, except where a test sets the cap.
TRADABLE_LIMITS = RiskLimitsResource(max_position_fraction=0.5)


def _materialize_champions(
    url: str,
    lake: Path,
    checks: Sequence = (champions_free_of_lookahead, champions_live_parity),
    limits: RiskLimitsResource = TRADABLE_LIMITS,
):
    return materialize(
        [champion_strategies, *checks],
        resources={
            "database": DatabaseResource(url=url),
            "lake": DataLakeResource(base_dir=str(lake)),
            "walk_forward": WalkForwardResource(),
            "regime_classifier": RegimeClassifierResource(),
            "risk_limits": limits,
            "promotion_gates": BiasedFeatureGates(
                window_bars=100,
                history_bars=260,
                lookahead_cuts=4,
                parity_audits=3,
            ),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _statuses(url: str, *strategy_ids: str) -> tuple[list[str], list]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            statuses = [get_strategy(session, i).status for i in strategy_ids]
            history = status_history(session, strategy_ids[-1])
    finally:
        engine.dispose()
    return statuses, history


def test_a_candidate_that_looks_ahead_is_rejected_before_promotion(tmp_path: Path) -> None:
    market = generate_market(n_instruments=2, n_bars=380, seed=5)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    correct_id, biased_id = _seed_registry(url, market.instruments, [correct_genome(), biased_rule_genome()])
    lake = tmp_path / "lake"
    _seed_lake(lake, market.bars, [correct_id, biased_id])

    result = _materialize_champions(url, lake)

    assert result.success
    (materialization,) = [
        e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
    ]
    screened = materialization.metadata["rejected_for_lookahead"].value
    assert list(screened) == [biased_id] and "what_future_return" in screened[biased_id]
    (correct, biased), history = _statuses(url, correct_id, biased_id)
    assert biased == "rejected" and correct == "active"
    assert [entry.to_status for entry in history][-1] == "rejected"
    assert "active" not in [entry.to_status for entry in history]
    assert "look-ahead gate before promotion" in history[-1].reason
    # With only honest champions active, nothing blocks (parity may warn on execution-only differences).
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["champions_free_of_lookahead"].passed
    assert evaluations["champions_live_parity"].metadata["blocking_divergences"].value == {}


def test_blocking_gates_retire_a_champion_that_looks_ahead(tmp_path: Path) -> None:
    """A biased strategy made active by other means (by hand, an older release) is caught by the checks."""
    market = generate_market(n_instruments=2, n_bars=380, seed=5)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    correct_id, biased_id = _seed_registry(url, market.instruments, [correct_genome(), biased_rule_genome()])
    lake = tmp_path / "lake"
    _seed_lake(lake, market.bars, [correct_id, biased_id])
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            set_strategy_status(session, biased_id, "active", "activated by hand")
    finally:
        engine.dispose()

    result = _materialize_champions(url, lake)

    # A blocking check failing with ERROR fails its step, and with it the run.
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    lookahead = evaluations["champions_free_of_lookahead"]
    assert not lookahead.passed and lookahead.severity is AssetCheckSeverity.ERROR
    culprits = lookahead.metadata["culprits"].value
    assert list(culprits) == [biased_id]
    assert any("what_future_return" in line for line in culprits[biased_id])
    assert any("long_entry.all[1]" in line for line in culprits[biased_id])
    (correct, biased), history = _statuses(url, correct_id, biased_id)
    assert biased == "retired"
    assert "look-ahead" in history[-1].reason or "parity" in history[-1].reason
    assert correct == "active"
    # Whichever gate ran first retired it; the parity check, if it saw it, failed blocking on its inputs.
    parity = evaluations["champions_live_parity"]
    blocking = parity.metadata["blocking_divergences"].value
    assert correct_id not in blocking
    if biased_id in blocking:
        assert parity.severity is AssetCheckSeverity.ERROR
        assert any("what_future_return" in line for line in blocking[biased_id])


def test_a_strategy_sizing_beyond_the_live_cap_is_not_promoted_and_is_retired_if_active(
    tmp_path: Path,
) -> None:
    """Issue 13 point 5: under a 25 % cap a strategy sizing 50 % of its sleeve would have its entries
    refused live, so it is left out of promotion (the reason in the metadata) and, made active by hand,
    retired by the blocking check `champions_trade_within_limits`, which says why."""
    market = generate_market(n_instruments=2, n_bars=380, seed=5)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    within = dataclasses.replace(
        correct_genome(), risk=dataclasses.replace(correct_genome().risk, position_fraction=0.25)
    )
    within_id, beyond_id = _seed_registry(url, market.instruments, [within, correct_genome()])
    lake = tmp_path / "lake"
    _seed_lake(lake, market.bars, [within_id, beyond_id])
    capped = RiskLimitsResource(max_position_fraction=0.25)

    result = _materialize_champions(url, lake, (champions_trade_within_limits,), capped)

    assert result.success
    (materialization,) = [
        e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
    ]
    refused = materialization.metadata["refused_beyond_risk_limits"].value
    assert list(refused) == [beyond_id] and "50.00%" in refused[beyond_id]
    (within_status, beyond_status), _ = _statuses(url, within_id, beyond_id)
    assert (within_status, beyond_status) == ("active", "candidate")

    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            set_strategy_status(session, beyond_id, "active", "activated by hand")
    finally:
        engine.dispose()
    result = _materialize_champions(url, lake, (champions_trade_within_limits,), capped)

    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity is AssetCheckSeverity.ERROR
    assert list(check.metadata["reasons"].value) == [beyond_id]
    (within_status, beyond_status), history = _statuses(url, within_id, beyond_id)
    assert (within_status, beyond_status) == ("active", "retired")
    assert "cannot trade within the live risk limits" in history[-1].reason
    assert "25.00%" in history[-1].reason


def test_emp_lookahead_and_parity_commands(tmp_path: Path) -> None:
    """The commands read the same lake and registry; exit 1 names the culprit, exit 0 for a correct genome."""
    market = generate_market(n_instruments=2, n_bars=380, seed=5)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    correct_id, biased_id = _seed_registry(url, market.instruments, [correct_genome(), biased_rule_genome()])
    _seed_lake(tmp_path / "lake", market.bars, [correct_id, biased_id])
    settings = Settings.from_env(
        {"EMP_HOME": str(tmp_path), "EMP_DATA_DIR": str(tmp_path / "lake"), "EMP_DATABASE_URL": url}
    )
    parser = argparse.ArgumentParser(prog="emp")
    add_parity_commands(parser.add_subparsers(dest="command", required=True), features=biased_features)

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = parser.parse_args(list(argv))
        return args.handler(args, settings, out), out.getvalue()

    status, text = run("lookahead", biased_id, "--bars=100", "--history=260", "--cuts=4")
    assert status == 1 and "what_future_return" in text and "long_entry.all[1]" in text
    status, text = run("lookahead", correct_id, "--bars=100", "--history=260", "--cuts=4")
    assert status == 0 and "no value changed" in text
    status, text = run("lookahead", "no-such-strategy", "--bars=100")
    assert status == 2 and "no-such-strategy" in text

    status, text = run("parity", f"--strategy={biased_id}", "--bars=60", "--history=260", "--audit=3")
    assert status == 1 and "[inputs]" in text and "what_future_return" in text

    # Issue 14 point 6: the correct genome's quantities are rounded onto the one-unit volume grid: not a
    # failure. A live path the risk limits hold below the kernel's size is a real divergence: exit 1.
    status, text = run("parity", f"--strategy={correct_id}", "--bars=60", "--history=260", "--audit=0")
    assert status == 0 and "identical after rounding volumes" in text, text
    assert "Failed" not in text and "diverges" not in text
    tight = Settings.from_env(
        {
            "EMP_HOME": str(tmp_path),
            "EMP_DATA_DIR": str(tmp_path / "lake"),
            "EMP_DATABASE_URL": url,
            "EMP_MAX_POSITION_FRACTION": "0.01",
        }
    )
    args = parser.parse_args(
        ["parity", f"--strategy={correct_id}", "--bars=60", "--history=260", "--audit=0"]
    )
    out = io.StringIO()
    assert args.handler(args, tight, out) == 1, out.getvalue()
    assert "[execution]" in out.getvalue()
