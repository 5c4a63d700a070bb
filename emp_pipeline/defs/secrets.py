"""How a secret (or a URL that may hold one) reaches a resource: as an EnvVar reference, not plain config."""

from __future__ import annotations

import os

from dagster import EnvVar


def env_var_or(variable: str, default: str | None) -> str | EnvVar | None:
    """EnvVar when the variable is set, so the value is resolved at run time and never stored in config."""
    return EnvVar(variable) if os.environ.get(variable) else default
