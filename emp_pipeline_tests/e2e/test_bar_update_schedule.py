"""Live by the bar needs the bar first: on an intraday universe a schedule re-materializes, after each bar's
close, the trading day that holds that bar; daily universes keep only the evening update."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import build_schedule_context

from emp_pipeline.definitions import build_definitions
from emp_pipeline.defs.market_data.schedules import bar_close_cron
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, UNIVERSES_DIR, Settings


def _open_ended(tmp_path: Path, universe: Path) -> Settings:
    text = "\n".join(line for line in universe.read_text().splitlines() if not line.startswith("end_date:"))
    (tmp_path / "open.yaml").write_text(text + "\n")
    return Settings.from_env({"EMP_HOME": str(tmp_path), "EMP_UNIVERSE_FILE": str(tmp_path / "open.yaml")})


@pytest.mark.parametrize(
    ("timeframe", "cron"),
    [
        (Timeframe.M1, "* * * * *"),
        (Timeframe.M5, "1-59/5 * * * *"),
        (Timeframe.M30, "1-59/30 * * * *"),
        (Timeframe.H1, "1 * * * *"),
        (Timeframe.H4, "1 */4 * * *"),
    ],
)
def test_the_update_ticks_a_minute_after_each_bar_closes(timeframe: Timeframe, cron: str) -> None:
    assert bar_close_cron(timeframe) == cron


def test_each_closed_h1_bar_updates_the_fx_day_that_holds_it(tmp_path) -> None:
    defs = build_definitions(_open_ended(tmp_path, UNIVERSES_DIR / "sample_fx_h1.yaml"))
    schedule = defs.resolve_schedule_def("bar_update_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("1 * * * *", "UTC")

    def partition_at(when: datetime) -> str:
        with build_schedule_context(
            scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context:
            (request,) = schedule.evaluate_tick(context).run_requests
        return request.partition_key

    # FX days end 17:00 New York (21:00 UTC in summer): the 20:00 UTC bar closes the day of 2025-06-10,
    # the 21:00 bar is the first of the next day.
    assert partition_at(datetime(2025, 6, 10, 15, 1, tzinfo=UTC)) == "2025-06-09-17:00"
    assert partition_at(datetime(2025, 6, 10, 21, 1, tzinfo=UTC)) == "2025-06-09-17:00"
    assert partition_at(datetime(2025, 6, 10, 22, 1, tzinfo=UTC)) == "2025-06-10-17:00"


def test_daily_universes_have_no_bar_update(tmp_path) -> None:
    defs = build_definitions(_open_ended(tmp_path, Path(SAMPLE_UNIVERSE_FILE)))
    names = {schedule.name for schedule in defs.schedules}
    assert "daily_update_schedule" in names and "bar_update_schedule" not in names
