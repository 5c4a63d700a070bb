"""The research concern: the walk-forward study (evolve, measure, report) and gated champions."""

from __future__ import annotations

from dagster import Definitions

from emp_pipeline.defs.partitions import PipelinePartitions
from emp_pipeline.defs.research.champions import champion_gate_checks, champion_strategies
from emp_pipeline.defs.research.jobs import evolution_job, research_job
from emp_pipeline.defs.research.performance import strategy_performance_asset, walk_forward_report
from emp_pipeline.defs.research.promotion_gates import PromotionGatesResource, promotion_gate_checks
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.research.schedules import evolution_schedule
from emp_pipeline.defs.research.strategies import evolved_strategies_asset
from emp_pipeline.domain.risk import position_fraction_ceiling
from emp_pipeline.environment import configured_study_windows
from emp_pipeline.settings import Settings


def research_definitions(settings: Settings, partitions: PipelinePartitions) -> Definitions:
    research, gates = settings.research, settings.gates
    windows = configured_study_windows(settings.data, research)
    return Definitions(
        assets=[
            evolved_strategies_asset(partitions.walk_forward, windows, partitions.bars),
            strategy_performance_asset(partitions.walk_forward, partitions.bars),
            walk_forward_report,
            champion_strategies,
        ],
        asset_checks=[*champion_gate_checks, *promotion_gate_checks],
        jobs=[evolution_job, research_job],
        schedules=[evolution_schedule],
        resources={
            "walk_forward": WalkForwardResource(
                seed=research.seed,
                population_size=research.population,
                generations=research.generations,
                fitness=research.fitness,
                fee_bps=research.costs.fee_bps,
                slippage_bps=research.costs.slippage_bps,
                gate_min_sharpe=gates.min_sharpe,
                gate_min_deflated_sharpe=gates.min_deflated_sharpe,
                gate_max_drawdown=gates.max_drawdown,
                gate_min_trades=gates.min_trades,
                gate_max_null_p_value=gates.max_null_p_value,
                null_genomes=research.null_genomes,
                max_champions=gates.max_champions,
                periods_per_year=windows.periods_per_year,
                train_months=windows.train_months,
                max_position_fraction=position_fraction_ceiling(settings.live.risk_limits()),
            ),
            "promotion_gates": PromotionGatesResource(
                window_bars=gates.window_bars,
                history_bars=gates.history_bars,
                lookahead_cuts=gates.lookahead_cuts,
                parity_audits=gates.parity_audits,
                seed=gates.audit_seed,
                capital=research.capital,
            ),
        },
    )
