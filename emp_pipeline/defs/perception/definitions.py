"""The perception concern: sensory features and market regimes, with the FRED source and the classifier."""

from __future__ import annotations

from dagster import Definitions, EnvVar, load_asset_checks_from_modules, load_assets_from_modules

from emp_pipeline.defs.perception import assets
from emp_pipeline.defs.perception.resources import FredResource, RegimeClassifierResource
from emp_pipeline.settings import Settings


def perception_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=load_assets_from_modules([assets]),
        asset_checks=load_asset_checks_from_modules([assets]),
        resources={
            # The FRED key only as EnvVar, and only when it is set (else WHY uses no FRED).
            "fred": FredResource(api_key=EnvVar("FRED_API_KEY") if settings.fred_api_key else None),
            "regime_classifier": RegimeClassifierResource(kind=settings.regime_classifier),
        },
    )
