"""The walk-forward research resource: how each period's GA runs and the gates a champion must pass."""

from __future__ import annotations

from dagster import ConfigurableResource

from emp_pipeline.domain.costs import DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS, Costs
from emp_pipeline.domain.evolution import EvolutionConfig
from emp_pipeline.domain.headlines import MIN_MEANINGFUL_TRADES
from emp_pipeline.domain.promotion import PromotionGates
from emp_pipeline.domain.study_windows import DEFAULT_TRAIN_MONTHS, StudyWindows


class WalkForwardResource(ConfigurableResource):
    """How each period's GA runs and the gates a champion must pass out of sample (from Settings).

    `fee_bps` and `slippage_bps` are the costs a new run is measured with (EMP_FEE_BPS, EMP_SLIPPAGE_BPS);
    the run records them and its strategies keep them, whatever these become later."""

    seed: int = 7
    population_size: int = 200
    generations: int = 50
    fitness: str = "full_window"
    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS
    gate_min_sharpe: float = 0.5
    gate_min_deflated_sharpe: float = 0.5
    gate_max_drawdown: float = 0.15
    gate_min_trades: int = 2
    gate_max_null_p_value: float = 0.05
    null_genomes: int = 1000
    max_champions: int = 3
    # Fewer trades than this behind a reported Sharpe and the report says "not meaningful" instead.
    min_meaningful_trades: int = MIN_MEANINGFUL_TRADES
    # The universe's bars per year and training span (environment.configured_study_windows).
    periods_per_year: int = 252
    train_months: int = DEFAULT_TRAIN_MONTHS
    # The sizing gene's ceiling: the live limits in force (risk.position_fraction_ceiling of EMP_MAX_*).
    max_position_fraction: float = 1.0

    def windows(self) -> StudyWindows:
        return StudyWindows(self.periods_per_year, self.train_months)

    def evolution_config(self) -> EvolutionConfig:
        return EvolutionConfig(
            population_size=self.population_size,
            generations=self.generations,
            fitness=self.fitness,
            periods_per_year=float(self.periods_per_year),
            costs=Costs(fee_bps=self.fee_bps, slippage_bps=self.slippage_bps),
            max_position_fraction=self.max_position_fraction,
        ).validate()

    def gates(self) -> PromotionGates:
        return PromotionGates(
            min_sharpe=self.gate_min_sharpe,
            min_deflated_sharpe=self.gate_min_deflated_sharpe,
            max_drawdown=self.gate_max_drawdown,
            min_trades=self.gate_min_trades,
            max_null_p_value=self.gate_max_null_p_value,
        ).validate()
