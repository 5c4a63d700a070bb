"""The home's settings file (EMP_HOME/settings.env): the study's settings that `emp demo`, `make ui` and
`emp run` share, under the environment, checked like it."""

import pytest

from emp_pipeline.demo import DEMO_SETTINGS, DEMO_SETTINGS_TEXT, write_demo_settings
from emp_pipeline.settings import SETTINGS_FILE_NAME, STUDY_VARIABLES, Settings, SettingsError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home in the process environment, with none of the study's variables set there."""
    for name in STUDY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    return tmp_path


def test_the_file_sets_the_study_settings_and_the_environment_wins(home, monkeypatch):
    (home / SETTINGS_FILE_NAME).write_text(
        "# a comment\n\nEMP_EVOLUTION_POPULATION=40\nEMP_EVOLUTION_GENERATIONS = 8\nEMP_GATE_MIN_TRADES=1\n"
    )
    monkeypatch.setenv("EMP_EVOLUTION_GENERATIONS", "12")
    monkeypatch.setenv("EMP_GATE_MIN_TRADES", "")  # empty means unset, as everywhere: the file's value holds

    settings = Settings.from_env()

    assert (settings.research.population, settings.research.generations) == (40, 12)
    assert settings.gates.min_trades == 1
    assert settings.research.seed == 7  # not in the file: the default
    # A mapping passed in is the whole environment: a developer's settings file never reaches a test.
    assert Settings.from_env({"EMP_HOME": str(home)}).research.population == 200


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("EMP_DATABASE_URL=sqlite:///x.db", "line 2: EMP_DATABASE_URL cannot be set in the settings file"),
        ("EMP_TOKEN_KEY=secret", "EMP_TOKEN_KEY cannot be set in the settings file"),
        ("EMP_EVOLUTION_SEED", "line 2: 'EMP_EVOLUTION_SEED' is not NAME=value"),
        ("EMP_EVOLUTION_SEED=2", "line 2: EMP_EVOLUTION_SEED is set twice"),
        ("EMP_GATE_MAX_DRAWDOWN=2", "EMP_GATE_MAX_DRAWDOWN=2 is outside [0, 1] (set in "),
    ],
)
def test_a_bad_line_stops_start_up_naming_file_line_and_variable(home, line, message):
    path = home / SETTINGS_FILE_NAME
    path.write_text(f"EMP_EVOLUTION_SEED=1\n{line}\n")

    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("[", r"\[")) as error:
        Settings.from_env()

    assert str(path) in str(error.value)


def test_the_demo_writes_its_settings_once_and_never_overwrites_a_file_it_did_not_write(home):
    path = home / SETTINGS_FILE_NAME

    assert "written to" in write_demo_settings(home, {})
    assert path.read_text() == DEMO_SETTINGS_TEXT
    assert "from" in write_demo_settings(home, {"EMP_EVOLUTION_SEED": ""})
    settings = Settings.from_env()
    assert settings.research.population == int(DEMO_SETTINGS["EMP_EVOLUTION_POPULATION"])
    assert settings.gates.max_null_p_value == float(DEMO_SETTINGS["EMP_GATE_MAX_NULL_P_VALUE"])

    path.write_text(DEMO_SETTINGS_TEXT.replace("EMP_EVOLUTION_POPULATION=40", "EMP_EVOLUTION_POPULATION=60"))
    edited = path.read_text()
    note = write_demo_settings(home, {"EMP_EVOLUTION_SEED": "7"})

    assert path.read_text() == edited
    assert "is not the demo's file (yours, or edited): kept" in note
    assert note.endswith("the environment sets EMP_EVOLUTION_SEED, which wins\n")
