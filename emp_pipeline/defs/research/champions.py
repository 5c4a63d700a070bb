"""`champion_strategies`: gated promotion of the study's newest strategies, and the checks that hold it.

The pool is the top PROMOTION_POOL_SIZE strategies *by training fitness* of the newest period in the
walk-forward report (the selection is made before their out-of-sample record is looked at); the gates
(EMP_GATE_*) then judge that record. Passing candidates become active, active ones that no longer pass or
exceed EMP_MAX_CHAMPIONS are retired; every change is written to the registry with when and why. One
blocking check per gate re-reads the registry and fails if any active champion violates it, whoever made
it active: the live job must not trade a champion set that breaks a gate.
"""
# No `from __future__ import annotations` here: Dagster inspects the assets' context annotations at runtime.

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from sqlalchemy.orm import Session

from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.perception.resources import RegimeClassifierResource
from emp_pipeline.defs.research.performance import MissingEvaluationDataError
from emp_pipeline.defs.research.promotion_gates import PromotionGatesResource
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.research.strategies import (
    FREQUENCY,
    GROUP,
    OWNERS,
    stored_instruments,
    walk_forward_grid,
)
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.backtest import simulate_strategy
from emp_pipeline.domain.genome import genome_conditions, genome_from_dict, panel_signals
from emp_pipeline.domain.order_streams import Merge, identical_order_merges
from emp_pipeline.domain.promotion import (
    ACTIVE,
    GATE_NAMES,
    Contender,
    GateEvaluation,
    PromotionGates,
    evaluate_gates,
    gate_violations,
    plan_promotions,
)
from emp_pipeline.domain.risk import RiskLimits, sizing_violation
from emp_pipeline.domain.rule_text import strategy_text
from emp_pipeline.domain.walkforward import period_bounds
from emp_pipeline.parity.gates import load_gate_data, lookahead_gate
from emp_pipeline.registry.records import PerformanceRecord, StrategyRecord
from emp_pipeline.registry.research import (
    active_strategies,
    get_strategy,
    performance_records,
    set_strategy_status,
)
from emp_pipeline.reporting.formatting import count_text, markdown_tables, percent_text, ratio_text
from emp_pipeline.storage.datasets import EVOLVED_STRATEGIES, PERCEPTION_INPUTS, WALK_FORWARD_REPORT

PROMOTION_POOL_SIZE = 5
PROMOTABLE_STATUSES = ("candidate", "retired")
# What a strategy merged into a simpler twin becomes: a champion steps down, a candidate is never promoted.
MERGED_STATUS = {"active": "retired", "candidate": "rejected"}
EXAMPLES_SHOWN = 5


def gate_check_name(gate: str) -> str:
    """A gate's blocking check is ``champions_pass_<gate>``; the null model's says what it asks."""
    return "champions_beat_null" if gate == "beats_null" else f"champions_pass_{gate}"


class MissingStudyError(RuntimeError):
    """There is no walk-forward report to promote from; the message says what to run."""


def study_pool(lake: DataLakeResource) -> tuple[str, list[str]]:
    """(newest period of the report, registry ids of its top strategies by training fitness)."""
    report = lake.store(WALK_FORWARD_REPORT).read_all()
    if report.empty or "period" not in report.columns:
        raise MissingStudyError(
            "walk_forward_report holds no curve: materialize research_job after evolution"
        )
    period = str(report["period"].max())
    start, end = period_bounds(period, FREQUENCY)
    evolved = lake.read(EVOLVED_STRATEGIES, start, end)
    top = evolved.loc[evolved["rank"] < PROMOTION_POOL_SIZE].sort_values("rank", kind="mergesort")
    return period, top["strategy_id"].astype(str).tolist()


def latest_out_of_sample(session: Session, strategy_ids: Sequence[str]) -> dict[str, PerformanceRecord]:
    """Each strategy's out-of-sample record of its newest measured period."""
    if not strategy_ids:
        return {}
    latest: dict[str, PerformanceRecord] = {}
    for record in performance_records(session, strategy_ids=list(strategy_ids), kind="out_of_sample"):
        if record.strategy_id not in latest or record.period > latest[record.strategy_id].period:
            latest[record.strategy_id] = record
    return latest


def judge(record: StrategyRecord, performance: PerformanceRecord | None, gates: PromotionGates) -> Contender:
    """A strategy without an out-of-sample record fails every gate (nothing was measured)."""
    metrics = performance.metrics if performance is not None else {}
    period = performance.period if performance is not None else "no period"
    return Contender(
        strategy_id=record.id,
        status=record.status,
        period=period,
        training_fitness=record.fitness,
        evaluation=evaluate_gates(record.id, period, metrics, gates),
    )


def _metric(evaluation: GateEvaluation, gate: str) -> str:
    value = evaluation.result(gate).value
    if value is None:
        return "n/a"
    if gate == "max_drawdown":
        return percent_text(value)
    if gate == "beats_null":
        return f"p={ratio_text(value, 3)}"
    return count_text(value) if gate == "trade_count" else ratio_text(value)


def _rules(records: Sequence[StrategyRecord]) -> dict[str, str]:
    """Strategy id -> its rules in plain notation (the text `emp strategies` prints)."""
    return {record.id: strategy_text(genome_from_dict(record.genome)) for record in records}


def _contender_table(contenders: Sequence[Contender], rules: Mapping[str, str]) -> str:
    if not contenders:
        return "none"
    rows = [
        {
            "strategy_id": contender.strategy_id,
            "rules": rules[contender.strategy_id],
            "period": contender.period,
            "training_fitness": ratio_text(contender.training_fitness),
            **{gate: _metric(contender.evaluation, gate) for gate in GATE_NAMES},
            "passes": contender.evaluation.passed,
        }
        for contender in contenders
    ]
    return markdown_tables(pd.DataFrame(rows), keys=("strategy_id",), id_columns=("strategy_id",))


def reject_lookahead(
    context: AssetExecutionContext,
    lake: DataLakeResource,
    database: DatabaseResource,
    promotion_gates: PromotionGatesResource,
    regime_classifier: RegimeClassifierResource,
    pool_ids: Sequence[str],
) -> dict[str, str]:
    """Run the look-ahead analysis on every promotable pool member before any promotion.

    A candidate whose features, regimes or rules change when later bars are removed is rejected for good
    (with the first finding as the reason); it never becomes active, so the live job never sees it.
    Returns {strategy id: reason} of those screened out.
    """
    with database.session() as session:
        records = [get_strategy(session, strategy_id) for strategy_id in pool_ids]
    promotable = [record for record in records if record.status in PROMOTABLE_STATUSES]
    if not promotable:
        return {}
    settings = promotion_gates.gate_settings(regime_classifier)
    data = load_gate_data(lake.base_dir, database.engine(), settings)
    rejected: dict[str, str] = {}
    for record in promotable:
        report = lookahead_gate(genome_from_dict(record.genome), data, settings, promotion_gates.features)
        if report.passed:
            continue
        reason = f"look-ahead gate before promotion: {report.findings[0].describe()}"[:1000]
        rejected[record.id] = reason
        context.log.warning("%s: %s", record.id, reason)
        if record.status == "candidate":
            with database.session() as session:
                set_strategy_status(session, record.id, "rejected", reason)
    return rejected


def refuse_beyond_limits(
    context: AssetExecutionContext, database: DatabaseResource, limits: RiskLimits, pool_ids: Sequence[str]
) -> dict[str, str]:
    """Pool members whose sizing the live risk checks in force would refuse: {strategy id: reason}.

    They are left out of this promotion (their status is kept: looser limits later may let them trade);
    the GA draws within the limits, so only strategies evolved under other limits can be caught here.
    """
    with database.session() as session:
        records = [get_strategy(session, strategy_id) for strategy_id in pool_ids]
    refused: dict[str, str] = {}
    for record in records:
        reason = sizing_violation(genome_from_dict(record.genome).risk.position_fraction, limits)
        if reason is not None:
            refused[record.id] = f"not promoted, beyond the live risk limits: {reason}"
            context.log.warning("%s: %s", record.id, refused[record.id])
    return refused


def order_stream_merges(
    lake: DataLakeResource,
    database: DatabaseResource,
    walk_forward: WalkForwardResource,
    period: str,
    records: Sequence[StrategyRecord],
    active_ids: set[str],
) -> list[Merge]:
    """Which of ``records`` place the same orders as a simpler one on ``period`` out of sample, each
    backtested alone by the kernel with its own costs (signals start flat on the period's first bar, as
    `strategy_performance` measures). Among equally simple ones an active champion is kept first, then the
    best by training fitness. Raises MissingEvaluationDataError when the period's features are not stored."""
    if len(records) < 2:
        return []
    start, end = period_bounds(period, FREQUENCY)
    windows = walk_forward.windows()
    frames = [
        lake.read(dataset, start - pd.Timedelta(days=windows.training_lookback_days), end)
        for dataset in PERCEPTION_INPUTS
    ]
    if any(frame.empty or "symbol" not in frame.columns for frame in frames):
        raise MissingEvaluationDataError(
            f"bars, features or regimes of {period} are not stored: materialize daily_update_job for it"
        )
    panel, market, fold = walk_forward_grid(*frames, period, windows, stored_instruments(database))
    panel = panel.window(fold.test_start, fold.test_end)
    market = market.window(fold.test_start, fold.test_end)
    genomes = {record.id: genome_from_dict(record.genome) for record in records}
    backtests = {
        record.id: simulate_strategy(
            genomes[record.id], panel_signals(genomes[record.id], panel), market, record.costs
        )
        for record in records
    }
    preference = sorted(
        records,
        key=lambda r: (r.id not in active_ids, -(r.fitness if r.fitness is not None else -np.inf), r.id),
    )
    return identical_order_merges(
        backtests,
        {strategy_id: genome_conditions(genome) for strategy_id, genome in genomes.items()},
        [record.id for record in preference],
    )


def merge_identical_orders(
    context: AssetExecutionContext,
    lake: DataLakeResource,
    database: DatabaseResource,
    walk_forward: WalkForwardResource,
    period: str,
    records: Sequence[StrategyRecord],
    active_ids: set[str],
) -> dict[str, str]:
    """Merge strategies that would place identical orders into the simplest of them: an active one is
    retired, a candidate rejected, each with the merge as its reason; a retired one just stays out of this
    promotion. Returns {strategy id: reason} of those merged."""
    try:
        merges = order_stream_merges(lake, database, walk_forward, period, records, active_ids)
    except MissingEvaluationDataError as error:
        context.log.warning("order streams not compared: %s", error)
        return {}
    status = {record.id: record.status for record in records}
    merged = {merge.strategy_id: merge.reason(period) for merge in merges}
    with database.session() as session:
        for strategy_id, reason in merged.items():
            context.log.info("%s: %s", strategy_id, reason)
            if status[strategy_id] in MERGED_STATUS:
                set_strategy_status(session, strategy_id, MERGED_STATUS[status[strategy_id]], reason)
    return merged


def _track_record_table(performance: dict[str, PerformanceRecord]) -> str:
    """Per champion: its deflated Sharpe with the trials it was deflated by, and how long a track record it
    would need (minimum track record length at 95 %) against the bars it has."""
    if not performance:
        return "none"
    rows = [
        {
            "strategy_id": strategy_id,
            "period": record.period,
            "deflated_sharpe": ratio_text(record.metrics.get("deflated_sharpe")),
            "dsr_trials": count_text(record.metrics.get("dsr_trials")),
            "track_bars": count_text(record.metrics.get("n_bars")),
            "min_track_record_bars": "never"
            if record.metrics.get("min_track_record_bars") is None
            else ratio_text(record.metrics.get("min_track_record_bars"), 0),
        }
        for strategy_id, record in sorted(performance.items())
    ]
    return markdown_tables(pd.DataFrame(rows), keys=("strategy_id",), id_columns=("strategy_id",))


@asset(
    deps=[WALK_FORWARD_REPORT.name],
    group_name=GROUP,
    kinds={"python", "sql"},
    owners=OWNERS,
    description=f"Gated promotion: the top {PROMOTION_POOL_SIZE} strategies by training fitness of the "
    "study's newest period become active if their out-of-sample Sharpe, deflated Sharpe, maximum "
    "drawdown and trade count pass the gates (EMP_GATE_*); actives that no longer pass, or exceed "
    "EMP_MAX_CHAMPIONS, are retired. Every change is recorded in the registry with its reason. A strategy "
    "sizing beyond the live risk limits (EMP_MAX_POSITION_FRACTION) is not promoted: it could not trade as "
    "measured.",
)
def champion_strategies(
    context: AssetExecutionContext,
    lake: DataLakeResource,
    database: DatabaseResource,
    walk_forward: WalkForwardResource,
    promotion_gates: PromotionGatesResource,
    regime_classifier: RegimeClassifierResource,
    risk_limits: RiskLimitsResource,
) -> MaterializeResult:
    gates = walk_forward.gates()
    period, pool_ids = study_pool(lake)
    beyond_limits = refuse_beyond_limits(context, database, risk_limits.ceilings(), pool_ids)
    pool_ids = [strategy_id for strategy_id in pool_ids if strategy_id not in beyond_limits]
    screened_out = reject_lookahead(context, lake, database, promotion_gates, regime_classifier, pool_ids)
    pool_ids = [strategy_id for strategy_id in pool_ids if strategy_id not in screened_out]
    with database.session() as session:
        current = active_strategies(session)
        active_ids = {record.id for record in current}
        pool_records = [get_strategy(session, strategy_id) for strategy_id in pool_ids]
        pool_records = [
            record
            for record in pool_records
            if record.id not in active_ids and record.status in PROMOTABLE_STATUSES
        ]
    merged = merge_identical_orders(
        context, lake, database, walk_forward, period, [*current, *pool_records], active_ids
    )
    with database.session() as session:
        current = active_strategies(session)
        pool_records = [record for record in pool_records if record.id not in merged]
        performance = latest_out_of_sample(session, [r.id for r in (*current, *pool_records)])
        pool = [judge(record, performance.get(record.id), gates) for record in pool_records]
        actives = [judge(record, performance.get(record.id), gates) for record in current]
        transitions = plan_promotions(pool, actives, walk_forward.max_champions)
        for transition in transitions:
            set_strategy_status(session, transition.strategy_id, transition.to_status, transition.reason)
        champions = active_strategies(session)
        champion_performance = latest_out_of_sample(session, [record.id for record in champions])
        final = [judge(record, champion_performance.get(record.id), gates) for record in champions]
    rules = _rules([*pool_records, *current, *champions])

    promoted = [t for t in transitions if t.to_status == ACTIVE]
    retired = [t for t in transitions if t.to_status != ACTIVE]
    for transition in transitions:
        context.log.info("%s: %s -> %s (%s)", *vars(transition).values())
    changes = markdown_tables(
        pd.DataFrame([vars(transition) for transition in transitions]), id_columns=("strategy_id",)
    )
    return MaterializeResult(
        metadata={
            "study_period": period,
            "gates": MetadataValue.json(gates.describe()),
            "pool_size": len(pool),
            "rejected_for_lookahead": MetadataValue.json(screened_out),
            "refused_beyond_risk_limits": MetadataValue.json(beyond_limits),
            "merged_identical_orders": MetadataValue.json(merged),
            "promoted": len(promoted),
            "retired": len(retired),
            "active_champions": len(champions),
            "pool": MetadataValue.md(_contender_table(pool, rules)),
            "status_changes": MetadataValue.md(changes),
            "champions": MetadataValue.md(_contender_table(final, rules)),
            "champion_track_records": MetadataValue.md(_track_record_table(champion_performance)),
        }
    )


def champion_evaluations(database: DatabaseResource, gates: PromotionGates) -> list[GateEvaluation]:
    """Every active champion judged on its newest out-of-sample record, straight from the registry."""
    with database.session() as session:
        champions = active_strategies(session)
        performance = latest_out_of_sample(session, [record.id for record in champions])
    return [judge(record, performance.get(record.id), gates).evaluation for record in champions]


def _gate_check(gate: str) -> AssetChecksDefinition:
    @asset_check(
        asset=champion_strategies,
        name=gate_check_name(gate),
        blocking=True,
        description=f"every active champion passes the {gate} gate on its newest out-of-sample period",
    )
    def champions_pass_gate(
        database: DatabaseResource, walk_forward: WalkForwardResource
    ) -> AssetCheckResult:
        gates = walk_forward.gates()
        evaluations = champion_evaluations(database, gates)
        violations = gate_violations(evaluations, gate)
        return AssetCheckResult(
            passed=not violations,
            severity=AssetCheckSeverity.ERROR,
            description=f"{len(violations)} of {len(evaluations)} champions fail: {gates.describe()[gate]}",
            metadata={
                "champions": len(evaluations),
                "violations": len(violations),
                "examples": MetadataValue.json(
                    [
                        {"strategy_id": strategy_id, "finding": result.describe()}
                        for strategy_id, result in violations[:EXAMPLES_SHOWN]
                    ]
                ),
            },
        )

    return champions_pass_gate


champion_gate_checks = [_gate_check(gate) for gate in GATE_NAMES]
