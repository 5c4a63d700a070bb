"""`make ui`: `dagster dev` on the local instance, stopped promptly and completely by Ctrl-C or SIGTERM.

Run in the repository root (`python -m emp_pipeline.instance.dagster_dev [--timeframe H1] [dagster dev
options]`). Plain `dagster dev` outlived both signals for minutes: it maps SIGTERM to whatever SIGINT does,
and a shell starts background jobs with SIGINT ignored, so both were ignored; when it does stop it waits up
to 60 s for its webserver and daemon, and the code servers and run workers those started notice only when
their heartbeats time out. make forwards SIGTERM to its child only. So this process:
- starts `dagster dev` in a process group of its own, with SIGINT and SIGTERM at their defaults;
- on SIGINT, SIGTERM or SIGHUP sends SIGINT to that whole group (what Ctrl-C in a terminal does, the
  shutdown Dagster is written for), and SIGKILLs whatever is left of the group after GRACE_S;
- when `dagster dev` exits for any other reason, kills what is left of its group too. A run killed on the
  way is marked failed by the daemon's run monitoring (the local instance's run launcher) on the next start.

It also points DAGSTER_HOME at the instance of the home it opens. The default home ./.emp is the repository
root's dagster.yaml (so Dagster makes no scratch home and says nothing about one). Another EMP_HOME, or a
demo study's home (`--timeframe H1`: EMP_HOME/h1 with the study's variables, as `emp demo --timeframe H1`
ran), gets EMP_HOME/dagster_home/dagster.yaml written from the root file with its storage paths moved there,
so every home opens with the same run queue, launcher, run monitoring and telemetry setting. Such a home's
`dagster dev` runs in its dagster_home (in the root, Dagster warns that the root file goes unused), the
relative paths of its settings resolved against the root first. It turns off the telemetry thread (it
makes empty `logs/` directories in DAGSTER_HOME even with telemetry disabled in dagster.yaml); and hides the
one warning `dagster dev` prints about itself (superseded by `dg dev` of the separate dagster-dg-cli tool,
which this project does not use).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

INSTANCE_FILE = "dagster.yaml"
WORKSPACE_FILE = "workspace.yaml"
# The settings that name files or folders (settings.Settings), and the registry URLs, a SQLite file's path.
PATH_VARIABLES = ("EMP_HOME", "EMP_DATA_DIR", "EMP_CSV_DIR", "EMP_UNIVERSE_FILE")
DATABASE_URL_VARIABLES = ("EMP_DATABASE_URL", "DATABASE_URL")
# Where the root dagster.yaml stores: the default home's instance, moved to EMP_HOME/dagster_home for another.
ROOT_INSTANCE_DIR = ".emp/dagster_home"
GRACE_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Python's -W syntax: the start of the message, matched case-insensitively; nothing else is hidden.
SUPERSEDED_DEV_COMMAND_WARNING = "ignore:Function `dev_command` is superseded"


def study_environment(environ: Mapping[str, str], timeframe: str | None) -> dict[str, str]:
    """The environment of the home to open: the caller's, or for a demo study (`--timeframe H1`) the one its
    demo ran with (EMP_HOME/h1, the study's data and study variables), read relative to the current folder."""
    if timeframe is None:
        return dict(environ)
    # Imported here: the default `make ui` starts (and stops) without loading the pipeline's settings.
    from emp_pipeline.demo_timeframes import demo_environment, demo_home
    from emp_pipeline.settings import Settings

    home = demo_home(Settings.from_env(environ), timeframe)
    return demo_environment(home, timeframe, environ)


def home_instance_config(root_config: Mapping[str, Any], dagster_home: Path) -> dict[str, Any]:
    """The root dagster.yaml's settings with every path under ROOT_INSTANCE_DIR moved to `dagster_home`."""
    moved: list[str] = []

    def move(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        if isinstance(value, str) and Path(value).is_relative_to(ROOT_INSTANCE_DIR):
            moved.append(value)
            return str(dagster_home / Path(value).relative_to(ROOT_INSTANCE_DIR))
        return value

    config = move(root_config)
    if not moved:
        raise ValueError(
            f"the root {INSTANCE_FILE} stores nothing under {ROOT_INSTANCE_DIR}, nothing to move"
        )
    return config


def instance_home(environ: Mapping[str, str], root: Path) -> Path:
    """DAGSTER_HOME for the EMP_HOME of `environ` (relative to `root`): the root itself for the default
    root/.emp, else EMP_HOME/dagster_home with its dagster.yaml written from the root file (on every start:
    the root file is the one to edit)."""
    home = (root / (environ.get("EMP_HOME", "").strip() or ".emp")).resolve()
    if home == (root / ".emp").resolve():
        return root
    import yaml

    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = home_instance_config(yaml.safe_load((root / INSTANCE_FILE).read_text()), dagster_home)
    (dagster_home / INSTANCE_FILE).write_text(
        f"# Written by `make ui` from {root / INSTANCE_FILE} (edit that one): its instance, stored here.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return dagster_home


def rooted_paths(environ: Mapping[str, str], root: Path) -> dict[str, str]:
    """`environ` with its relative paths resolved against `root`, for processes that run elsewhere."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    rooted = dict(environ)
    for name in PATH_VARIABLES:
        if environ.get(name, "").strip():
            rooted[name] = str((root / environ[name].strip()).resolve())
    for name in DATABASE_URL_VARIABLES:
        with contextlib.suppress(ArgumentError, ValueError):  # not a URL: Settings names the variable
            url = make_url(environ.get(name, "").strip())
            if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
                database = str((root / url.database).resolve())
                rooted[name] = url.set(database=database).render_as_string(hide_password=False)
    return rooted


def dev_environment(environ: Mapping[str, str], dagster_home: Path) -> dict[str, str]:
    """The environment `dagster dev` runs with: the caller's plus the three settings the docstring names."""
    warnings = [entry for entry in (environ.get("PYTHONWARNINGS"), SUPERSEDED_DEV_COMMAND_WARNING) if entry]
    return {
        **environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONWARNINGS": ",".join(warnings),
    }


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_group(leader: subprocess.Popen, deadline: float) -> bool:
    """True once no process of the leader's group is left, False if some still are at the deadline."""
    while leader.poll() is None or _group_alive(leader.pid):  # an unreaped leader is still in the group
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def run(
    arguments: Sequence[str], root: Path, environ: Mapping[str, str] = os.environ, out: TextIO = sys.stderr
) -> int:
    """Run `dagster dev` in `root` on the home of `environ` until it exits or a stop signal arrives; 0 after a
    requested stop."""
    if not (root / INSTANCE_FILE).is_file():
        print(f"no {INSTANCE_FILE} in {root}: run `make ui` in the repository root", file=out)
        return 2
    dagster_home = instance_home(environ, root)
    requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    # Handlers installed by Python are reset to the default in the child on exec (SIG_IGN would be kept).
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, request_stop)
    # A stop signal blocked by whoever started this process (the mask is inherited) would never arrive.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    dagster = Path(sys.executable).with_name("dagster")
    if dagster_home != root:  # in the root, dagster dev would warn that its dagster.yaml goes unused
        arguments = ["-w", str(root / WORKSPACE_FILE), *arguments]
        environ = rooted_paths(environ, root)
    process = subprocess.Popen(
        [str(dagster), "dev", *arguments],
        cwd=dagster_home,
        env=dev_environment(environ, dagster_home),
        process_group=0,
    )
    group = process.pid
    try:
        while process.poll() is None and not requested:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
        if requested:
            name = signal.Signals(requested[0]).name
            print(f"{name}: stopping dagster dev and all it started (at most {GRACE_S:.0f} s)", file=out)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGINT)
        if not _wait_for_group(process, time.monotonic() + GRACE_S):
            print(f"processes of dagster dev still running after {GRACE_S:.0f} s: killing them", file=out)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait()
    return 0 if requested else process.returncode


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stderr) -> int:
    """`--timeframe` picks a demo study's home; every other argument goes to `dagster dev`."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # --help is dagster dev's
    parser.add_argument("--timeframe", help="open the home of `emp demo --timeframe` (H1: EMP_HOME/h1)")
    options, arguments = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        environ = study_environment(os.environ, options.timeframe)
    except ValueError as error:  # a timeframe without a demo study, or a setting the study cannot share
        print(f"make ui: {error}", file=out)
        return 2
    return run(arguments, Path.cwd(), environ, out)


if __name__ == "__main__":
    raise SystemExit(main())
