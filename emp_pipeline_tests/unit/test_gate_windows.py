"""The promotion gates judge a span of time, not a fixed count of bars: a year of the universe's timeframe."""

from __future__ import annotations

import argparse

from emp_pipeline.defs.perception.resources import RegimeClassifierResource
from emp_pipeline.defs.research.promotion_gates import PromotionGatesResource
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.timeframes import Timeframe, periods_per_year
from emp_pipeline.parity.commands import _gate_settings, add_parity_commands
from emp_pipeline.parity.gates import GateSettings
from emp_pipeline.settings import UNIVERSES_DIR, Settings

FX_H1_YEAR = periods_per_year(Timeframe.H1, CALENDAR_24X5)


def test_the_default_window_is_a_year_of_bars_of_the_timeframe() -> None:
    assert GateSettings().window == 252  # daily exchange bars, as before
    assert GateSettings(periods_per_year=FX_H1_YEAR).window == FX_H1_YEAR == 6240
    assert GateSettings(window_bars=60, periods_per_year=FX_H1_YEAR).window == 60  # an explicit count wins
    resource = PromotionGatesResource()
    hourly = resource.gate_settings(RegimeClassifierResource(kind="rules", periods_per_year=FX_H1_YEAR))
    assert hourly.window == FX_H1_YEAR and hourly.periods_per_year == FX_H1_YEAR


def test_emp_parity_on_an_hourly_universe_judges_a_year_of_hours(tmp_path) -> None:
    settings = Settings.from_env(
        {
            "EMP_HOME": str(tmp_path),
            "EMP_UNIVERSE_FILE": str(UNIVERSES_DIR / "sample_fx_h1.yaml"),
            "EMP_TIMEFRAME": "H1",
        }
    )
    parser = argparse.ArgumentParser(prog="emp")
    add_parity_commands(parser.add_subparsers(dest="command", required=True))
    gate = _gate_settings(parser.parse_args(["parity"]), settings)
    assert (gate.window, gate.periods_per_year) == (FX_H1_YEAR, FX_H1_YEAR)
    assert _gate_settings(parser.parse_args(["parity", "--bars=500"]), settings).window == 500
    sample = Settings.from_env({"EMP_HOME": str(tmp_path)})  # the bundled daily sample
    daily = _gate_settings(parser.parse_args(["lookahead", "some-id"]), sample)
    assert daily.window == 252
