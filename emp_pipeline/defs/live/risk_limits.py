"""The environment's risk limits for the live job and the parity gate, as fractions of account equity."""

from __future__ import annotations

from dagster import ConfigurableResource

from emp_pipeline.domain.risk import RiskLimits


class RiskLimitsResource(ConfigurableResource):
    """EMP_MAX_POSITION_FRACTION, EMP_MAX_GROSS_EXPOSURE and EMP_DAILY_LOSS_LIMIT (checked at start-up): the
    ceilings of every live run and the limits of the parity gate's replay."""

    max_position_fraction: float = 0.25
    max_gross_exposure: float = 1.0
    daily_loss_limit: float = 0.05

    def ceilings(self) -> RiskLimits:
        """The limits a run may only tighten (domain.risk.tightened_limits), never raise."""
        return RiskLimits(
            max_position_fraction=self.max_position_fraction,
            max_gross_exposure=self.max_gross_exposure,
            daily_loss_limit=self.daily_loss_limit,
        )
