"""`make ui`: `dagster dev` on the local instance, stopped promptly and completely by Ctrl-C or SIGTERM.

Run in the repository root (`python -m emp_pipeline.instance.dagster_dev [dagster dev options]`). Plain
`dagster dev` outlived both signals for minutes: it maps SIGTERM to whatever SIGINT does, and a shell starts
background jobs with SIGINT ignored, so both were ignored; when it does stop it waits up to 60 s for its
webserver and daemon, and the code servers and run workers those started notice only when their heartbeats
time out. make forwards SIGTERM to its child only. So this process:
- starts `dagster dev` in a process group of its own, with SIGINT and SIGTERM at their defaults;
- on SIGINT, SIGTERM or SIGHUP sends SIGINT to that whole group (what Ctrl-C in a terminal does, the
  shutdown Dagster is written for), and SIGKILLs whatever is left of the group after GRACE_S;
- when `dagster dev` exits for any other reason, kills what is left of its group too. A run killed on the
  way is marked failed by the daemon's run monitoring (the local instance's run launcher) on the next start.

It also sets DAGSTER_HOME to the repository root, where dagster.yaml is, so Dagster makes no scratch home and
says nothing about one; turns off the telemetry thread (it makes empty `logs/` directories in DAGSTER_HOME
even with telemetry disabled in dagster.yaml); and hides the one warning `dagster dev` prints about itself
(superseded by `dg dev` of the separate dagster-dg-cli tool, which this project does not use).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

GRACE_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Python's -W syntax: the start of the message, matched case-insensitively; nothing else is hidden.
SUPERSEDED_DEV_COMMAND_WARNING = "ignore:Function `dev_command` is superseded"


def dev_environment(environ: Mapping[str, str], root: Path) -> dict[str, str]:
    """The environment `dagster dev` runs with: the caller's plus the three settings the docstring names."""
    warnings = [entry for entry in (environ.get("PYTHONWARNINGS"), SUPERSEDED_DEV_COMMAND_WARNING) if entry]
    return {
        **environ,
        "DAGSTER_HOME": str(root),
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


def run(arguments: Sequence[str], root: Path, out: TextIO = sys.stderr) -> int:
    """Run `dagster dev` in `root` until it exits or a stop signal arrives; 0 after a requested stop."""
    if not (root / "dagster.yaml").is_file():
        print(f"no dagster.yaml in {root}: run `make ui` in the repository root", file=out)
        return 2
    requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    # Handlers installed by Python are reset to the default in the child on exec (SIG_IGN would be kept).
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, request_stop)
    dagster = Path(sys.executable).with_name("dagster")
    process = subprocess.Popen(
        [str(dagster), "dev", *arguments], cwd=root, env=dev_environment(os.environ, root), process_group=0
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


def main() -> int:
    return run(sys.argv[1:], Path.cwd())


if __name__ == "__main__":
    raise SystemExit(main())
