"""The perception concern: sensory features and market regimes, with the FRED source and the classifier."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from emp_pipeline.defs.partitions import PipelinePartitions
from emp_pipeline.defs.perception.assets import market_regimes_asset, sensory_features_asset
from emp_pipeline.defs.perception.resources import FredResource, RegimeClassifierResource
from emp_pipeline.environment import configured_study_windows
from emp_pipeline.settings import Settings


def perception_definitions(settings: Settings, partitions: PipelinePartitions) -> Definitions:
    windows = configured_study_windows(settings.data, settings.research)
    return Definitions(
        assets=[
            sensory_features_asset(partitions.bars, partitions.chunking),
            market_regimes_asset(partitions.bars, partitions.chunking),
        ],
        resources={
            # The FRED key only as EnvVar, and only when it is set (else WHY uses no FRED).
            "fred": FredResource(api_key=EnvVar("FRED_API_KEY") if settings.data.fred_api_key else None),
            "regime_classifier": RegimeClassifierResource(
                kind=settings.research.regime_classifier, periods_per_year=windows.periods_per_year
            ),
        },
    )
