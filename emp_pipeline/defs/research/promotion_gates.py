"""Blocking checks on `champion_strategies`: no look-ahead, sizing within the live limits, and the live
path replays the backtest.

Like the performance gates, each check re-reads the registry and judges every active champion, whoever made
it active. A champion that looks ahead (a feature, regime or rule that changes when later bars are removed),
or whose live replay parts from the backtest in its inputs or decisions, is retired with the finding as the
reason, so the live job (which trades the active set) never trades it, and the check fails with severity
ERROR, which stops what is downstream. Differences that are only in execution (a stop the broker did not hold,
an order the risk checks reduced) fail the parity check with severity WARN: reported, not blocking; volumes
rounded to the volume grid are no difference at all (see parity.report for the layers).
"""
# No `from __future__ import annotations` here: Dagster inspects the checks' resource annotations at runtime.

from collections.abc import Sequence
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, ConfigurableResource, MetadataValue, asset_check

from emp_pipeline.defs.live.risk_limits import RiskLimitsResource
from emp_pipeline.defs.perception.resources import RegimeClassifierResource
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.costs import DEFAULT_CAPITAL
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.lookahead import FeatureFunction
from emp_pipeline.domain.risk import sizing_violation
from emp_pipeline.parity.gates import (
    GateData,
    GateSettings,
    load_gate_data,
    lookahead_gate,
    parity_gate,
    sensory_features,
    stored_strategy,
)
from emp_pipeline.registry.research import active_strategies, set_strategy_status

CHAMPIONS = "champion_strategies"
RETIRED = "retired"


class PromotionGatesResource(ConfigurableResource):
    """How the look-ahead and parity gates run: the window (newest bars), cut and audit points, and the
    capital of the replay (EMP_CAPITAL); each strategy is replayed with the costs it was measured with, read
    from the registry with it. `features` is the computation under test: the sensory cortex as the
    perception assets run it (a test subclasses the resource to put another one under the gates)."""

    window_bars: int | None = None  # None: a year of bars of the timeframe (parity.gates GateSettings.window)
    history_bars: int = 300
    lookahead_cuts: int = 8
    parity_audits: int = 8
    seed: int = 0
    capital: float = DEFAULT_CAPITAL

    def gate_settings(self, regimes: RegimeClassifierResource) -> GateSettings:
        return GateSettings(
            window_bars=self.window_bars,
            history_bars=self.history_bars,
            lookahead_cuts=self.lookahead_cuts,
            parity_audits=self.parity_audits,
            seed=self.seed,
            regime_kind=regimes.kind,
            periods_per_year=regimes.periods_per_year,
            capital=self.capital,
        )

    def features(self, instruments: Sequence[InstrumentMeta]) -> FeatureFunction:
        return sensory_features(instruments)


def _champions(database: DatabaseResource) -> list[str]:
    with database.session() as session:
        return [record.id for record in active_strategies(session)]


def _retire(database: DatabaseResource, strategy_id: str, reason: str) -> None:
    with database.session() as session:
        set_strategy_status(session, strategy_id, RETIRED, reason[:1000])


def _gate_run(
    database: DatabaseResource,
    lake: DataLakeResource,
    gates: PromotionGatesResource,
    regimes: RegimeClassifierResource,
) -> tuple[list[str], GateData, GateSettings] | AssetCheckResult:
    """The active champions and the gate inputs, or the passing result when no champion is active."""
    champions = _champions(database)
    if not champions:
        return AssetCheckResult(passed=True, description="no active champion", metadata={"champions": 0})
    settings = gates.gate_settings(regimes)
    return champions, load_gate_data(lake.base_dir, database.engine(), settings), settings


@asset_check(
    asset=CHAMPIONS,
    blocking=True,
    description="every active champion's features, regimes, rule leaves and signals are identical on the "
    "full bars and on bars cut at random points (no look-ahead); a champion that fails is retired",
)
def champions_free_of_lookahead(
    database: DatabaseResource,
    lake: DataLakeResource,
    promotion_gates: PromotionGatesResource,
    regime_classifier: RegimeClassifierResource,
) -> AssetCheckResult:
    run = _gate_run(database, lake, promotion_gates, regime_classifier)
    if isinstance(run, AssetCheckResult):
        return run
    champions, data, settings = run
    findings: dict[str, Any] = {}
    for strategy_id in champions:
        genome = stored_strategy(database.engine(), strategy_id).genome
        report = lookahead_gate(genome, data, settings, promotion_gates.features)
        if not report.passed:
            findings[strategy_id] = [finding.describe() for finding in report.findings]
            _retire(database, strategy_id, f"look-ahead gate: {report.findings[0].describe()}")
    return AssetCheckResult(
        passed=not findings,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(findings)} of {len(champions)} champions look ahead and were retired"
            if findings
            else f"{len(champions)} champions: nothing changed when later bars were removed"
        ),
        metadata={
            "champions": len(champions),
            "looking_ahead": len(findings),
            "culprits": MetadataValue.json(findings),
            "window": f"{data.start.date()} .. {data.end.date()}",
        },
    )


@asset_check(
    asset=CHAMPIONS,
    blocking=True,
    description="every active champion replayed through the live path bar by bar matches the backtest "
    "kernel: ERROR (and retired) on look-ahead or a decision divergence, WARN on execution-only differences",
)
def champions_live_parity(
    database: DatabaseResource,
    lake: DataLakeResource,
    promotion_gates: PromotionGatesResource,
    regime_classifier: RegimeClassifierResource,
    risk_limits: RiskLimitsResource,
) -> AssetCheckResult:
    run = _gate_run(database, lake, promotion_gates, regime_classifier)
    if isinstance(run, AssetCheckResult):
        return run
    champions, data, settings = run
    limits = risk_limits.ceilings()
    blocking: dict[str, list[str]] = {}
    execution_only: dict[str, list[str]] = {}
    seconds = 0.0
    for strategy_id in champions:
        strategy = stored_strategy(database.engine(), strategy_id)
        report = parity_gate(strategy, data, settings, limits, promotion_gates.features)
        seconds += report.elapsed_s
        lines = [divergence.describe() for divergence in report.divergences] + list(report.notes)
        if not report.decision_passed:
            blocking[strategy_id] = lines
            first = report.first("inputs") or report.first("decision")
            _retire(database, strategy_id, f"parity gate: {first.describe() if first else lines[0]}")
        elif not report.passed:
            execution_only[strategy_id] = lines
    return AssetCheckResult(
        passed=not blocking and not execution_only,
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        description=(
            f"{len(champions)} champions replayed: {len(blocking)} diverge in inputs or decisions (retired), "
            f"{len(execution_only)} only in execution"
        ),
        metadata={
            "champions": len(champions),
            "blocking_divergences": MetadataValue.json(blocking),
            "execution_divergences": MetadataValue.json(execution_only),
            "replay_seconds": round(seconds, 2),
            "window": f"{data.start.date()} .. {data.end.date()}",
        },
    )


@asset_check(
    asset=CHAMPIONS,
    blocking=True,
    description="every active champion sizes its entries within the live risk limits in force "
    "(EMP_MAX_POSITION_FRACTION, EMP_MAX_GROSS_EXPOSURE), so what was measured is what trades; a champion "
    "whose orders the live check would refuse is retired with the reason",
)
def champions_trade_within_limits(
    database: DatabaseResource, risk_limits: RiskLimitsResource
) -> AssetCheckResult:
    champions = _champions(database)
    limits = risk_limits.ceilings()
    refused: dict[str, str] = {}
    for strategy_id in champions:
        genome = stored_strategy(database.engine(), strategy_id).genome
        reason = sizing_violation(genome.risk.position_fraction, limits)
        if reason is not None:
            refused[strategy_id] = reason
            _retire(database, strategy_id, f"cannot trade within the live risk limits: {reason}")
    return AssetCheckResult(
        passed=not refused,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(refused)} of {len(champions)} champions size beyond the live limits and were retired"
            if refused
            else f"{len(champions)} champions size within the live limits"
        ),
        metadata={
            "champions": len(champions),
            "beyond_limits": len(refused),
            "reasons": MetadataValue.json(refused),
            "max_position_fraction": limits.max_position_fraction,
            "max_gross_exposure": limits.max_gross_exposure,
        },
    )


promotion_gate_checks = [champions_free_of_lookahead, champions_trade_within_limits, champions_live_parity]
