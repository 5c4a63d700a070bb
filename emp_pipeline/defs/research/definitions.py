"""The research concern: the walk-forward study (evolve, measure, report) and gated champions."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from emp_pipeline.defs.research import champions, performance, strategies
from emp_pipeline.defs.research.jobs import evolution_job, research_job
from emp_pipeline.defs.research.promotion_gates import PromotionGatesResource, promotion_gate_checks
from emp_pipeline.defs.research.resources import WalkForwardResource
from emp_pipeline.defs.research.schedules import evolution_schedule
from emp_pipeline.settings import Settings

ASSET_MODULES = [strategies, performance, champions]


def research_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=[*load_asset_checks_from_modules(ASSET_MODULES), *promotion_gate_checks],
        jobs=[evolution_job, research_job],
        schedules=[evolution_schedule],
        resources={
            "walk_forward": WalkForwardResource(
                seed=settings.evolution_seed,
                population_size=settings.evolution_population,
                generations=settings.evolution_generations,
                gate_min_sharpe=settings.gate_min_sharpe,
                gate_min_deflated_sharpe=settings.gate_min_deflated_sharpe,
                gate_max_drawdown=settings.gate_max_drawdown,
                gate_min_trades=settings.gate_min_trades,
                gate_max_null_p_value=settings.gate_max_null_p_value,
                null_genomes=settings.null_genomes,
                max_champions=settings.max_champions,
            ),
            "promotion_gates": PromotionGatesResource(),
        },
    )
