"""Fixtures shared by every test layer."""

from __future__ import annotations

import pytest

from emp_pipeline.settings import Settings


@pytest.fixture
def embedded_settings(tmp_path) -> Settings:
    """The embedded defaults (sample data, SQLite registry, paper broker) rooted in a temporary home."""
    return Settings.from_env({"EMP_HOME": str(tmp_path / "emp_home")})
