"""The genetic algorithm: determinism, lineage, fitness, diversity, and the no-look-ahead chain."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from emp_pipeline.defs.research.strategies import REGISTRY_OPERATORS
from emp_pipeline.domain import evolution as evolution_module
from emp_pipeline.domain.backtest import PopulationResult, market_arrays
from emp_pipeline.domain.evolution import (
    RUIN_FITNESS,
    Behaviour,
    EvolutionConfig,
    EvolutionError,
    StrategyRecord,
    backtest_fold,
    crossover,
    evolve,
    evolve_fold,
    feature_space,
    mutate,
    niche_counts,
    population_fitness,
    random_genome,
    score_population,
)
from emp_pipeline.domain.genome import (
    Condition,
    RuleEvaluator,
    RuleGroup,
    feature_panel,
    genome_features,
    genome_to_dict,
    validate_genome,
)
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.metrics import return_statistics
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.regimes import RuleRegimeClassifier
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.domain.walkforward import WalkForwardError, build_fold, inner_fold_bounds

SMALL = EvolutionConfig(population_size=24, generations=4, elite_count=2, min_trades=5)


def _record_view(record: StrategyRecord) -> dict[str, object]:
    """A record as plain values, so two runs' records compare field by field."""
    return {
        "strategy_id": record.strategy_id,
        "parent_ids": list(record.parent_ids),
        "generation": record.generation,
        "operator": record.operator,
        "fitness": record.fitness,
        "genome": genome_to_dict(record.genome),
        "metrics": dict(record.metrics),
    }


def _chain(bars: pd.DataFrame):
    """bars -> features -> regimes -> aligned panel and market, exactly as the pipeline does it."""
    instruments = [
        InstrumentMeta(symbol, symbol, AssetClass.INDEX, "USD", 0.01, 2, 1.0, 0.1, 0.1, "24x5")
        for symbol in sorted(bars["symbol"].unique())
    ]
    features = SensoryCortex(instruments).compute(bars)
    regimes = RuleRegimeClassifier().classify(bars, features)
    panel = feature_panel(features, regimes)
    return panel, market_arrays(bars, features, dates=panel.dates, symbols=panel.symbols)


@pytest.fixture(scope="module")
def market_data():
    bars = generate_market(n_instruments=3, n_bars=800, seed=11).bars
    panel, market = _chain(bars)
    return bars, panel, market


def test_same_seed_gives_identical_strategies_and_another_seed_does_not(market_data):
    _, panel, market = market_data
    first = evolve(panel, market, SMALL, seed=5)
    second = evolve(panel, market, SMALL, seed=5)
    assert [_record_view(r) for r in first.records] == [_record_view(r) for r in second.records]
    assert [r.fitness for r in first.final_population] == [r.fitness for r in second.final_population]
    other = evolve(panel, market, SMALL, seed=6)
    assert [r.strategy_id for r in other.records] != [r.strategy_id for r in first.records]


def test_records_carry_a_traceable_lineage(market_data):
    _, panel, market = market_data
    result = evolve(panel, market, SMALL, seed=1)
    born: dict[str, int] = {}
    for record in result.records:
        assert record.operator in REGISTRY_OPERATORS, "every GA operator maps onto the registry's vocabulary"
        assert record.strategy_id not in born, "each strategy is recorded once, when it first survives"
        for parent in record.parent_ids:
            assert born[parent] < record.generation, "parents were recorded in an earlier generation"
        if record.operator in ("random", "immigrant"):
            assert record.parent_ids == ()
        elif record.operator.startswith("crossover"):
            assert len(record.parent_ids) == 2
        else:
            assert len(record.parent_ids) == 1
        born[record.strategy_id] = record.generation
    assert {r.operator for r in result.records} >= {"random", "crossover+mutation", "mutation"}
    assert {r.generation for r in result.records} == set(range(SMALL.generations))
    final_ids = [r.strategy_id for r in result.final_population]
    assert len(final_ids) == len(set(final_ids)) == SMALL.population_size
    assert set(final_ids) <= set(born)
    fitness = [r.fitness for r in result.final_population]
    assert fitness == sorted(fitness, reverse=True)
    # Elitism: the best never gets worse from one generation to the next.
    best = [summary.best_fitness for summary in result.history]
    assert best == sorted(best)


def test_genes_come_only_from_the_columns_given(market_data):
    _, panel, market = market_data
    space = feature_space(panel)
    assert set(space.names) <= set(panel.names)
    # A feature that never varies in the window carries no information and is not offered.
    constant = [name for name in panel.names if np.nanstd(panel.feature(name)[panel.usable]) == 0.0]
    assert constant and not set(constant) & set(space.names)
    result = evolve(panel, market, replace(SMALL, excluded_features=("what_rsi_14",)), seed=2)
    used = set().union(*(genome_features(r.genome) for r in result.records))
    assert used <= set(space.names) - {"what_rsi_14"}


def test_mutation_and_crossover_always_give_valid_genomes(market_data):
    _, panel, _ = market_data
    space = feature_space(panel)
    rng = np.random.Generator(np.random.PCG64(9))
    genomes = [random_genome(rng, space) for _ in range(20)]
    for _ in range(300):
        a, b = genomes[rng.integers(20)], genomes[rng.integers(20)]
        child = mutate(rng, space, crossover(rng, a, b))
        validate_genome(child)
        genomes[rng.integers(20)] = child


def _result(equity: np.ndarray, trades: list[int]) -> PopulationResult:
    previous = np.concatenate([np.ones((equity.shape[0], 1)), equity[:, :-1]], axis=1)
    zeros = np.zeros(equity.shape[0])
    return PopulationResult(
        equity=equity,
        returns=equity / previous - 1.0,
        instrument_equity=None,
        trade_counts=np.array(trades),
        winning_trades=np.array(trades),
        gross_profit=zeros,
        gross_loss=zeros,
        exposure=zeros,
        turnover=zeros,
        fees=zeros,
        spread_costs=zeros,
        swap_costs=zeros,
    )


def test_fitness_rewards_sharpe_and_penalises_drawdown_few_trades_and_ruin():
    rng = np.random.default_rng(0)
    steady = np.cumprod(1 + 0.001 + 0.002 * rng.standard_normal(500))
    crash = steady.copy()
    crash[250:] *= 0.7  # the same path with a 30 % drop
    equity = np.vstack([steady, steady, crash, np.r_[steady[:-1], -0.1], np.ones(500)])
    config = EvolutionConfig(min_trades=10, drawdown_weight=1.0, trade_penalty=1.0)
    scores = population_fitness(_result(equity, [20, 5, 20, 20, 0]), config)
    good, few_trades, crashed, ruined, idle = scores.fitness
    assert good > few_trades and good > crashed
    assert good - few_trades == pytest.approx(0.5)  # 5 of the 10 required trades missing
    assert ruined == RUIN_FITNESS
    assert idle == pytest.approx(-1.0)  # no return, no risk, all trades missing
    assert scores.metrics[0]["trades"] == 20.0 and scores.metrics[3]["ruined"] == 1.0


def test_niche_counts_group_near_twins():
    rng = np.random.default_rng(1)
    base = rng.standard_normal(300) * 0.01
    returns = np.vstack(
        [base, base * 2.0 + 1e-9, rng.standard_normal(300) * 0.01, np.zeros(300), np.zeros(300)]
    )
    statistics = return_statistics(returns, periods_per_year=252)
    behaviour = Behaviour.of(returns, statistics.mean, statistics.squared_deviations)
    np.testing.assert_array_equal(niche_counts(behaviour, 0.95), [2, 2, 1, 2, 2])


def test_the_ga_runs_blas_on_one_thread_and_gives_the_threads_back(market_data, monkeypatch):
    """OpenBLAS's pool made the per-generation Gram matrix ~40x slower on a shared machine."""
    _, panel, market = market_data
    blas_threads_before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    seen: list[list[int]] = []

    def counting_niches(behaviour: Behaviour, threshold: float) -> np.ndarray:
        seen.append([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"])
        return niche_counts(behaviour, threshold)

    monkeypatch.setattr(evolution_module, "niche_counts", counting_niches)
    evolve(panel, market, SMALL, seed=3)
    assert blas_threads_before and len(seen) == SMALL.generations
    assert all(threads == [1] * len(blas_threads_before) for threads in seen)
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == (
        blas_threads_before
    )


def test_config_is_validated():
    with pytest.raises(EvolutionError, match="elite_count"):
        EvolutionConfig(population_size=10, elite_count=10).validate()


def test_evolving_and_evaluating_on_data_cut_at_t_matches_the_full_data_up_to_t(market_data):
    """Point 7 of the issue: the whole chain (features, regimes, GA, out-of-sample backtest) is causal."""
    bars, panel, market = market_data
    fold = build_fold(panel.dates, "2002-10", train_bars=300, embargo_bars=3, min_train_bars=200)
    cut = fold.test_start + pd.Timedelta(days=14)
    truncated_panel, truncated_market = _chain(bars.loc[bars["date"] < cut].reset_index(drop=True))

    full = evolve_fold(panel, market, fold, SMALL, seed=4)
    early = evolve_fold(truncated_panel, truncated_market, fold, SMALL, seed=4)
    assert [_record_view(r) for r in early.records] == [_record_view(r) for r in full.records]

    genomes = [record.genome for record in full.final_population[:8]]
    full_dates, full_result = backtest_fold(genomes, panel, market, fold, SMALL)
    early_dates, early_result = backtest_fold(genomes, truncated_panel, truncated_market, fold, SMALL)
    assert len(early_dates) < len(full_dates) and full_dates[: len(early_dates)].equals(early_dates)
    np.testing.assert_array_equal(early_result.equity, full_result.equity[:, : len(early_dates)])
    assert (full_result.equity != 1.0).any(), "the out-of-sample check must exercise real trades"


def test_inner_folds_are_contiguous_embargoed_and_cover_the_window():
    bounds = inner_fold_bounds(756, 4, 5)
    assert bounds[0][0] == 0 and bounds[-1][1] == 756
    assert all(b[0] - a[1] == 5 for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 756 - 3 * 5
    with pytest.raises(WalkForwardError, match="inner folds"):
        inner_fold_bounds(20, 4, 5)


def test_inner_fold_fitness_charges_complexity_and_turnover_by_the_stated_amounts(market_data):
    _, panel, market = market_data
    simple = random_genome(RandomStream(3), feature_space(panel))
    leaf = Condition("what_rsi_14", ">", 1e9)
    # The same behaviour with one more (never true) condition OR-ed into the exit: one condition more.
    padded = replace(simple, exit=RuleGroup("any", (simple.exit, leaf)) if simple.exit else leaf)
    config = replace(SMALL, fitness="inner_folds")
    evaluator = RuleEvaluator(panel)
    scores = score_population([simple, padded], evaluator, market, config)
    np.testing.assert_array_equal(scores.behaviour.scaled[0], scores.behaviour.scaled[1])
    assert scores.fitness[0] - scores.fitness[1] == pytest.approx(config.inner_folds.complexity_penalty)
    free = replace(config, inner_folds=replace(config.inner_folds, turnover_penalty=0.0))
    charged = replace(config, inner_folds=replace(config.inner_folds, turnover_penalty=0.5))
    difference = (
        score_population([simple], evaluator, market, free).fitness[0]
        - (score_population([simple], evaluator, market, charged).fitness[0])
    )
    folds = inner_fold_bounds(len(market.dates), 4, 5)
    scored_bars = sum(stop - start for start, stop in folds)
    turnover = scores.metrics[0]["turnover"]
    assert difference == pytest.approx(0.5 * turnover / scored_bars * config.periods_per_year)


def test_the_inner_fold_fitness_is_deterministic_and_differs_from_the_full_window(market_data):
    _, panel, market = market_data
    config = replace(SMALL, fitness="inner_folds")
    first = evolve(panel, market, config, seed=5)
    assert [_record_view(r) for r in first.records] == [
        _record_view(r) for r in evolve(panel, market, config, seed=5).records
    ]
    full = evolve(panel, market, SMALL, seed=5)
    assert [r.fitness for r in first.records] != [r.fitness for r in full.records]
    with pytest.raises(EvolutionError, match="fitness"):
        replace(SMALL, fitness="sharpe_only").validate()


def test_the_sizing_gene_stays_under_the_live_cap_in_every_operator(market_data):
    """Issue 13 point 5: random draws, mutation and crossover never size above the ceiling they are given,
    and without a ceiling the pool is the one every run drew from before (0.1 .. 1.0)."""
    _, panel, market = market_data
    capped = evolve(panel, market, replace(SMALL, max_position_fraction=0.25), seed=4)
    fractions = [record.genome.risk.position_fraction for record in capped.records]
    assert max(fractions) <= 0.25 and min(fractions) >= 0.01
    assert {record.operator for record in capped.records} >= {"random", "mutation"}
    free = evolve(panel, market, SMALL, seed=4)
    assert max(record.genome.risk.position_fraction for record in free.records) > 0.25
    with pytest.raises(EvolutionError, match="max_position_fraction"):
        replace(SMALL, max_position_fraction=0.0).validate()
