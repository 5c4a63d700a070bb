"""`emp demo --timeframe`: the home, study settings and paper-trading span of each timeframe's demo.

D1 is the daily demo as it always was. H1 is the hourly EURUSD study on the bundled 2017 sample
(data/universes/sample_fx_h1.yaml), offline whatever EMP_DATA_SOURCE says, in a home of its own,
EMP_HOME/h1: its lake, SQLite registry, Dagster instance and settings file never mix with the daily demo's
(whose champions its live ticks would otherwise trade). Its settings file holds the study's variables (the
training span, the seed); the data ones cannot live there (settings.STUDY_VARIABLES), so other commands on
the hourly study take them from the environment; `make ui TIMEFRAME=H1` sets them from DEMO_STUDIES.

One year of hours cannot hold the default three-year training window, so it trains on three months: the
first walk-forward period is 2017-05, the newest 2017-11 (December is not whole). Paper trading is one
live_execution_job run per bar, about a second each on a busy machine: the daily demo ticks every bar from
its newest period's start (~20), the hourly one the last 48 of them (the sample's last two FX days, bars
after the study as live trading would meet them) unless `--paper-bars` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import (
    SETTINGS_FILE_NAME,
    UNIVERSES_DIR,
    Settings,
    SettingsError,
    read_settings_file,
)


@dataclass(frozen=True)
class DemoStudy:
    """What the demo of one timeframe runs on: a folder of EMP_HOME, its data and study variables, and the
    newest period's last bars it paper-trades."""

    home: str
    data: Mapping[str, str]
    study: Mapping[str, str]
    paper_bars: int


DEMO_STUDIES: dict[Timeframe, DemoStudy] = {
    Timeframe.H1: DemoStudy(
        home="h1",
        data={
            "EMP_DATA_SOURCE": "sample",
            "EMP_UNIVERSE_FILE": str(UNIVERSES_DIR / "sample_fx_h1.yaml"),
            "EMP_TIMEFRAME": "H1",
        },
        study={
            "EMP_WALK_FORWARD_TRAIN_MONTHS": "3",
            # As for the daily demo (demo.DEMO_SETTINGS): with 40 x 8 on 1,560 hours, whether the newest
            # period's picks trade out of sample is the draw's luck. On 2017-11 seeds 1, 2, 4 and 5 promote
            # no champion (their picks lose or do not trade), 3 promotes three.
            "EMP_EVOLUTION_SEED": "3",
        },
        paper_bars=48,
    ),
}
DEMO_TIMEFRAMES: tuple[Timeframe, ...] = (Timeframe.D1, *DEMO_STUDIES)


def _study(timeframe: Timeframe | str) -> DemoStudy | None:
    timeframe = Timeframe.parse(timeframe)
    if timeframe is not Timeframe.D1 and timeframe not in DEMO_STUDIES:
        raise SettingsError(
            f"emp demo has no bundled {timeframe} sample; use --timeframe {' or '.join(DEMO_TIMEFRAMES)}"
        )
    return DEMO_STUDIES.get(timeframe)


def demo_home(settings: Settings, timeframe: Timeframe | str) -> Path:
    """EMP_HOME for the daily demo, its folder for another timeframe's.

    A data folder or registry set explicitly (EMP_DATA_DIR, EMP_DATABASE_URL) would be shared by both
    studies, so another timeframe's demo refuses them by name.
    """
    study = _study(timeframe)
    if study is None:
        return settings.home
    shared = [
        name
        for name, value, default in (
            ("EMP_DATA_DIR", settings.data_dir, settings.home / "data"),
            ("EMP_DATABASE_URL", settings.database_url, f"sqlite:///{settings.home / 'registry.sqlite'}"),
        )
        if value != default
    ]
    if shared:
        raise SettingsError(
            f"emp demo --timeframe {timeframe} keeps its data and registry under EMP_HOME/{study.home}; "
            f"unset {' and '.join(shared)} (a lake or registry shared with the daily demo would mix their "
            "studies and champions)"
        )
    return settings.home / study.home


def demo_study_variables(timeframe: Timeframe | str) -> dict[str, str]:
    """The variables the demo of `timeframe` adds to its settings file (none for D1)."""
    study = _study(timeframe)
    return dict(study.study) if study else {}


def demo_data_variables(timeframe: Timeframe | str) -> dict[str, str]:
    """The data variables of the demo of `timeframe` (none for D1), which settings files cannot hold."""
    study = _study(timeframe)
    return dict(study.data) if study else {}


def demo_environment(home: Path, timeframe: Timeframe | str, environ: Mapping[str, str]) -> dict[str, str]:
    """The whole environment the demo of another timeframe runs with: its home's settings file, the process
    environment over it (as Settings.from_env reads them), then its home and study variables, which it is."""
    from_environment = {name: value for name, value in environ.items() if value.strip()}
    return {
        **read_settings_file(home / SETTINGS_FILE_NAME),
        **from_environment,
        "EMP_HOME": str(home),
        **demo_data_variables(timeframe),
        **demo_study_variables(timeframe),
    }


def demo_ui_command(home: Path, timeframe: Timeframe | str) -> str:
    """The command that opens the demo's Dagster instance in `dagster dev`: `make ui`, which gives every home
    the root dagster.yaml's instance settings, with TIMEFRAME for another timeframe's study (its home and
    variables) and EMP_HOME when the demo's is not the default ./.emp."""
    study = _study(timeframe)
    emp_home = home.parent if study else home  # demo_home: a study's home is a folder of EMP_HOME
    words = ["make ui"]
    if study:
        words.append(f"TIMEFRAME={Timeframe.parse(timeframe)}")
    if emp_home.resolve() != (Path.cwd() / ".emp").resolve():
        words.append(f"EMP_HOME={emp_home}")
    return " ".join(words)


def demo_paper_bars(timeframe: Timeframe | str) -> int | None:
    """How many of the newest period's last bars the demo of `timeframe` paper-trades (None: all)."""
    study = _study(timeframe)
    return study.paper_bars if study else None
