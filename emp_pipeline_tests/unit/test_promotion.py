"""Promotion gates: out-of-sample metrics against thresholds, and the status plan that follows."""

import math

import pytest

from emp_pipeline.domain.promotion import (
    GATE_NAMES,
    Contender,
    PromotionConfigError,
    PromotionGates,
    evaluate_gates,
    gate_violations,
    plan_promotions,
)

GATES = PromotionGates(
    min_sharpe=0.5, min_deflated_sharpe=0.6, max_drawdown=0.10, min_trades=3, max_null_p_value=0.05
)
GOOD = {"sharpe": 1.2, "deflated_sharpe": 0.8, "max_drawdown": -0.04, "trade_count": 5, "null_p_value": 0.01}


def _contender(
    strategy_id: str, status: str, period: str, fitness: float, **metrics: float | None
) -> Contender:
    evaluation = evaluate_gates(strategy_id, period, {**GOOD, **metrics}, GATES)
    return Contender(strategy_id, status, period, fitness, evaluation)


def test_a_record_meeting_every_threshold_passes_and_says_so_with_figures():
    evaluation = evaluate_gates("s1", "2010-01", GOOD, GATES)
    assert evaluation.passed
    assert [result.gate for result in evaluation.results] == list(GATE_NAMES)
    summary = evaluation.summary()
    assert summary.startswith("passed gates on 2010-01 out of sample: ")
    assert "Sharpe 1.20 >= 0.50" in summary and "max drawdown 4.0% <= 10.0%" in summary
    assert "trades 5 >= 3" in summary
    assert "beats the null model: p = 0.010 <= 0.05" in summary


@pytest.mark.parametrize(
    ("metric", "value", "gate"),
    [
        ("sharpe", 0.49, "sharpe"),
        ("deflated_sharpe", 0.59, "deflated_sharpe"),
        ("max_drawdown", -0.1001, "max_drawdown"),
        ("trade_count", 2, "trade_count"),
        ("null_p_value", 0.0501, "beats_null"),
    ],
)
def test_each_gate_fails_just_past_its_threshold_and_only_that_gate(metric, value, gate):
    evaluation = evaluate_gates("s1", "2010-01", {**GOOD, metric: value}, GATES)
    assert not evaluation.passed
    assert [result.gate for result in evaluation.failures()] == [gate]
    assert evaluation.summary().startswith("failed gates on 2010-01 out of sample: ")


def test_thresholds_are_inclusive():
    edge = {
        "sharpe": 0.5,
        "deflated_sharpe": 0.6,
        "max_drawdown": -0.10,
        "trade_count": 3,
        "null_p_value": 0.05,
    }
    assert evaluate_gates("s1", "2010-01", edge, GATES).passed


@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_an_unmeasured_metric_fails_its_gate(missing):
    evaluation = evaluate_gates("s1", "2010-01", {**GOOD, "deflated_sharpe": missing}, GATES)
    assert [result.gate for result in evaluation.failures()] == ["deflated_sharpe"]
    assert "deflated_sharpe not measured" in evaluation.summary()
    assert not evaluate_gates("s1", "2010-01", {}, GATES).passed


@pytest.mark.parametrize(
    "gates",
    [
        PromotionGates(min_deflated_sharpe=1.5),
        PromotionGates(max_drawdown=15.0),
        PromotionGates(min_trades=-1),
        PromotionGates(min_sharpe=math.nan),
        PromotionGates(max_null_p_value=0.0),
    ],
)
def test_out_of_range_thresholds_are_refused_with_the_setting_to_change(gates):
    with pytest.raises(PromotionConfigError, match="EMP_GATE_"):
        gates.validate()


def test_passing_pool_members_are_promoted_failing_ones_stay_candidates():
    pool = [
        _contender("good", "candidate", "2010-02", 2.0),
        _contender("weak", "candidate", "2010-02", 3.0, sharpe=0.1),
        _contender("back", "retired", "2010-02", 1.0),
    ]
    plan = plan_promotions(pool, [], max_champions=3)
    assert [(t.strategy_id, t.from_status, t.to_status) for t in plan] == [
        ("good", "candidate", "active"),
        ("back", "retired", "active"),
    ]
    assert plan[0].reason.startswith("passed gates on 2010-02")


def test_actives_that_no_longer_pass_are_retired_with_the_failing_gate():
    actives = [_contender("old", "active", "2010-01", 1.0, max_drawdown=-0.3)]
    (transition,) = plan_promotions([], actives, max_champions=3)
    assert (transition.strategy_id, transition.from_status, transition.to_status) == (
        "old",
        "active",
        "retired",
    )
    assert transition.reason.startswith("no longer passes: failed gates on 2010-01")
    assert "max drawdown 30.0% > 10.0%" in transition.reason


def test_the_champion_count_keeps_the_newest_periods_then_the_best_training_fitness():
    actives = [
        _contender("jan_a", "active", "2010-01", 5.0),
        _contender("jan_b", "active", "2010-01", 1.0),
    ]
    pool = [
        _contender("feb_a", "candidate", "2010-02", 0.5),
        _contender("feb_b", "candidate", "2010-02", 0.4),
    ]
    plan = plan_promotions(pool, actives, max_champions=3)
    moves = {t.strategy_id: t.to_status for t in plan}
    assert moves == {"jan_b": "retired", "feb_a": "active", "feb_b": "active"}
    superseded = next(t for t in plan if t.strategy_id == "jan_b")
    assert superseded.reason.startswith("superseded: more than 3 champions")


def test_nothing_changes_when_the_champions_still_pass_and_the_pool_is_empty():
    actives = [_contender("a", "active", "2010-01", 1.0)]
    assert plan_promotions([], actives, max_champions=1) == []


def test_a_strategy_both_active_and_in_the_pool_is_refused():
    same = _contender("a", "active", "2010-01", 1.0)
    with pytest.raises(PromotionConfigError, match="both active and in the promotion pool"):
        plan_promotions([same], [same], max_champions=1)


def test_gate_violations_name_the_strategies_that_break_one_gate():
    evaluations = [
        evaluate_gates("fine", "2010-01", GOOD, GATES),
        evaluate_gates("thin", "2010-01", {**GOOD, "trade_count": 0}, GATES),
        evaluate_gates("deep", "2010-01", {**GOOD, "max_drawdown": -0.5, "trade_count": 1}, GATES),
    ]
    assert [sid for sid, _ in gate_violations(evaluations, "trade_count")] == ["thin", "deep"]
    assert [sid for sid, _ in gate_violations(evaluations, "max_drawdown")] == ["deep"]
    assert gate_violations(evaluations, "sharpe") == []
    with pytest.raises(KeyError, match="no gate named"):
        gate_violations(evaluations, "sortino")
