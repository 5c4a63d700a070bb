"""Out-of-sample measurement: each period's strategies on that period, and the study stitched together.

`strategy_performance` backtests a period's evolved population on the period's bars only (signals start
flat on its first bar; indicators are warm because the features were computed causally upstream), records
every strategy's metrics as `out_of_sample` performance in the registry, and stores the per-bar returns.
`walk_forward_report` chains, period after period, the returns of the strategy ranked first by training
fitness (the choice made before the period was seen) into one honest equity curve, and computes the
probability of backtest overfitting over the study (see `domain/walkforward_study.py` for the trials). Its
headline is honest (`domain/headlines.py`): a Sharpe on fewer trades than `min_meaningful_trades` reads "not
meaningful", months whose pick never traded are named, buy-and-hold and the null percentile stand beside it.
"""
# No `from __future__ import annotations` here: Dagster inspects the assets' context annotations at runtime.

import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    Output,
    TimeWindowPartitionsDefinition,
    asset,
)

from emp_pipeline.defs.partitions import period_bars_mapping
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.research.strategies import (
    FREQUENCY,
    GROUP,
    OWNERS,
    stored_instruments,
    walk_forward_grid,
)
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.baselines import fold_baselines
from emp_pipeline.domain.evolution import backtest_fold
from emp_pipeline.domain.genome import genome_from_dict, genome_from_json
from emp_pipeline.domain.headlines import not_meaningful_reason, periods_without_trades
from emp_pipeline.domain.metrics import performance_metrics
from emp_pipeline.domain.rule_text import strategy_text
from emp_pipeline.domain.walkforward import period_bounds
from emp_pipeline.domain.walkforward_study import (
    SearchTrials,
    StitchedBaselines,
    baseline_metrics,
    out_of_sample_metrics,
    period_comparisons,
    period_frame,
    period_seed,
    selected_curve,
    stitched_baselines,
    study_overfitting,
    trial_matrix,
)
from emp_pipeline.registry.records import PerformanceEntry
from emp_pipeline.registry.research import (
    evolution_run_costs,
    evolution_run_ga_text,
    get_strategy,
    performance_records,
    record_performance,
)
from emp_pipeline.reporting.formatting import (
    count_text,
    markdown_tables,
    metric_text,
    percent_metadata,
    percent_text,
    ratio_metadata,
    ratio_text,
)
from emp_pipeline.reporting.walk_forward_plots import equity_drawdown_png, png_markdown
from emp_pipeline.storage.datasets import PERCEPTION_INPUTS, STRATEGY_PERFORMANCE

PBO_MAX_BLOCKS = 16
TOP_SHOWN = 10
COST_METRICS = ("fee_cost", "spread_cost", "swap_cost")
# Ratios of a return series that say nothing when a handful of trades made the series.
TRADE_LIMITED_RATIOS = ("sharpe_ratio", "sortino_ratio", "calmar_ratio")
TABLE_METRICS = (
    "sharpe",
    "deflated_sharpe",
    "dsr_trials",
    "null_percentile",
    "null_p_value",
    "total_return",
    "max_drawdown",
    "trade_count",
    *COST_METRICS,
)


class MissingEvaluationDataError(RuntimeError):
    """A period cannot be measured (no bars in it, or nothing evolved); the message says what to run."""


def _read(lake: DataLakeResource, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.DataFrame]:
    return [lake.read(dataset, start, end) for dataset in PERCEPTION_INPUTS]


def strategy_performance(
    context: AssetExecutionContext,
    evolved_strategies: pd.DataFrame,
    lake: DataLakeResource,
    database: DatabaseResource,
    walk_forward: WalkForwardResource,
) -> Iterator:
    period = context.partition_key
    period_start, period_end = period_bounds(period, FREQUENCY)
    if evolved_strategies.empty:
        raise MissingEvaluationDataError(f"no evolved strategies stored for {period}: materialize them first")
    population = evolved_strategies.sort_values("rank", kind="mergesort").reset_index(drop=True)
    first = population.iloc[0]
    with database.session() as session:  # the costs the population was evolved with, from its run
        costs = evolution_run_costs(session, str(first["evolution_run_id"]))
    # The GA's gene pool settings (for the null model) with the costs the period was evolved with.
    config = dataclasses.replace(
        walk_forward.evolution_config(),
        costs=costs,
        periods_per_year=float(first["periods_per_year"]),
    )
    # The look-back only places the period on the same trading-day grid as its fold; the backtest itself
    # starts flat on the period's first bar and sees nothing before it.
    windows = walk_forward.windows()
    bars, features, regimes = _read(
        lake, period_start - pd.Timedelta(days=windows.training_lookback_days), period_end
    )
    panel, market, fold = walk_forward_grid(
        bars, features, regimes, period, windows, stored_instruments(database)
    )
    if fold.n_test_bars < 1:
        raise MissingEvaluationDataError(
            f"no feature rows dated in {period}: materialize daily_update_job for "
            f"{period_start.date()} .. {(period_end - pd.Timedelta(days=1)).date()} first"
        )
    missing = [column for column in ("search_trials", "search_sharpe_variance") if column not in population]
    if missing:
        raise MissingEvaluationDataError(
            f"evolved_strategies of {period} was stored without {missing} (before trial counts were kept): "
            "re-materialize evolved_strategies for this period"
        )
    trials = SearchTrials(
        count=int(first["search_trials"]), sharpe_variance=float(first["search_sharpe_variance"])
    )
    genomes = [genome_from_json(text) for text in population["genome"]]
    dates, result = backtest_fold(genomes, panel, market, fold, config)
    baselines = fold_baselines(
        panel,
        market,
        fold,
        result.returns,
        config,
        seed=period_seed(walk_forward.seed, f"{period}:null"),
        n_null=walk_forward.null_genomes,
    )
    metrics = [
        {**row, **baseline_metrics(row["sharpe"], baselines, config.periods_per_year)}
        for row in out_of_sample_metrics(result, trials, config.periods_per_year)
    ]
    ids = population["strategy_id"].astype(str).tolist()
    with database.session() as session:
        record_performance(
            session,
            [
                PerformanceEntry(
                    strategy_id=strategy_id,
                    period=period,
                    kind="out_of_sample",
                    start=dates[0].date(),
                    end=dates[-1].date(),
                    metrics=row,
                )
                for strategy_id, row in zip(ids, metrics, strict=True)
            ],
        )

    n_strategies, n_bars = result.returns.shape
    oos = period_frame(
        period, dates, population["rank"].to_numpy(dtype=np.int64), ids, result.returns, baselines
    )

    table = pd.DataFrame(metrics).loc[:, list(TABLE_METRICS)].head(TOP_SHOWN)
    table.insert(0, "training_fitness", population["fitness"].head(TOP_SHOWN).to_numpy())
    table.insert(0, "strategy_id", ids[:TOP_SHOWN])
    table.insert(0, "rank", population["rank"].head(TOP_SHOWN).to_numpy())
    selected = metrics[0]
    sharpes = np.array([row["sharpe"] for row in metrics], dtype=np.float64)
    period_curve = selected_curve(oos)
    png = equity_drawdown_png(period_curve)
    yield Output(
        oos,
        metadata={
            "rows": len(oos),
            "strategies": n_strategies,
            "bars": n_bars,
            "first_day": str(dates[0].date()),
            "last_day": str(dates[-1].date()),
            "selected_strategy": ids[0],
            "selected_sharpe": _sharpe_metadata(
                selected["sharpe"], selected["trade_count"], walk_forward.min_meaningful_trades
            ),
            "selected_trades": MetadataValue.int(int(selected["trade_count"])),
            "selected_deflated_sharpe": ratio_metadata(selected["deflated_sharpe"]),
            "dsr_trials": MetadataValue.int(trials.count),
            "selected_min_track_record_bars": ratio_metadata(selected["min_track_record_bars"], 0)
            if selected["min_track_record_bars"] is not None
            else MetadataValue.text("never"),
            "selected_total_return": percent_metadata(selected["total_return"]),
            # What the selected strategy paid, each cost on its own (fractions of its capital, as percent).
            **{f"selected_{name}": percent_metadata(selected[name]) for name in COST_METRICS},
            "selected_null_percentile": ratio_metadata(selected["null_percentile"], 1),
            "selected_null_p_value": ratio_metadata(selected["null_p_value"], 3),
            "null_genomes": MetadataValue.int(walk_forward.null_genomes),
            "spa_p_value": ratio_metadata(baselines.spa.consistent if baselines.spa is not None else None, 3),
            "buy_and_hold_return": percent_metadata(selected["buy_and_hold_return"]),
            "buy_and_hold_sharpe": ratio_metadata(selected["buy_and_hold_sharpe"]),
            "flat_return": percent_metadata(0.0),
            "best_sharpe": ratio_metadata(np.max(sharpes)),
            "median_sharpe": ratio_metadata(np.median(sharpes)),
            "selected_equity": MetadataValue.md(png_markdown(png, "selected strategy, out of sample")),
            "metrics_by_training_rank": MetadataValue.md(
                markdown_tables(table, keys=("rank", "strategy_id"), id_columns=("strategy_id",))
            ),
        },
    )
    inside = bool(((dates >= period_start) & (dates < period_end)).all())
    after_training = bool(dates[0] >= fold.train_end)
    yield AssetCheckResult(
        check_name="measured_out_of_sample",
        passed=inside and after_training,
        severity=AssetCheckSeverity.ERROR,
        description=f"{n_bars} bars {dates[0].date()} .. {dates[-1].date()}, training ended before "
        f"{fold.train_end.date()}",
        metadata={"inside_period": inside, "after_training": after_training},
    )


def strategy_performance_asset(
    partitions_def: TimeWindowPartitionsDefinition, bar_partitions_def: TimeWindowPartitionsDefinition
) -> AssetsDefinition:
    """`strategy_performance` over the partitions `build_definitions` made from the settings."""
    own_period = period_bars_mapping(partitions_def, bar_partitions_def)
    return asset(
        partitions_def=partitions_def,
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"python", "pandas", "sql"},
        owners=OWNERS,
        deps=[AssetDep(dataset.name, partition_mapping=own_period) for dataset in PERCEPTION_INPUTS],
        check_specs=[
            AssetCheckSpec(
                "measured_out_of_sample",
                asset=STRATEGY_PERFORMANCE.name,
                blocking=True,
                description="every measured bar lies inside the period, after the strategies' training "
                "window",
            )
        ],
        description="The period's evolved strategies backtested on the period's bars only (out of sample); "
        "every strategy's metrics and its deflated Sharpe among the period's trials go to the registry as "
        "out_of_sample performance, the per-bar returns to Parquet.",
    )(strategy_performance)


def _sharpe_metadata(sharpe: object, trades: object, min_trades: int) -> MetadataValue:
    """The Sharpe ratio as a float, or text saying why it is not meaningful (too few trades behind it)."""
    reason = not_meaningful_reason(trades if isinstance(trades, int | float) else None, min_trades)
    return MetadataValue.text(reason) if reason is not None else ratio_metadata(sharpe)


def _picks(database: DatabaseResource, curve: pd.DataFrame) -> pd.DataFrame:
    """Per period of the curve: the pick, its out-of-sample trade count and the fees, spread and swaps it
    paid (None when the registry has no record of them), the GA its period was evolved with (population
    x generations, run seed: a study may mix settings, and the table says so) and its rules in plain
    notation."""
    picks = curve.groupby("period", sort=True)["strategy_id"].first()
    with database.session() as session:
        metrics = {
            (record.period, record.strategy_id): record.metrics
            for record in performance_records(session, strategy_ids=list(set(picks)), kind="out_of_sample")
        }
        strategies = {strategy_id: get_strategy(session, strategy_id) for strategy_id in set(picks)}
        ga = evolution_run_ga_text(session, sorted({s.evolution_run_id for s in strategies.values()}))
    measured = [metrics.get(pick, {}) for pick in picks.items()]
    return pd.DataFrame(
        {
            "period": picks.index,
            "trades": [m.get("trade_count") for m in measured],
            **{name: [m.get(name) for m in measured] for name in COST_METRICS},
            "ga": [ga.get(strategies[strategy_id].evolution_run_id) for strategy_id in picks],
            "rules": [
                strategy_text(genome_from_dict(strategies[strategy_id].genome)) for strategy_id in picks
            ],
        }
    )


def _cost_metadata(picks: pd.DataFrame) -> dict[str, object]:
    """The fees, spread and swaps the picks paid, each on its own: the sum over the periods of each
    period's cost as a fraction of that period's capital (a negative swap cost was credited)."""
    return {
        name: percent_metadata(None if picks[name].isna().any() else float(picks[name].sum()))
        for name in COST_METRICS
    }


def _period_table(comparisons: pd.DataFrame, picks: pd.DataFrame, min_trades: int) -> str:
    """Per period: the pick (with its rules) beside buy-and-hold and its place in the period's null
    distribution; a month without trades is flagged and a Sharpe on too few trades is not printed."""
    table = comparisons.merge(picks, on="period", how="left").astype(object)
    trades = [None if pd.isna(count) else count for count in table["trades"]]
    table["sharpe"] = [
        not_meaningful_reason(count, min_trades) or ratio_text(sharpe)
        for sharpe, count in zip(table["sharpe"], trades, strict=True)
    ]
    table["trades"] = [count_text(count) for count in trades]
    table["no_trades"] = ["NO TRADES" if count == 0 else "" for count in trades]
    table["null_percentile"] = table["null_percentile"].map(lambda value: ratio_text(value, 0))
    table["null_p_value"] = table["null_p_value"].map(lambda value: ratio_text(value, 3))
    for name in COST_METRICS:
        table[name] = table[name].map(lambda value: percent_text(None if pd.isna(value) else value))
    return markdown_tables(table, keys=("period",), id_columns=("strategy_id",))


def _headline_metadata(
    study: dict[str, float | int | None],
    stitched: StitchedBaselines | None,
    picks: pd.DataFrame,
    min_trades: int,
    periods_per_year: float,
) -> dict[str, object]:
    """The stitched pick as a reader should take it: its Sharpe only when enough trades stand behind it,
    the months it never traded, and buy-and-hold and the null model beside it."""
    known = picks["trades"].notna().all()
    total = int(picks["trades"].sum()) if known else None
    reason = not_meaningful_reason(total, min_trades)
    idle = periods_without_trades(dict(zip(picks["period"], picks["trades"], strict=True)))
    sharpe = reason if reason is not None else f"{ratio_text(study.get('sharpe_ratio'))} on {total} trades"
    sentence = f"pick Sharpe {sharpe} over {len(picks)} months"
    if stitched is not None:
        held = performance_metrics(stitched.buy_and_hold, periods_per_year=periods_per_year)
        null = stitched.pick_against_null
        sentence += (
            f"; buy-and-hold Sharpe {ratio_text(held.sharpe_ratio)}; null percentile "
            f"{ratio_text(null.percentile, 1)} (p {ratio_text(null.p_value, 3)})"
        )
    sentence += f"; {len(idle)} month{'' if len(idle) == 1 else 's'} without trades"
    return {
        "sharpe": MetadataValue.text(reason)
        if reason is not None
        else ratio_metadata(study.get("sharpe_ratio")),
        "sharpe_meaningful": reason is None,
        "pick_trades": MetadataValue.int(total) if total is not None else MetadataValue.text("unknown"),
        "min_meaningful_trades": MetadataValue.int(min_trades),
        "months_without_trades": MetadataValue.int(len(idle)),
        "months_without_trades_list": MetadataValue.text(", ".join(idle) or "none"),
        "headline": MetadataValue.text(sentence),
    }


@asset(
    io_manager_key="frame_io_manager",
    group_name=GROUP,
    kinds={"python", "pandas", "parquet"},
    owners=OWNERS,
    ins={"measured": AssetIn(STRATEGY_PERFORMANCE.name, partition_mapping=AllPartitionMapping())},
    description="The walk-forward study: every measured period's out-of-sample returns of the strategy "
    "ranked first by training fitness, chained into one equity curve (stored as Parquet), with the "
    "probability of backtest overfitting (CSCV, Bailey et al. 2016) over the study's trials, and an honest "
    "headline: the Sharpe only when enough trades stand behind it, the months without trades, "
    "buy-and-hold and the null percentile beside it; each period's pick with its rules. A backfill of "
    "evolved_strategies + strategy_performance over N periods, then this, is an N-period walk-forward study.",
)
def walk_forward_report(
    context: AssetExecutionContext,
    measured: pd.DataFrame,
    walk_forward: WalkForwardResource,
    database: DatabaseResource,
) -> Iterator:
    if measured.empty or "rank" not in measured.columns:
        raise MissingEvaluationDataError(
            "no strategy_performance partition is materialized: run evolution_job for some periods first"
        )
    oos = measured
    # The universe's bars per year: the report annualises as the periods were measured.
    per_year = float(walk_forward.periods_per_year)
    curve = selected_curve(oos)
    comparisons = period_comparisons(oos, curve, per_year)
    stitched = stitched_baselines(oos, curve, per_year)
    matrix = trial_matrix(oos)
    overfitting = study_overfitting(matrix, PBO_MAX_BLOCKS, per_year)
    study = performance_metrics(curve["return"].to_numpy(dtype=np.float64), periods_per_year=per_year)
    study = study.as_dict(finite_only=True)
    min_trades = walk_forward.min_meaningful_trades
    picks = _picks(database, curve)
    headline = _headline_metadata(study, stitched, picks, min_trades, per_year)
    ratio_note = None if headline["sharpe_meaningful"] else headline["sharpe"].value
    metrics_table = pd.DataFrame(
        [
            {
                "metric": name,
                "value": ratio_note
                if name in TRADE_LIMITED_RATIOS and ratio_note
                else metric_text(name, value),
            }
            for name, value in study.items()
            if value is not None
        ]
    )
    png = equity_drawdown_png(curve)
    pbo_metadata: dict[str, object] = (
        {
            "pbo": ratio_metadata(overfitting.pbo),
            "pbo_blocks": overfitting.n_blocks,
            "pbo_combinations": overfitting.n_combinations,
            "pbo_trials": overfitting.n_trials,
            "pbo_details": MetadataValue.json(overfitting.summary()),
        }
        if overfitting is not None
        else {"pbo": ratio_metadata(None), "pbo_note": f"too few bars ({len(matrix)}) or trials for CSCV"}
    )
    context.log.info(
        "walk-forward study: %d periods, %d bars, total return %.2f%%, PBO %s",
        curve["period"].nunique(),
        len(curve),
        100.0 * study["total_return"],
        f"{overfitting.pbo:.3f}" if overfitting is not None else "n/a",
    )
    yield Output(
        curve,
        metadata={
            "rows": len(curve),
            "periods": int(curve["period"].nunique()),
            "first_day": str(curve["date"].min().date()),
            "last_day": str(curve["date"].max().date()),
            "total_return": percent_metadata(study["total_return"]),
            "max_drawdown": percent_metadata(study["max_drawdown"]),
            **headline,
            **_cost_metadata(picks),
            **pbo_metadata,
            "equity_and_drawdown": MetadataValue.md(png_markdown(png, "walk-forward equity and drawdown")),
            "metrics": MetadataValue.md(metrics_table.to_markdown(index=False)),
            "periods_per_year": per_year,
            **_stitched_metadata(stitched, per_year),
            "periods_table": MetadataValue.md(_period_table(comparisons, picks, min_trades)),
        },
    )


def _stitched_metadata(stitched: StitchedBaselines | None, periods_per_year: float) -> dict[str, object]:
    """The stitched pick beside stitched buy-and-hold, flat and the stitched null model."""
    if stitched is None:
        return {
            "baselines_note": "some periods were measured before baselines were kept: re-materialize them"
        }
    held = performance_metrics(stitched.buy_and_hold, periods_per_year=periods_per_year)
    return {
        "buy_and_hold_total_return": percent_metadata(held.total_return),
        "buy_and_hold_sharpe": ratio_metadata(held.sharpe_ratio),
        "flat_total_return": percent_metadata(0.0),
        "null_percentile": ratio_metadata(stitched.pick_against_null.percentile, 1),
        "null_p_value": ratio_metadata(stitched.pick_against_null.p_value, 3),
        "null_median_sharpe": ratio_metadata(np.median(stitched.null_sharpes)),
    }
