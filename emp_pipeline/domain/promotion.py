"""Promotion gates: which strategies may trade, judged on their out-of-sample record, and why.

A strategy is judged only on metrics measured out of sample (the walk-forward period after its training
window); in-sample fitness decides which strategies are *considered* (the selection is made before the
out-of-sample data is seen), never whether they pass. A metric that was not measured (None) fails its gate:
"unknown" is not "good enough".

The lifecycle the plan follows (the registry enforces the same transitions):
candidate -> active when it passes; active -> retired when it no longer passes or is superseded by newer
champions beyond the configured count; retired -> active when it passes again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GATE_NAMES: tuple[str, ...] = ("sharpe", "deflated_sharpe", "max_drawdown", "trade_count", "beats_null")
ACTIVE = "active"
RETIRED = "retired"
CANDIDATE = "candidate"


class PromotionConfigError(ValueError):
    """A gate threshold is out of range; the message names the setting to change."""


@dataclass(frozen=True)
class PromotionGates:
    """Thresholds on out-of-sample metrics (registry names; Sharpe annualised, drawdown a magnitude)."""

    min_sharpe: float = 0.5
    min_deflated_sharpe: float = 0.5
    max_drawdown: float = 0.15
    min_trades: int = 2
    max_null_p_value: float = 0.05

    def validate(self) -> PromotionGates:
        if not math.isfinite(self.min_sharpe):
            raise PromotionConfigError(
                f"min_sharpe must be finite (EMP_GATE_MIN_SHARPE); got {self.min_sharpe}"
            )
        if not 0.0 <= self.min_deflated_sharpe <= 1.0:
            raise PromotionConfigError(
                "min_deflated_sharpe is a probability in [0, 1] (EMP_GATE_MIN_DEFLATED_SHARPE); "
                f"got {self.min_deflated_sharpe}"
            )
        if not 0.0 <= self.max_drawdown <= 1.0:
            raise PromotionConfigError(
                "max_drawdown is a fraction of equity in [0, 1], e.g. 0.15 for 15 % (EMP_GATE_MAX_DRAWDOWN); "
                f"got {self.max_drawdown}"
            )
        if self.min_trades < 0:
            raise PromotionConfigError(
                f"min_trades must be >= 0 (EMP_GATE_MIN_TRADES); got {self.min_trades}"
            )
        if not 0.0 < self.max_null_p_value <= 1.0:
            raise PromotionConfigError(
                "max_null_p_value is a significance level in (0, 1] (EMP_GATE_MAX_NULL_P_VALUE); "
                f"got {self.max_null_p_value}"
            )
        return self

    def describe(self) -> dict[str, str]:
        """Each gate as the condition it enforces, for metadata and check descriptions."""
        return {
            "sharpe": f"out-of-sample Sharpe >= {self.min_sharpe:g}",
            "deflated_sharpe": f"deflated Sharpe >= {self.min_deflated_sharpe:g}",
            "max_drawdown": f"max drawdown <= {self.max_drawdown:.1%}",
            "trade_count": f"trades >= {self.min_trades}",
            "beats_null": f"Sharpe's p-value against the period's null model <= {self.max_null_p_value:g}",
        }


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float | None
    threshold: float

    def describe(self) -> str:
        if self.value is None:
            return f"{self.gate} not measured"
        if self.gate == "max_drawdown":
            return f"max drawdown {abs(self.value):.1%} {'<=' if self.passed else '>'} {self.threshold:.1%}"
        if self.gate == "trade_count":
            return f"trades {int(self.value)} {'>=' if self.passed else '<'} {int(self.threshold)}"
        if self.gate == "beats_null":
            verdict = "beats" if self.passed else "does not beat"
            relation = "<=" if self.passed else ">"
            return f"{verdict} the null model: p = {self.value:.3f} {relation} {self.threshold:g}"
        label = "deflated Sharpe" if self.gate == "deflated_sharpe" else "Sharpe"
        return f"{label} {self.value:.2f} {'>=' if self.passed else '<'} {self.threshold:.2f}"


@dataclass(frozen=True)
class GateEvaluation:
    """One strategy's out-of-sample record of one period against every gate."""

    strategy_id: str
    period: str
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def result(self, gate: str) -> GateResult:
        for result in self.results:
            if result.gate == gate:
                return result
        raise KeyError(f"no gate named {gate!r}; gates are {list(GATE_NAMES)}")

    def failures(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def summary(self) -> str:
        """ "passed gates: ..." with every figure, or "failed gates: ..." with the failing ones only."""
        if self.passed:
            details = ", ".join(result.describe() for result in self.results)
            return f"passed gates on {self.period} out of sample: {details}"
        details = ", ".join(result.describe() for result in self.failures())
        return f"failed gates on {self.period} out of sample: {details}"


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def evaluate_gates(
    strategy_id: str, period: str, metrics: Mapping[str, float | int | None], gates: PromotionGates
) -> GateEvaluation:
    """Judge registry-named out-of-sample metrics (sharpe, deflated_sharpe, max_drawdown, trade_count)."""
    sharpe = _number(metrics.get("sharpe"))
    deflated = _number(metrics.get("deflated_sharpe"))
    drawdown = _number(metrics.get("max_drawdown"))
    trades = _number(metrics.get("trade_count"))
    null_p_value = _number(metrics.get("null_p_value"))
    results = (
        GateResult("sharpe", sharpe is not None and sharpe >= gates.min_sharpe, sharpe, gates.min_sharpe),
        GateResult(
            "deflated_sharpe",
            deflated is not None and deflated >= gates.min_deflated_sharpe,
            deflated,
            gates.min_deflated_sharpe,
        ),
        # Drawdowns are stored as non-positive fractions; the gate compares magnitudes.
        GateResult(
            "max_drawdown",
            drawdown is not None and abs(drawdown) <= gates.max_drawdown,
            drawdown,
            gates.max_drawdown,
        ),
        GateResult(
            "trade_count", trades is not None and trades >= gates.min_trades, trades, gates.min_trades
        ),
        GateResult(
            "beats_null",
            null_p_value is not None and null_p_value <= gates.max_null_p_value,
            null_p_value,
            gates.max_null_p_value,
        ),
    )
    return GateEvaluation(strategy_id=strategy_id, period=period, results=results)


@dataclass(frozen=True)
class Contender:
    """A strategy the promoter looks at: its current status, how it was selected, and its gate evaluation."""

    strategy_id: str
    status: str
    period: str
    training_fitness: float | None
    evaluation: GateEvaluation


@dataclass(frozen=True)
class StatusTransition:
    strategy_id: str
    from_status: str
    to_status: str
    reason: str


def _seniority(contender: Contender) -> tuple[str, float, str]:
    """Sort key, best first: the newest period, then the higher training fitness, then the id."""
    fitness = contender.training_fitness if contender.training_fitness is not None else -math.inf
    return (contender.period, fitness, contender.strategy_id)


def plan_promotions(
    pool: Sequence[Contender], actives: Sequence[Contender], max_champions: int
) -> list[StatusTransition]:
    """The status changes that leave at most ``max_champions`` active strategies, all passing the gates.

    ``pool``: strategies selected by training fitness for promotion (not active now); ``actives``: the
    current champions, re-judged. Passing strategies are ranked newest period first (the freshest training
    data), then by training fitness; those beyond ``max_champions`` are not promoted, or retired if active.
    """
    if max_champions < 0:
        raise PromotionConfigError(f"max_champions must be >= 0 (EMP_MAX_CHAMPIONS); got {max_champions}")
    active_ids = {contender.strategy_id for contender in actives}
    overlap = sorted(active_ids & {contender.strategy_id for contender in pool})
    if overlap:
        raise PromotionConfigError(f"strategies {overlap[:5]} are both active and in the promotion pool")
    passing = sorted(
        (contender for contender in (*actives, *pool) if contender.evaluation.passed),
        key=_seniority,
        reverse=True,
    )
    kept = {contender.strategy_id for contender in passing[:max_champions]}
    transitions: list[StatusTransition] = []
    for contender in actives:
        if not contender.evaluation.passed:
            reason = "no longer passes: " + contender.evaluation.summary()
            transitions.append(StatusTransition(contender.strategy_id, ACTIVE, RETIRED, reason))
        elif contender.strategy_id not in kept:
            reason = f"superseded: more than {max_champions} champions pass the gates; newer ones are kept"
            transitions.append(StatusTransition(contender.strategy_id, ACTIVE, RETIRED, reason))
    for contender in pool:
        if contender.strategy_id in kept:
            transitions.append(
                StatusTransition(
                    contender.strategy_id, contender.status, ACTIVE, contender.evaluation.summary()
                )
            )
    return transitions


def gate_violations(evaluations: Sequence[GateEvaluation], gate: str) -> list[tuple[str, GateResult]]:
    """(strategy id, failing result) of one gate over a set of evaluations: the champions' blocking checks."""
    if gate not in GATE_NAMES:
        raise KeyError(f"no gate named {gate!r}; gates are {list(GATE_NAMES)}")
    return [
        (evaluation.strategy_id, evaluation.result(gate))
        for evaluation in evaluations
        if not evaluation.result(gate).passed
    ]
