"""The genetic algorithm that evolves strategy genomes on a training window.

One loop, in the open: a random first generation; then, each generation, diverse elites are kept, parents are
picked by tournament on a *shared* fitness (fitness minus a penalty per near-twin, so a crowd of copies of one
behaviour does not take over), children are made by crossover and/or mutation, any genome already evaluated
in the run is refused (so each strategy is scored and recorded once), and a few random immigrants keep new
material coming. The whole population is scored in one backtest call.

Fitness = annualised Sharpe - drawdown_weight x |max drawdown| - trade_penalty x (shortfall below min_trades
as a fraction of min_trades); a strategy whose equity reaches zero scores RUIN_FITNESS.

Determinism: every random draw comes from one ``numpy.random.Generator(PCG64(seed))`` stream (drawn through
``RandomStream``, which gives numpy's numbers at less cost) in a fixed order,
features are sampled from the panel's columns in their given order, ties sort by position; the same panel,
market, config and seed give the same records, bit for bit. Thresholds come from quantiles of the training
window only, so data after the window cannot influence what evolves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from emp_pipeline.domain.backtest import MarketArrays, PopulationResult, RiskArrays, simulate_population
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import (
    MAX_HOLDING_BOUNDS,
    MAX_RULE_CONDITIONS,
    MAX_RULE_DEPTH,
    POSITION_FRACTION_BOUNDS,
    STOP_ATR_BOUNDS,
    TAKE_PROFIT_ATR_BOUNDS,
    Condition,
    FeaturePanel,
    Genome,
    GenomeError,
    RiskGenes,
    Rule,
    RuleEvaluator,
    RuleGroup,
    genome_conditions,
    population_signals,
    rule_conditions,
    strategy_id,
    validate_genome,
)
from emp_pipeline.domain.metrics import DAILY_PERIODS_PER_YEAR, return_statistics
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.walkforward import WalkForwardFold, inner_fold_bounds

RUIN_FITNESS = -100.0
_QUANTILE_LEVELS = np.linspace(0.02, 0.98, 49)
_MAX_CHILD_ATTEMPTS = 20


class EvolutionError(ValueError):
    """The GA cannot run as configured (too few features, bad config); the message says what to change."""


FITNESSES: tuple[str, ...] = ("full_window", "inner_folds")


@dataclass(frozen=True)
class InnerFoldFitness:
    """The ``inner_folds`` fitness: each candidate scored on purged, embargoed inner folds of the training
    window, rewarded for doing well on all of them, and charged for rule complexity and turnover.

    fitness = mean_k(score_k) - dispersion_weight x std_k(score_k) - trade_penalty x trade shortfall
              - complexity_penalty x conditions - turnover_penalty x annual turnover,
    with score_k = Sharpe_k - drawdown_weight x |max drawdown_k| on fold k (backtested alone, starting flat),
    conditions the number of leaves in all its rules, and annual turnover the traded notional per unit of
    capital per year. A candidate ruined on any fold scores RUIN_FITNESS.
    """

    folds: int = 4
    embargo_bars: int = 5
    dispersion_weight: float = 0.5
    complexity_penalty: float = 0.02
    turnover_penalty: float = 0.01


@dataclass(frozen=True)
class EvolutionConfig:
    population_size: int = 200
    generations: int = 50
    elite_count: int = 4
    tournament_size: int = 3
    crossover_rate: float = 0.6
    mutation_rate: float = 0.8
    immigrant_fraction: float = 0.1
    max_conditions: int = 3
    min_trades: int = 10
    drawdown_weight: float = 1.0
    trade_penalty: float = 1.0
    sharing_threshold: float = 0.95
    sharing_penalty: float = 0.05
    costs: Costs = field(default_factory=Costs)  # what every fill of the measured backtests pays
    periods_per_year: float = DAILY_PERIODS_PER_YEAR
    excluded_features: tuple[str, ...] = ()
    fitness: str = "full_window"  # or "inner_folds" (see InnerFoldFitness)
    inner_folds: InnerFoldFitness = field(default_factory=InnerFoldFitness)
    # The sizing gene's ceiling: the live risk limits in force (risk.position_fraction_ceiling), so every
    # genome the GA or the null model draws trades as it was measured (issue 13 point 5).
    max_position_fraction: float = POSITION_FRACTION_BOUNDS[1]

    def validate(self) -> EvolutionConfig:
        checks = (
            ("population_size", self.population_size >= 4),
            ("generations", self.generations >= 1),
            ("elite_count", 0 <= self.elite_count < self.population_size),
            ("tournament_size", 1 <= self.tournament_size <= self.population_size),
            ("crossover_rate", 0.0 <= self.crossover_rate <= 1.0),
            ("mutation_rate", 0.0 <= self.mutation_rate <= 1.0),
            ("immigrant_fraction", 0.0 <= self.immigrant_fraction < 1.0),
            ("max_conditions", 1 <= self.max_conditions <= MAX_RULE_CONDITIONS),
            ("min_trades", self.min_trades >= 0),
            ("sharing_threshold", -1.0 <= self.sharing_threshold <= 1.0),
            ("fitness", self.fitness in FITNESSES),
            ("inner_folds", self.inner_folds.folds >= 1 and self.inner_folds.embargo_bars >= 0),
            (
                "max_position_fraction",
                POSITION_FRACTION_BOUNDS[0] <= self.max_position_fraction <= POSITION_FRACTION_BOUNDS[1],
            ),
        )
        for name, ok in checks:
            if not ok:
                raise EvolutionError(f"EvolutionConfig.{name}={getattr(self, name)!r} is out of range")
        return self


@dataclass(frozen=True)
class StrategyRecord:
    """One evaluated strategy as it first entered a population: its identity, lineage and score."""

    strategy_id: str
    parent_ids: tuple[str, ...]
    generation: int
    operator: str
    fitness: float
    genome: Genome
    metrics: dict[str, float] = field(hash=False)


@dataclass(frozen=True)
class GenerationSummary:
    generation: int
    best_fitness: float
    mean_fitness: float
    new_strategies: int
    niches: int


@dataclass(frozen=True)
class EvolutionResult:
    records: tuple[StrategyRecord, ...]
    final_population: tuple[StrategyRecord, ...]
    history: tuple[GenerationSummary, ...]
    seed: int

    @property
    def best(self) -> StrategyRecord:
        return self.final_population[0]


# ------------------------------------------------------------------------------------------ gene pool


@dataclass(frozen=True)
class FeatureSpace:
    """What the GA may write into rules: features, their threshold grids and comparable partners.

    Built from the training window only. Features that never vary there carry no information and are left
    out; two features are comparable when each one's median lies inside the other's 10-90 % range.
    """

    names: tuple[str, ...]
    thresholds: dict[str, np.ndarray]
    partners: dict[str, tuple[str, ...]]


def feature_space(panel: FeaturePanel, excluded: Sequence[str] = ()) -> FeatureSpace:
    names: list[str] = []
    thresholds: dict[str, np.ndarray] = {}
    spread: dict[str, tuple[float, float, float]] = {}
    for name in panel.names:
        if name in excluded:
            continue
        values = panel.feature(name)[panel.usable]
        values = values[np.isfinite(values)]
        if values.size < 2 or values.min() == values.max():
            continue
        grid = np.unique(np.array([_round_threshold(q) for q in np.quantile(values, _QUANTILE_LEVELS)]))
        names.append(name)
        thresholds[name] = grid
        q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
        spread[name] = (float(q10), float(q50), float(q90))
    if not names:
        raise EvolutionError(
            "no usable feature varies in the training window; widen the window or check the warmup flags"
        )
    partners = {
        name: tuple(
            other
            for other in names
            if other != name
            and spread[other][0] <= spread[name][1] <= spread[other][2]
            and spread[name][0] <= spread[other][1] <= spread[name][2]
        )
        for name in names
    }
    return FeatureSpace(names=tuple(names), thresholds=thresholds, partners=partners)


def _round_threshold(value: float) -> float:
    """Six significant digits: readable genomes, and the same JSON on every machine."""
    return float(f"{value:.6g}")


def _round_gene(value: float, low: float, high: float) -> float:
    return float(f"{min(max(value, low), high):.4g}")


# ---------------------------------------------------------------------------------- random genomes


def _random_condition(rng: RandomStream, space: FeatureSpace) -> Condition:
    left = space.names[rng.integers(len(space.names))]
    op = ("<", ">", "crosses_above", "crosses_below")[rng.integers(4)]
    partners = space.partners[left]
    if partners and rng.random() < 0.3:
        return Condition(left, op, partners[rng.integers(len(partners))])
    grid = space.thresholds[left]
    return Condition(left, op, float(grid[rng.integers(len(grid))]))


def _random_rule(rng: RandomStream, space: FeatureSpace, max_conditions: int) -> Rule:
    count = int(rng.integers(1, max_conditions + 1))
    if count == 1:
        return _random_condition(rng, space)
    children: list[Rule] = [_random_condition(rng, space) for _ in range(count)]
    if count >= 3 and rng.random() < 0.3:
        inner = RuleGroup(("all", "any")[rng.integers(2)], (children[0], children[1]))
        children = [inner, *children[2:]]
    return RuleGroup(("all", "any")[rng.integers(2)], tuple(children))


def _random_regimes(rng: RandomStream) -> tuple[str, ...]:
    chosen = tuple(label for label in REGIME_LABELS if rng.random() < 0.6)
    return chosen or (REGIME_LABELS[rng.integers(len(REGIME_LABELS))],)


def _log_uniform(rng: RandomStream, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _position_fraction_bounds(max_position_fraction: float) -> tuple[float, float]:
    """The sizing gene's range under a ceiling (the live cap in force): never above it."""
    return POSITION_FRACTION_BOUNDS[0], min(POSITION_FRACTION_BOUNDS[1], max_position_fraction)


def _random_risk(rng: RandomStream, max_position_fraction: float) -> RiskGenes:
    low, high = _position_fraction_bounds(max_position_fraction)
    return RiskGenes(
        stop_atr=_round_gene(_log_uniform(rng, 0.75, 6.0), *STOP_ATR_BOUNDS),
        take_profit_atr=_round_gene(_log_uniform(rng, 0.75, 12.0), *TAKE_PROFIT_ATR_BOUNDS),
        # Without a ceiling below 1 this is the draw every run made before (results bit-identical).
        position_fraction=_round_gene(rng.uniform(min(0.1, high), high), low, high),
        max_holding_bars=round(_log_uniform(rng, 2.0, 120.0)),
    )


def random_genome(
    rng: RandomStream,
    space: FeatureSpace,
    max_conditions: int = 3,
    max_position_fraction: float = POSITION_FRACTION_BOUNDS[1],
) -> Genome:
    """A genome from the gene pool: random rules and risk genes, sizing at most ``max_position_fraction``."""
    direction = ("long", "short", "both")[rng.integers(3)]
    long_entry = _random_rule(rng, space, max_conditions) if direction != "short" else None
    short_entry = _random_rule(rng, space, max_conditions) if direction != "long" else None
    exit_rule = _random_rule(rng, space, max_conditions) if rng.random() < 0.7 else None
    return validate_genome(
        Genome(
            direction=direction,
            long_entry=long_entry,
            short_entry=short_entry,
            exit=exit_rule,
            regimes=_random_regimes(rng),
            risk=_random_risk(rng, max_position_fraction),
        )
    )


# ----------------------------------------------------------------------------------- tree surgery


Path = tuple[int, ...]


def _paths(rule: Rule, prefix: Path = ()) -> list[Path]:
    """Every node of a rule tree, depth first, root first."""
    found = [prefix]
    if isinstance(rule, RuleGroup):
        for index, child in enumerate(rule.rules):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _node(rule: Rule, path: Path) -> Rule:
    for index in path:
        assert isinstance(rule, RuleGroup)
        rule = rule.rules[index]
    return rule


def _replace(rule: Rule, path: Path, new: Rule) -> Rule:
    if not path:
        return new
    assert isinstance(rule, RuleGroup)
    head, rest = path[0], path[1:]
    children = list(rule.rules)
    children[head] = _replace(children[head], rest, new)
    return RuleGroup(rule.combinator, tuple(children))


def _depth(rule: Rule) -> int:
    return 1 if isinstance(rule, Condition) else 1 + max(_depth(child) for child in rule.rules)


def _fits(rule: Rule) -> bool:
    return rule_conditions(rule) <= MAX_RULE_CONDITIONS and _depth(rule) <= MAX_RULE_DEPTH


def _swap_subtree(rng: RandomStream, into: Rule, donor: Rule) -> Rule:
    """Graft a random subtree of ``donor`` over a random node of ``into`` (kept only if it still fits)."""
    targets = _paths(into)
    target = targets[rng.integers(len(targets))]
    donor_paths = _paths(donor)
    graft = _node(donor, donor_paths[rng.integers(len(donor_paths))])
    child = _replace(into, target, graft)
    return child if _fits(child) else into


# -------------------------------------------------------------------------------------- operators


def crossover(rng: RandomStream, first: Genome, second: Genome) -> Genome:
    """Direction from the first parent; rules, regimes and risk genes mixed from both."""

    def pick_rule(a: Rule | None, b: Rule | None, required: bool) -> Rule | None:
        candidates = [rule for rule in (a, b) if rule is not None] if required else [a, b]
        chosen = candidates[rng.integers(len(candidates))]
        other = candidates[-1] if chosen is candidates[0] else candidates[0]
        if chosen is not None and other is not None and rng.random() < 0.5:
            chosen = _swap_subtree(rng, chosen, other)
        return chosen

    direction = first.direction
    long_entry = pick_rule(first.long_entry, second.long_entry, True) if direction != "short" else None
    short_entry = pick_rule(first.short_entry, second.short_entry, True) if direction != "long" else None
    exit_rule = pick_rule(first.exit, second.exit, False)
    regimes = tuple(
        label
        for label in REGIME_LABELS
        if (label in first.regimes if rng.random() < 0.5 else label in second.regimes)
    )
    genes = [first.risk, second.risk]
    risk = RiskGenes(
        stop_atr=genes[rng.integers(2)].stop_atr,
        take_profit_atr=genes[rng.integers(2)].take_profit_atr,
        position_fraction=genes[rng.integers(2)].position_fraction,
        max_holding_bars=genes[rng.integers(2)].max_holding_bars,
    )
    return Genome(
        direction=direction,
        long_entry=long_entry,
        short_entry=short_entry,
        exit=exit_rule,
        regimes=regimes or first.regimes,
        risk=risk,
    )


def _mutate_condition(rng: RandomStream, space: FeatureSpace, condition: Condition) -> Condition:
    choice = rng.integers(3)
    if choice == 0 and isinstance(condition.right, float) and condition.left in space.thresholds:
        grid = space.thresholds[condition.left]
        position = int(np.searchsorted(grid, condition.right))
        step = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
        return Condition(
            condition.left, condition.op, float(grid[int(np.clip(position + step, 0, len(grid) - 1))])
        )
    if choice == 1:
        flipped = {">": "<", "<": ">", "crosses_above": "crosses_below", "crosses_below": "crosses_above"}
        as_cross = {">": "crosses_above", "<": "crosses_below", "crosses_above": ">", "crosses_below": "<"}
        table = flipped if rng.random() < 0.5 else as_cross
        return Condition(condition.left, table[condition.op], condition.right)
    return _random_condition(rng, space)


def _mutate_rule(rng: RandomStream, space: FeatureSpace, rule: Rule, max_conditions: int) -> Rule:
    paths = _paths(rule)
    path = paths[rng.integers(len(paths))]
    node = _node(rule, path)
    action = rng.random()
    if action < 0.6 and isinstance(node, Condition):
        return _replace(rule, path, _mutate_condition(rng, space, node))
    if action < 0.75:
        added = RuleGroup(("all", "any")[rng.integers(2)], (node, _random_condition(rng, space)))
        candidate = _replace(rule, path, added)
        return candidate if _fits(candidate) else rule
    if action < 0.85 and isinstance(node, RuleGroup):
        kept = node.rules[rng.integers(len(node.rules))]
        return _replace(rule, path, kept)
    if action < 0.9 and isinstance(node, RuleGroup):
        return _replace(rule, path, RuleGroup("any" if node.combinator == "all" else "all", node.rules))
    candidate = _replace(rule, path, _random_rule(rng, space, max_conditions))
    return candidate if _fits(candidate) else rule


def mutate(
    rng: RandomStream,
    space: FeatureSpace,
    genome: Genome,
    max_conditions: int = 3,
    max_position_fraction: float = POSITION_FRACTION_BOUNDS[1],
) -> Genome:
    """One random change: a rule edit, the exit rule on/off, a regime flip, the direction, or a risk gene
    (the sizing gene kept at most ``max_position_fraction``)."""
    action = rng.random()
    if action < 0.55:
        slots = [
            name
            for name, rule in (
                ("long_entry", genome.long_entry),
                ("short_entry", genome.short_entry),
                ("exit", genome.exit),
            )
            if rule is not None
        ]
        slot = slots[rng.integers(len(slots))]
        return replace(genome, **{slot: _mutate_rule(rng, space, getattr(genome, slot), max_conditions)})
    if action < 0.62:
        return replace(
            genome, exit=None if genome.exit is not None else _random_rule(rng, space, max_conditions)
        )
    if action < 0.72:
        label = REGIME_LABELS[rng.integers(len(REGIME_LABELS))]
        flipped = {*genome.regimes} ^ {label}
        regimes = tuple(name for name in REGIME_LABELS if name in flipped)
        return replace(genome, regimes=regimes or genome.regimes)
    if action < 0.78:
        direction = ("long", "short", "both")[rng.integers(3)]
        long_entry = genome.long_entry or genome.short_entry or _random_rule(rng, space, max_conditions)
        short_entry = genome.short_entry or genome.long_entry or _random_rule(rng, space, max_conditions)
        return replace(
            genome,
            direction=direction,
            long_entry=long_entry if direction != "short" else None,
            short_entry=short_entry if direction != "long" else None,
        )
    risk = genome.risk
    step = float(np.exp(rng.normal(0.0, 0.3)))
    gene = rng.integers(4)
    if gene == 0:
        risk = replace(risk, stop_atr=_round_gene(risk.stop_atr * step, *STOP_ATR_BOUNDS))
    elif gene == 1:
        risk = replace(
            risk, take_profit_atr=_round_gene(risk.take_profit_atr * step, *TAKE_PROFIT_ATR_BOUNDS)
        )
    elif gene == 2:
        risk = replace(
            risk,
            position_fraction=_round_gene(
                risk.position_fraction * step, *_position_fraction_bounds(max_position_fraction)
            ),
        )
    else:
        low, high = MAX_HOLDING_BOUNDS
        risk = replace(risk, max_holding_bars=int(min(max(round(risk.max_holding_bars * step), low), high)))
    return replace(genome, risk=risk)


# ---------------------------------------------------------------------------------------- fitness


@dataclass(frozen=True)
class Behaviour:
    """Each strategy's returns centred and scaled to unit length (dot products are correlations); ``flat``
    marks strategies whose returns never vary (they all behave alike)."""

    scaled: np.ndarray
    flat: np.ndarray

    @classmethod
    def of(cls, returns: np.ndarray, mean: np.ndarray, squared_deviations: np.ndarray) -> Behaviour:
        norms = np.sqrt(squared_deviations)
        flat = norms <= 1e-15
        scaled = returns - mean[:, None]
        scaled /= np.where(flat, 1.0, norms)[:, None]
        return cls(scaled=scaled, flat=flat)

    def take(self, rows: Sequence[int], other: Behaviour) -> Behaviour:
        """These strategies' rows ``rows`` followed by all of ``other``'s (elites, then the newcomers)."""
        return Behaviour(
            scaled=np.concatenate([self.scaled[rows], other.scaled]),
            flat=np.concatenate([self.flat[rows], other.flat]),
        )


@dataclass(frozen=True)
class PopulationScores:
    fitness: np.ndarray
    returns: np.ndarray
    behaviour: Behaviour
    metrics: list[dict[str, float]]


def score_population(
    genomes: Sequence[Genome], evaluator: RuleEvaluator, market: MarketArrays, config: EvolutionConfig
) -> PopulationScores:
    """Backtest the genomes together (signals on the evaluator's panel) into fitness and metrics."""
    signals = evaluator.signals(genomes)
    risk = RiskArrays.from_genomes(genomes)
    if config.fitness == "inner_folds":
        return inner_fold_fitness(genomes, signals, market, risk, config)
    return population_fitness(simulate_population(signals, market, risk, config.costs), config)


def inner_fold_fitness(
    genomes: Sequence[Genome],
    signals: np.ndarray,
    market: MarketArrays,
    risk: RiskArrays,
    config: EvolutionConfig,
) -> PopulationScores:
    """The ``inner_folds`` fitness (see InnerFoldFitness); metrics are those of the folds chained."""
    spec = config.inner_folds
    bounds = inner_fold_bounds(len(market.dates), spec.folds, spec.embargo_bars)
    folds = [
        simulate_population(
            np.ascontiguousarray(signals[:, start:stop]),
            _market_bars(market, start, stop),
            risk,
            config.costs,
        )
        for start, stop in bounds
    ]
    chained = population_fitness(_chain_folds(folds), config)
    scores = []
    for fold in folds:
        ruined = ~(fold.equity > 0.0).all(axis=1)
        returns = np.where(ruined[:, None], 0.0, fold.returns) if ruined.any() else fold.returns
        statistics = return_statistics(returns, config.periods_per_year)
        scores.append(statistics.sharpe + config.drawdown_weight * statistics.max_drawdown)
    score = np.stack(scores)
    trades = sum(fold.trade_counts for fold in folds)
    shortfall = np.clip((config.min_trades - trades) / max(config.min_trades, 1), 0.0, 1.0)
    n_bars = sum(stop - start for start, stop in bounds)
    annual_turnover = sum(fold.turnover for fold in folds) / n_bars * config.periods_per_year
    conditions = np.array([genome_conditions(genome) for genome in genomes], dtype=np.float64)
    fitness = (
        score.mean(axis=0)
        - spec.dispersion_weight * score.std(axis=0)
        - config.trade_penalty * shortfall
        - spec.complexity_penalty * conditions
        - spec.turnover_penalty * annual_turnover
    )
    ruined = np.array([metrics["ruined"] == 1.0 for metrics in chained.metrics])
    fitness = np.where(ruined, RUIN_FITNESS, fitness)
    return replace(chained, fitness=fitness)


def _market_bars(market: MarketArrays, start: int, stop: int) -> MarketArrays:
    """Bars ``start <= index < stop`` of the market."""
    dates = market.dates
    return market.window(dates[start], dates[stop] if stop < len(dates) else None)


def _chain_folds(folds: Sequence[PopulationResult]) -> PopulationResult:
    """Fold backtests one after the other: returns concatenated, equity compounded across folds, trade
    statistics summed, exposure weighted by bars."""
    returns = np.concatenate([fold.returns for fold in folds], axis=1)
    scale = np.ones(folds[0].equity.shape[0])
    equities = []
    for fold in folds:
        equities.append(fold.equity * scale[:, None])
        scale = scale * fold.equity[:, -1]
    lengths = np.array([fold.returns.shape[1] for fold in folds], dtype=np.float64)
    return PopulationResult(
        equity=np.concatenate(equities, axis=1),
        returns=returns,
        instrument_equity=None,
        trade_counts=sum(fold.trade_counts for fold in folds),
        winning_trades=sum(fold.winning_trades for fold in folds),
        gross_profit=sum(fold.gross_profit for fold in folds),
        gross_loss=sum(fold.gross_loss for fold in folds),
        exposure=sum(fold.exposure * length for fold, length in zip(folds, lengths, strict=True))
        / lengths.sum(),
        turnover=sum(fold.turnover for fold in folds),
        fees=sum(fold.fees for fold in folds),
        spread_costs=sum(fold.spread_costs for fold in folds),
        swap_costs=sum(fold.swap_costs for fold in folds),
    )


def population_fitness(result: PopulationResult, config: EvolutionConfig) -> PopulationScores:
    """Fitness and metrics of backtested strategies (see the module docstring for the formula)."""
    ruined = ~(result.equity > 0.0).all(axis=1)
    returns = np.where(ruined[:, None], 0.0, result.returns) if ruined.any() else result.returns
    statistics = return_statistics(returns, config.periods_per_year)
    sharpe = statistics.sharpe
    drawdown = -statistics.max_drawdown
    trades = result.trade_counts
    shortfall = np.clip((config.min_trades - trades) / max(config.min_trades, 1), 0.0, 1.0)
    fitness = sharpe - config.drawdown_weight * drawdown - config.trade_penalty * shortfall
    fitness = np.where(ruined, RUIN_FITNESS, fitness)
    columns = zip(
        sharpe.tolist(),
        drawdown.tolist(),
        (result.equity[:, -1] - 1.0).tolist(),
        trades.tolist(),
        result.winning_trades.tolist(),
        result.gross_profit.tolist(),
        result.gross_loss.tolist(),
        result.exposure.tolist(),
        result.turnover.tolist(),
        ruined.tolist(),
        strict=True,
    )
    metrics = [
        {
            "sharpe": sharpe_k,
            "max_drawdown": drawdown_k,
            "total_return": total_k,
            "trades": float(trades_k),
            "win_rate": wins_k / trades_k if trades_k else 0.0,
            "profit_factor": profit_k / loss_k if loss_k else 0.0,
            "exposure": exposure_k,
            "turnover": turnover_k,
            "ruined": float(ruined_k),
        }
        for (
            sharpe_k,
            drawdown_k,
            total_k,
            trades_k,
            wins_k,
            profit_k,
            loss_k,
            exposure_k,
            turnover_k,
            ruined_k,
        ) in columns
    ]
    behaviour = Behaviour.of(returns, statistics.mean, statistics.squared_deviations)
    return PopulationScores(fitness=fitness, returns=returns, behaviour=behaviour, metrics=metrics)


def niche_counts(behaviour: Behaviour, threshold: float) -> np.ndarray:
    """How many population members behave like each one (return correlation >= threshold, self included).

    Strategies with constant returns (never trading) all behave alike and form one niche.
    """
    scaled, flat = behaviour.scaled, behaviour.flat
    similar = scaled @ scaled.T >= threshold
    similar[np.ix_(flat, flat)] = True
    np.fill_diagonal(similar, True)
    return similar.sum(axis=1)


# -------------------------------------------------------------------------------------- the loop


def _tournament(rng: RandomStream, shared: np.ndarray, size: int) -> int:
    entrants = rng.sample(len(shared), size)
    return entrants[int(np.argmax(shared[entrants]))]


def _diverse_elites(fitness: np.ndarray, behaviour: Behaviour, count: int, threshold: float) -> list[int]:
    """The best strategies, skipping any that behave like one already kept (then filling up by rank)."""
    order = np.argsort(-fitness, kind="stable")
    scaled = behaviour.scaled
    kept: list[int] = []
    for index in order:
        if len(kept) == count:
            return kept
        if not kept or float(np.max(scaled[kept] @ scaled[index])) < threshold:
            kept.append(int(index))
    for index in order:
        if len(kept) == count:
            break
        if int(index) not in kept:
            kept.append(int(index))
    return kept


@dataclass
class _Member:
    genome: Genome
    strategy_id: str
    parent_ids: tuple[str, ...]
    operator: str


@threadpool_limits.wrap(limits=1, user_api="blas")
def evolve(
    panel: FeaturePanel,
    market: MarketArrays,
    config: EvolutionConfig = EvolutionConfig(),
    seed: int = 0,
) -> EvolutionResult:
    """Run the GA on the whole of ``panel``/``market`` (slice them to the training window first).

    BLAS runs on one thread: the GA's matrix products are small (a 200 x 200 Gram matrix of returns per
    generation), and OpenBLAS's thread pool made each one ~40x slower on a shared 2-core machine (0.16 s
    against 4 ms), most of the GA's time; the products are the same bit for bit.
    """
    config.validate()
    if not panel.dates.equals(market.dates) or panel.symbols != market.symbols:
        raise EvolutionError("panel and market must share dates and symbols; build both on the same grid")
    space = feature_space(panel, config.excluded_features)
    rng = RandomStream(seed)
    size = config.population_size

    population: list[_Member] = []
    seen: set[str] = set()
    while len(population) < size:
        genome = random_genome(rng, space, config.max_conditions, config.max_position_fraction)
        identity = strategy_id(genome)
        if identity not in seen:
            seen.add(identity)
            population.append(_Member(genome, identity, (), "random"))

    records: list[StrategyRecord] = []
    history: list[GenerationSummary] = []
    evaluator = RuleEvaluator(panel)
    scores = score_population([m.genome for m in population], evaluator, market, config)
    fitness, behaviour, metrics = scores.fitness, scores.behaviour, scores.metrics
    counts = niche_counts(behaviour, config.sharing_threshold)
    for generation in range(config.generations):
        if generation > 0:
            shared = fitness - config.sharing_penalty * (counts - 1)
            elites = _diverse_elites(fitness, behaviour, config.elite_count, config.sharing_threshold)
            n_immigrants = round(config.immigrant_fraction * size)
            next_population = [population[index] for index in elites]
            while len(next_population) < size:
                member = _make_child(
                    rng, space, config, population, shared, seen, len(next_population) >= size - n_immigrants
                )
                seen.add(member.strategy_id)
                next_population.append(member)
            new_members = next_population[len(elites) :]
            new_scores = score_population([m.genome for m in new_members], evaluator, market, config)
            fitness = np.concatenate([fitness[elites], new_scores.fitness])
            behaviour = behaviour.take(elites, new_scores.behaviour)
            metrics = [metrics[index] for index in elites] + new_scores.metrics
            population = next_population
            counts = niche_counts(behaviour, config.sharing_threshold)
            fresh = range(len(elites), size)
        else:
            fresh = range(size)
        for index in fresh:
            member = population[index]
            records.append(
                StrategyRecord(
                    strategy_id=member.strategy_id,
                    parent_ids=member.parent_ids,
                    generation=generation,
                    operator=member.operator,
                    fitness=float(fitness[index]),
                    genome=member.genome,
                    metrics=metrics[index],
                )
            )
        history.append(
            GenerationSummary(
                generation=generation,
                best_fitness=float(fitness.max()),
                mean_fitness=float(fitness.mean()),
                new_strategies=len(fresh),
                niches=int(np.sum(1.0 / counts).round()),
            )
        )

    first_record = {record.strategy_id: record for record in records}
    order = np.argsort(-fitness, kind="stable")
    final = tuple(
        replace(first_record[population[index].strategy_id], fitness=float(fitness[index])) for index in order
    )
    return EvolutionResult(records=tuple(records), final_population=final, history=tuple(history), seed=seed)


def _make_child(
    rng: RandomStream,
    space: FeatureSpace,
    config: EvolutionConfig,
    population: list[_Member],
    shared: np.ndarray,
    seen: set[str],
    immigrant: bool,
) -> _Member:
    """A valid genome never evaluated before in this run (falls back to a random immigrant)."""
    for _ in range(_MAX_CHILD_ATTEMPTS if not immigrant else 0):
        first = population[_tournament(rng, shared, config.tournament_size)]
        if rng.random() < config.crossover_rate:
            second = population[_tournament(rng, shared, config.tournament_size)]
            genome = crossover(rng, first.genome, second.genome)
            parents = (first.strategy_id, second.strategy_id)
            operator = "crossover"
            if rng.random() < config.mutation_rate:
                genome = mutate(rng, space, genome, config.max_conditions, config.max_position_fraction)
                operator = "crossover+mutation"
        else:
            genome = mutate(rng, space, first.genome, config.max_conditions, config.max_position_fraction)
            parents = (first.strategy_id,)
            operator = "mutation"
        try:
            validate_genome(genome)
        except GenomeError:
            continue
        identity = strategy_id(genome)
        if identity not in seen:
            return _Member(genome, identity, parents, operator)
    while True:
        genome = random_genome(rng, space, config.max_conditions, config.max_position_fraction)
        identity = strategy_id(genome)
        if identity not in seen:
            return _Member(genome, identity, (), "immigrant")


# ------------------------------------------------------------------------------- walk-forward chain


def evolve_fold(
    panel: FeaturePanel, market: MarketArrays, fold: WalkForwardFold, config: EvolutionConfig, seed: int
) -> EvolutionResult:
    """Evolve on the fold's training window only (what happens after it is invisible to the GA)."""
    return evolve(
        panel.window(fold.train_start, fold.train_end),
        market.window(fold.train_start, fold.train_end),
        config,
        seed,
    )


def backtest_fold(
    genomes: Sequence[Genome],
    panel: FeaturePanel,
    market: MarketArrays,
    fold: WalkForwardFold,
    config: EvolutionConfig,
) -> tuple[pd.DatetimeIndex, PopulationResult]:
    """Out-of-sample backtest of evolved genomes on the fold's test period (signals start flat)."""
    return backtest_window(genomes, panel, market, fold.test_start, fold.test_end, config)


def backtest_window(
    genomes: Sequence[Genome],
    panel: FeaturePanel,
    market: MarketArrays,
    start: pd.Timestamp,
    end: pd.Timestamp,
    config: EvolutionConfig,
) -> tuple[pd.DatetimeIndex, PopulationResult]:
    """Genomes backtested together on ``start <= date < end`` alone, with the config's costs."""
    window_panel = panel.window(start, end)
    signals = population_signals(genomes, window_panel)
    result = simulate_population(
        signals, market.window(start, end), RiskArrays.from_genomes(genomes), config.costs
    )
    return window_panel.dates, result
