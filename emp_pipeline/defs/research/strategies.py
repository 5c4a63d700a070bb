"""`evolved_strategies`: one genetic-algorithm run per walk-forward period, trained strictly before it.

A period's run reads bars, features and regimes of the training look-back only (everything it reads ends
before the period starts, and the asset refuses to run otherwise), trains on the bars of the training span
that end an embargo of at least a week of bars before the period (StudyWindows: 756 and 5 bars on daily
exchange bars), with a seed fixed by the configured seed and the period key. The registry gets the run
and the final population with every ancestor (lineage down to generation 0); the content-derived ids make
a re-materialisation record nothing twice. The stored frame is the final population ranked by training
fitness: what `strategy_performance` measures next.
"""
# No `from __future__ import annotations` here: Dagster inspects the assets' context annotations at runtime.

import dataclasses
import json
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MetadataValue,
    Output,
    TimeWindowPartitionsDefinition,
    asset,
)

from emp_pipeline.defs.partitions import period_bars_mapping
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.backtest import MarketArrays, market_arrays
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.evolution import EvolutionResult, StrategyRecord, backtest_window, evolve_fold
from emp_pipeline.domain.genome import (
    GENOME_VERSION,
    FeaturePanel,
    feature_panel,
    genome_to_dict,
    genome_to_json,
)
from emp_pipeline.domain.instruments import InstrumentMeta
from emp_pipeline.domain.rule_text import strategy_text
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.walkforward import WalkForwardFold, build_fold, period_bounds
from emp_pipeline.domain.walkforward_study import (
    lineage_closure,
    period_seed,
    population_deflation,
    search_trials,
)
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.records import NewStrategy, PerformanceEntry
from emp_pipeline.registry.research import (
    finish_evolution_run,
    record_evolution_run,
    record_performance,
    record_strategies,
    strategy_content_id,
)
from emp_pipeline.reporting.formatting import markdown_tables, ratio_metadata
from emp_pipeline.reporting.walk_forward_plots import fitness_per_generation_png, png_markdown
from emp_pipeline.storage.datasets import EVOLVED_STRATEGIES, PERCEPTION_INPUTS

GROUP = "research"
OWNERS = ["team:research"]
FREQUENCY = "monthly"
# The GA names how a strategy was born in its own words; the registry has a fixed vocabulary.
REGISTRY_OPERATORS = {
    "random": "seed",
    "immigrant": "immigrant",
    "crossover": "crossover",
    "mutation": "mutation",
    "crossover+mutation": "crossover",
}
TOP_SHOWN = 10
EVOLVED_COLUMNS = (
    "date",
    "period",
    "rank",
    "strategy_id",
    "fitness",
    "generation",
    "operator",
    "genome",
    "evolution_run_id",
    "seed",
    "periods_per_year",
    "search_trials",
    "search_sharpe_variance",
)


class LookAheadError(RuntimeError):
    """Training would see data from the period it is tested on; the message says which rows."""


class MissingTrainingDataError(RuntimeError):
    """The stores hold too little history before the period; the message says what to materialize."""


def read_training_frames(
    lake: DataLakeResource, period_start: pd.Timestamp, windows: StudyWindows
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Bars, features and regimes of the training look-back: every row strictly before the period."""
    window_start = period_start - pd.Timedelta(days=windows.training_lookback_days)
    frames = {dataset: lake.read(dataset, window_start, period_start) for dataset in PERCEPTION_INPUTS}
    for dataset, frame in frames.items():
        if frame.empty or "symbol" not in frame.columns:
            raise MissingTrainingDataError(
                f"{dataset.name} holds no rows in [{window_start.date()}, {period_start.date()}): "
                "materialize daily_update_job over that range before evolving this period"
            )
        latest = frame["date"].max()
        if latest >= period_start:
            raise LookAheadError(
                f"{dataset.name} rows up to {latest.date()} were read to train period starting "
                f"{period_start.date()}"
            )
    bars, features, regimes = (frames[dataset] for dataset in PERCEPTION_INPUTS)
    return bars, features, regimes


def stored_instruments(database: DatabaseResource) -> dict[str, InstrumentMeta]:
    """The registry's instruments by symbol: the terms (spread, swaps) every study measurement trades with."""
    with database.session() as session:
        return {meta.symbol: meta for meta in load_instruments(session)}


def walk_forward_grid(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    regimes: pd.DataFrame,
    period: str,
    windows: StudyWindows,
    instruments: Mapping[str, InstrumentMeta],
) -> tuple[FeaturePanel, MarketArrays, WalkForwardFold]:
    """Signals, prices (with the instruments' spreads and swaps, `stored_instruments`) and the period's
    fold on one date x symbol grid.

    Training and out-of-sample measurement both cut the fold here, so they agree on where the period starts
    and on what trading costs.
    """
    panel = feature_panel(features, regimes)
    market = market_arrays(bars, features, dates=panel.dates, symbols=panel.symbols, instruments=instruments)
    fold = build_fold(
        panel.dates,
        period,
        FREQUENCY,
        train_bars=windows.train_bars,
        embargo_bars=windows.embargo_bars,
        min_train_bars=windows.min_train_bars,
    )
    return panel, market, fold


def _history_frame(result: EvolutionResult) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(summary) for summary in result.history])


def _in_sample_metrics(
    record: StrategyRecord, n_train_bars: int, deflation: dict[str, float | int | None]
) -> dict[str, float | int | None]:
    """The GA's training metrics under the registry's names (drawdown non-positive, turnover per bar), with
    the deflated Sharpe of the training track against the period's search."""
    metrics = record.metrics
    return {
        **deflation,
        "sharpe": metrics["sharpe"],
        "max_drawdown": -abs(metrics["max_drawdown"]),
        "total_return": metrics["total_return"],
        "trade_count": int(metrics["trades"]),
        "win_rate": metrics["win_rate"],
        "profit_factor": metrics["profit_factor"],
        "exposure": metrics["exposure"],
        "turnover": metrics["turnover"] / max(n_train_bars, 1),
        "fitness": record.fitness,
    }


def record_run(
    database: DatabaseResource,
    period: str,
    fold: WalkForwardFold,
    last_training_day: pd.Timestamp,
    seed: int,
    config_json: dict[str, object],
    costs: Costs,
    result: EvolutionResult,
    deflation: list[dict[str, float | int | None]],
) -> tuple[str, dict[str, str], int]:
    """Run, lineage and in-sample metrics (``deflation`` per final-population member) in one transaction.

    Returns the run id, the GA's strategy ids mapped to registry ids, and how many strategies were recorded.
    """
    lineage = lineage_closure(result)
    with database.session() as session:
        run_id = record_evolution_run(
            session,
            period=period,
            train_start=fold.train_start.date(),
            train_end=last_training_day.date(),
            embargo_days=fold.embargo_bars,
            seed=seed,
            config=config_json,
            costs=costs,
        )
        registry_ids = {
            record.strategy_id: strategy_content_id(genome_to_dict(record.genome), run_id)
            for record in lineage
        }
        record_strategies(
            session,
            run_id,
            [
                NewStrategy(
                    genome=genome_to_dict(record.genome),
                    genome_version=GENOME_VERSION,
                    generation=record.generation,
                    operator=REGISTRY_OPERATORS[record.operator],
                    fitness=record.fitness,
                    parent_ids=tuple(registry_ids[parent] for parent in record.parent_ids),
                )
                for record in lineage
            ],
        )
        record_performance(
            session,
            [
                PerformanceEntry(
                    strategy_id=registry_ids[record.strategy_id],
                    period=period,
                    kind="in_sample",
                    start=fold.train_start.date(),
                    end=last_training_day.date(),
                    metrics=_in_sample_metrics(record, fold.n_train_bars, deflated),
                )
                for record, deflated in zip(result.final_population, deflation, strict=True)
            ],
        )
        finish_evolution_run(session, run_id)
    return run_id, registry_ids, len(lineage)


def evolved_strategies(
    context: AssetExecutionContext,
    lake: DataLakeResource,
    database: DatabaseResource,
    walk_forward: WalkForwardResource,
) -> Iterator:
    period = context.partition_key
    period_start, _ = period_bounds(period, FREQUENCY)
    windows = walk_forward.windows()
    bars, features, regimes = read_training_frames(lake, period_start, windows)
    panel, market, fold = walk_forward_grid(
        bars, features, regimes, period, windows, stored_instruments(database)
    )
    training_days = panel.dates[(panel.dates >= fold.train_start) & (panel.dates < fold.train_end)]
    last_training_day = training_days[-1]
    config = walk_forward.evolution_config()
    seed = period_seed(walk_forward.seed, period)
    result = evolve_fold(panel, market, fold, config, seed)
    trials = search_trials(result, config.periods_per_year)
    _, training = backtest_window(
        [record.genome for record in result.final_population],
        panel,
        market,
        fold.train_start,
        fold.train_end,
        config,
    )

    config_json = json.loads(json.dumps(dataclasses.asdict(config)))
    del config_json["costs"]  # recorded in the run's own column (record_run), part of its identity there
    config_json.update(frequency=FREQUENCY, train_bars=windows.train_bars)
    if config.fitness == "full_window":
        # The fitness every run used before there was a choice: such runs keep their content ids.
        del config_json["fitness"], config_json["inner_folds"]
    run_id, registry_ids, recorded = record_run(
        database,
        period,
        fold,
        last_training_day,
        seed,
        config_json,
        config.costs,
        result,
        population_deflation(training, trials),
    )

    survivors = pd.DataFrame(
        {
            "date": pd.Series([period_start] * len(result.final_population), dtype="datetime64[ns, UTC]"),
            "period": period,
            "rank": range(len(result.final_population)),
            "strategy_id": [registry_ids[record.strategy_id] for record in result.final_population],
            "fitness": [record.fitness for record in result.final_population],
            "generation": [record.generation for record in result.final_population],
            "operator": [record.operator for record in result.final_population],
            "genome": [genome_to_json(record.genome) for record in result.final_population],
            "evolution_run_id": run_id,
            "seed": seed,
            "periods_per_year": config.periods_per_year,
            "search_trials": trials.count,
            "search_sharpe_variance": trials.sharpe_variance,
        }
    ).loc[:, list(EVOLVED_COLUMNS)]
    history = _history_frame(result)
    png = fitness_per_generation_png(history, title=f"Fitness per generation, period {period}")
    top = survivors.head(TOP_SHOWN).loc[:, ["rank", "strategy_id", "fitness", "generation", "operator"]]
    top["rules"] = [strategy_text(record.genome) for record in result.final_population[:TOP_SHOWN]]
    train_window = (
        f"{fold.train_start.date()} .. {last_training_day.date()} ({fold.n_train_bars} bars, "
        f"embargo {fold.embargo_bars} bars, period starts {period_start.date()})"
    )
    yield Output(
        survivors,
        metadata={
            "rows": len(survivors),
            "best_fitness": ratio_metadata(result.best.fitness),
            "population_size": config.population_size,
            "generations": config.generations,
            "recorded_strategies": recorded,
            "search_trials": MetadataValue.int(trials.count),
            "search_sharpe_std_per_bar": ratio_metadata(np.sqrt(trials.sharpe_variance), 4),
            "dsr_hurdle_sharpe_per_bar": ratio_metadata(trials.expected_maximum_sharpe, 4),
            "train_window": train_window,
            "seed": seed,
            "evolution_run_id": run_id,
            "fitness_per_generation": MetadataValue.md(png_markdown(png, "fitness per generation")),
            "generation_history": MetadataValue.md(markdown_tables(history, keys=("generation",))),
            "top_strategies": MetadataValue.md(
                markdown_tables(top, keys=("rank",), id_columns=("strategy_id",))
            ),
        },
    )
    latest_read = max(frame["date"].max() for frame in (bars, features, regimes))
    embargo_respected = fold.n_train_bars > 0 and bool(
        (panel.dates[(panel.dates > last_training_day)] < period_start).sum() >= fold.embargo_bars
    )
    yield AssetCheckResult(
        check_name="trained_before_period",
        passed=bool(latest_read < period_start and last_training_day < period_start and embargo_respected),
        severity=AssetCheckSeverity.ERROR,
        description=train_window,
        metadata={
            "last_training_day": str(last_training_day.date()),
            "latest_row_read": str(latest_read.date()),
            "period_start": str(period_start.date()),
        },
    )


def evolved_strategies_asset(
    partitions_def: TimeWindowPartitionsDefinition,
    windows: StudyWindows,
    bar_partitions_def: TimeWindowPartitionsDefinition,
) -> AssetsDefinition:
    """`evolved_strategies` over the partitions `build_definitions` made from the settings, reading the
    look-back its `windows` need (the same windows the WalkForwardResource hands the asset)."""
    # The bar partitions of the months before the period, never the period's own (the read uses days).
    months = -(-windows.training_lookback_days // 28)
    training = period_bars_mapping(partitions_def, bar_partitions_def, start_offset=-months, end_offset=-1)
    return asset(
        partitions_def=partitions_def,
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"python", "pandas", "sql"},
        owners=OWNERS,
        deps=[AssetDep(dataset.name, partition_mapping=training) for dataset in PERCEPTION_INPUTS],
        check_specs=[
            AssetCheckSpec(
                "trained_before_period",
                asset=EVOLVED_STRATEGIES.name,
                blocking=True,
                description=f"every training bar lies {windows.embargo_bars} bars or more before the "
                "period, and nothing read for training is dated in or after it",
            )
        ],
        description="One genetic-algorithm run per walk-forward period (monthly): trained on the "
        f"{windows.train_bars} bars ending {windows.embargo_bars} bars before the period, "
        "with a seed derived from EMP_EVOLUTION_SEED and the period. The registry gets the run and the final "
        "population with its lineage; the stored frame is that population ranked by training fitness.",
    )(evolved_strategies)
