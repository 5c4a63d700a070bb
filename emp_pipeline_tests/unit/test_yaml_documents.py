"""YAML we load (universe files): a repeated key or an impossible date is refused by file, line, field."""

from pathlib import Path

import pytest

from emp_pipeline.domain.instruments import UniverseError, load_universe
from emp_pipeline.domain.yaml_documents import YamlDocumentError, load_yaml
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, Settings, SettingsError


def test_dates_stay_text_and_the_rest_is_plain_safe_yaml() -> None:
    document = load_yaml("start: 2004-08-19\nsizes: [1, 0.5, x]\nflag: true\n", "inline")
    assert document == {"start": "2004-08-19", "sizes": [1, 0.5, "x"], "flag": True}


def test_a_repeated_key_is_refused_with_both_lines() -> None:
    with pytest.raises(
        YamlDocumentError, match=r"u.yaml line 4: key 'tick_size' is repeated \(first at line 3\)"
    ):
        load_yaml("instruments:\n  - symbol: A\n    tick_size: 0.01\n    tick_size: 0.05\n", "u.yaml")


def test_broken_syntax_names_the_line() -> None:
    with pytest.raises(YamlDocumentError, match=r"u.yaml line 1, column 5: not valid YAML"):
        load_yaml("a: b: c\n", "u.yaml")


def _universe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "universe.yaml"
    path.write_text(text)
    return path


def test_an_impossible_start_date_is_named_by_file_and_field(tmp_path: Path) -> None:
    path = _universe(tmp_path, SAMPLE_UNIVERSE_FILE.read_text().replace("2004-08-19", "2010-13-45"))
    with pytest.raises(UniverseError) as raised:
        load_universe(path)
    assert str(raised.value) == (
        f"{path}: field 'start_date': expected a date like 2020-01-31, got '2010-13-45'"
    )


def test_a_duplicate_key_in_a_universe_file_is_refused(tmp_path: Path) -> None:
    text = SAMPLE_UNIVERSE_FILE.read_text().replace(
        "end_date: 2013-03-01", "end_date: 2013-03-01\nend_date: 2012-01-01"
    )
    path = _universe(tmp_path, text)
    with pytest.raises(UniverseError, match=rf"{path} line \d+: key 'end_date' is repeated"):
        load_universe(path)


def test_a_bad_universe_file_stops_the_settings_at_start_up(tmp_path: Path) -> None:
    path = _universe(tmp_path, SAMPLE_UNIVERSE_FILE.read_text().replace("2004-08-19", "2010-13-45"))
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"EMP_HOME": str(tmp_path), "EMP_UNIVERSE_FILE": str(path)})
    assert str(raised.value).startswith(f"EMP_UNIVERSE_FILE: {path}: field 'start_date'")
