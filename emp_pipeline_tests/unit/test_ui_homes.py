"""`make ui` opens any home, the hourly study's too, with the root dagster.yaml's instance settings; the demo
prints the command that opens its own home."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from emp_pipeline.demo_timeframes import DEMO_STUDIES, demo_ui_command
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.instance.dagster_dev import (
    ROOT_INSTANCE_DIR,
    home_instance_config,
    instance_home,
    main,
    rooted_paths,
    study_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_CONFIG = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
SAME_SETTINGS = ("run_coordinator", "run_launcher", "run_monitoring", "telemetry")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the repository root's dagster.yaml in a folder of its own."""
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    return tmp_path


def test_the_default_home_opens_the_root_instance_and_writes_nothing(root):
    for environ in ({}, {"EMP_HOME": ".emp"}, {"EMP_HOME": str(root / ".emp")}, {"EMP_HOME": " "}):
        assert instance_home(environ, root) == root
    assert sorted(path.name for path in root.iterdir()) == ["dagster.yaml"]


def test_another_home_gets_the_root_instance_stored_under_it(root):
    dagster_home = instance_home({"EMP_HOME": "studies/h1"}, root)  # relative to the root, as make runs it
    assert dagster_home == root / "studies" / "h1" / "dagster_home"
    written = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    for key in SAME_SETTINGS:
        assert written[key] == ROOT_CONFIG[key], key
    assert written["storage"] == {"sqlite": {"base_dir": str(dagster_home)}}
    assert written["local_artifact_storage"]["config"]["base_dir"] == str(dagster_home)
    assert written["compute_logs"]["config"]["base_dir"] == str(dagster_home / "storage")

    # Dagster reads it as that instance: the queue with the live-execution limit, the launcher, monitoring.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert [(limit["key"], limit["limit"]) for limit in limits] == [("emp/live-execution", 1)]
        assert type(instance.run_launcher).__name__ == "LocalProcessRunLauncher"
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
        assert Path(instance.storage_directory()) == dagster_home / "storage"


def test_every_stored_path_of_the_root_file_moves():
    config = home_instance_config(ROOT_CONFIG, Path("/elsewhere"))
    assert ROOT_INSTANCE_DIR not in yaml.safe_dump(config)
    with pytest.raises(ValueError, match=r"stores nothing under \.emp/dagster_home"):
        home_instance_config({"storage": {"sqlite": {"base_dir": "/var/dagster"}}}, Path("/elsewhere"))


def test_the_hourly_study_opens_with_its_home_and_variables(tmp_path):
    environ = study_environment({"EMP_HOME": str(tmp_path), "PATH": "/bin"}, "h1")
    assert environ["EMP_HOME"] == str(tmp_path / "h1")
    assert {name: environ[name] for name in DEMO_STUDIES[Timeframe.H1].data} == DEMO_STUDIES[
        Timeframe.H1
    ].data
    assert environ["PATH"] == "/bin"
    assert study_environment({"EMP_HOME": str(tmp_path)}, None) == {"EMP_HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("timeframe", "variables", "message"),
    [
        ("M5", {}, "emp demo has no bundled M5 sample"),
        ("X9", {}, "unknown timeframe 'X9'"),
        ("H1", {"EMP_DATA_DIR": "/shared/lake"}, "unset EMP_DATA_DIR"),
    ],
)
def test_a_study_the_demo_has_not_is_refused_by_name(timeframe, variables, message, monkeypatch, tmp_path):
    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert main(["--timeframe", timeframe, "-p", "1"], out=out) == 2
    assert message in out.getvalue()


def test_the_demo_prints_the_make_ui_command_of_its_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo_ui_command(tmp_path / ".emp", "D1") == "make ui"
    assert demo_ui_command(tmp_path / ".emp" / "h1", "H1") == "make ui TIMEFRAME=H1"
    assert demo_ui_command(Path("/studies"), "D1") == "make ui EMP_HOME=/studies"
    assert demo_ui_command(Path("/studies/h1"), "h1") == "make ui TIMEFRAME=H1 EMP_HOME=/studies"


def test_make_ui_passes_the_timeframe_to_the_wrapper():
    dry_run = subprocess.run(
        ["make", "-n", "-o", ".venv/bin/emp", "ui", "TIMEFRAME=H1", "UI_ARGS=-p 3001"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m emp_pipeline.instance.dagster_dev --timeframe H1 -p 3001" in dry_run
    plain = subprocess.run(
        ["make", "-n", "-o", ".venv/bin/emp", "ui"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "--timeframe" not in plain


def test_a_home_opened_from_its_dagster_home_keeps_the_paths_given_relative_to_the_root(tmp_path):
    environ = {
        "EMP_HOME": "studies/h1",
        "EMP_UNIVERSE_FILE": str(tmp_path / "universe.yaml"),
        "EMP_DATABASE_URL": "sqlite:///studies/registry.sqlite",
        "DATABASE_URL": "postgresql://user:secret@127.0.0.1/test",
        "EMP_TIMEFRAME": "H1",
    }
    rooted = rooted_paths(environ, tmp_path)
    assert rooted == {
        **environ,
        "EMP_HOME": str(tmp_path / "studies" / "h1"),
        "EMP_DATABASE_URL": f"sqlite:///{tmp_path / 'studies' / 'registry.sqlite'}",
    }
