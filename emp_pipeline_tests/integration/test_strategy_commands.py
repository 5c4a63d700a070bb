"""`emp strategies list/show` against a SQLite registry written here through the registry's own API."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from emp_pipeline.cli import main
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes, RuleGroup, genome_to_dict
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.records import NewStrategy, PerformanceEntry
from emp_pipeline.registry.research import (
    record_evolution_run,
    record_performance,
    record_strategies,
    set_strategy_status,
    strategy_content_id,
)

RISK = RiskGenes(stop_atr=2.0, take_profit_atr=4.5, position_fraction=0.2, max_holding_bars=20)
SEED = Genome("long", Condition("what_rsi_14", "<", 30.5), None, None, ("bull_trend",), RISK)
CHILD = Genome(
    "both",
    RuleGroup("all", (Condition("what_rsi_14", "<", 30.5), Condition("what_ret_5", ">", "what_ret_20"))),
    Condition("what_rsi_14", "crosses_above", 70.0),
    Condition("what_ret_5", ">", 0.02),
    ("bull_trend", "bear_trend", "range", "high_volatility"),
    RISK,
)


@pytest.fixture
def registry(sqlite_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Period 2007-10: a seed and its mutated child (active, measured in and out of sample)."""
    upgrade_database(sqlite_url)
    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    monkeypatch.setenv("EMP_DATABASE_URL", sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as session:
            run = record_evolution_run(
                session,
                period="2007-10",
                train_start=dt.date(2004, 10, 1),
                train_end=dt.date(2007, 9, 21),
                embargo_days=5,
                seed=3,
                config={"population": 2},
                costs=Costs(fee_bps=1.0),
            )
            seed_id = strategy_content_id(genome_to_dict(SEED), run)
            child_id, _ = record_strategies(
                session,
                run,
                [
                    NewStrategy(genome_to_dict(CHILD), 1, 1, "mutation", 1.25, (seed_id,)),
                    NewStrategy(genome_to_dict(SEED), 1, 0, "seed", 0.5),
                ],
            )
            window = {"period": "2007-10", "start": dt.date(2007, 10, 1), "end": dt.date(2007, 10, 31)}
            record_performance(
                session,
                [
                    PerformanceEntry(
                        child_id,
                        kind="in_sample",
                        metrics={
                            "sharpe": 1.5,
                            "trade_count": 40,
                            "deflated_sharpe": 0.61,
                            "dsr_trials": 312,
                        },
                        **{**window, "period": "2007-10", "start": dt.date(2004, 10, 1)},
                    ),
                    PerformanceEntry(
                        child_id,
                        kind="out_of_sample",
                        metrics={
                            "sharpe": 2.14,
                            "trade_count": 1,
                            "total_return": 0.0007,
                            "deflated_sharpe": 0.2,
                            "dsr_trials": 312,
                            "null_percentile": 71.5,
                            "null_p_value": 0.286,
                            "buy_and_hold_sharpe": 0.9,
                            "buy_and_hold_return": 0.012,
                        },
                        **window,
                    ),
                    PerformanceEntry(
                        seed_id,
                        kind="out_of_sample",
                        metrics={"sharpe": 0.8, "trade_count": 9, "deflated_sharpe": 0.1, "dsr_trials": 312},
                        **window,
                    ),
                ],
            )
            set_strategy_status(session, child_id, "active", "passed gates on 2007-10 out of sample")
    finally:
        engine.dispose()
    return {"seed": seed_id, "child": child_id, "run": run}


def _emp(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_list_prints_rules_metrics_and_status_filtered_by_period_and_status(registry):
    code, text = _emp("strategies", "list")
    assert code == 0
    lines = text.splitlines()
    assert registry["child"] in lines[1] and registry["seed"] in lines[2]  # best training fitness first
    assert "long when what_rsi_14 < 30.5 and what_ret_5 > what_ret_20" in lines[1]
    assert "short when what_rsi_14 crosses above 70.0; exit when what_ret_5 > 0.02" in lines[1]
    # One out-of-sample trade is below the default minimum of 5: no Sharpe is printed for it.
    assert "not meaningful: 1 trade < 5" in lines[1] and "2.14" not in lines[1]
    assert "0.80" in lines[2] and "0.10 over 312 trials" in lines[2]
    assert "long when what_rsi_14 < 30.5 and regime in {bull_trend}" in lines[2]

    code, text = _emp("strategies", "list", "--status", "active")
    assert code == 0 and registry["child"] in text and registry["seed"] not in text
    code, text = _emp("strategies", "list", "--min-trades", "1", "--period", "2007-10")
    assert code == 0 and "2.14" in text
    code, text = _emp("strategies", "list", "--period", "2007-11")
    assert (code, text) == (0, "no strategies match (periods in the registry: 2007-10)\n")


def test_show_prints_rules_risk_lineage_metrics_and_history(registry):
    code, text = _emp("strategies", "show", registry["child"])
    assert code == 0, text
    assert text.startswith(f"strategy {registry['child']}: period 2007-10, status active\n")
    assert "    long when what_rsi_14 < 30.5 and what_ret_5 > what_ret_20\n" in text
    assert "    short when what_rsi_14 crosses above 70.0\n    exit when what_ret_5 > 0.02\n" in text
    assert "(4 conditions;" in text
    assert "risk: stop 2 ATR, take profit 4.5 ATR, size 20% of equity, hold <= 20 bars" in text
    assert f"lineage: generation 1, mutation of {registry['seed']}; 1 ancestor back to generation 0" in text
    assert "fee_bps 1.0" in text
    assert "in-sample 2007-10 (2004-10-01 .. 2007-10-31): Sharpe 1.50, trades 40" in text
    assert "out-of-sample 2007-10 (2007-10-01 .. 2007-10-31): Sharpe not meaningful: 1 trade < 5" in text
    assert "deflated Sharpe 0.20 over 312 trials" in text and "deflated Sharpe 0.61 over 312 trials" in text
    assert "null percentile 71.5 (p 0.286), buy-and-hold Sharpe 0.90, return 1.20%" in text
    history = text.split("status history:\n")[1].splitlines()
    assert [line.split(None, 2)[2] for line in history] == [
        f"new -> candidate: created by evolution run {registry['run']}",
        "candidate -> active: passed gates on 2007-10 out of sample",
    ]


def test_show_names_an_unknown_id_and_bad_options_are_refused(registry, capsys):
    assert _emp("strategies", "show", "nope") == (
        2,
        "cannot show nope: strategy 'nope' is not in the registry: check the id (see strategies)\n",
    )
    with pytest.raises(SystemExit):
        _emp("strategies", "list", "--status", "alive")
    with pytest.raises(SystemExit):
        _emp("strategies", "list", "--limit", "0")
    assert "must be >= 1, got 0" in capsys.readouterr().err
