"""`make ui` stops on Ctrl-C or SIGTERM within seconds, with every process it started, and prints no
warning a user would have to learn to ignore."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from emp_pipeline.instance.dagster_dev import GRACE_S
from emp_pipeline_tests.e2e.conftest import REPO_ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT_S = 180.0
PROC = Path("/proc")


def session_members(session: int) -> dict[int, str]:
    """Live processes of a session (zombies excluded), with their command lines."""
    members = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members[int(entry.name)] = command
    return members


def like_a_terminal() -> None:
    """Popen's preexec: the stop signals at their defaults and unblocked, as a terminal starts a command.
    make keeps a SIGTERM it was started with ignored, and a blocked signal stays blocked across exec: the
    test process's own state (whatever earlier tests left) must not decide what `make ui` does."""
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for stop_signal in stop_signals:
        signal.signal(stop_signal, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)


def serving(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


@pytest.mark.parametrize(
    ("stop_signal", "sent_to"),
    [(signal.SIGTERM, "make"), (signal.SIGINT, "terminal group")],
    ids=["SIGTERM to make", "Ctrl-C"],
)
def test_make_ui_stops_with_everything_it_started(stop_signal, sent_to, tmp_path):
    port = free_port()
    venv = VENV_BIN.parent
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MAKE", "DAGSTER_"))}
    log = tmp_path / "make-ui.log"
    with log.open("wb") as handle:
        # -o: never reinstall the virtual environment here; the test is about the ui target.
        make = subprocess.Popen(
            ["make", "-o", f"{venv}/bin/emp", "ui", f"VENV={venv}", f"UI_ARGS=-p {port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a session of its own, like a terminal's, to find every descendant
            preexec_fn=like_a_terminal,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (serving(port) and any("code-server" in cmd for cmd in session_members(make.pid).values())):
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"make ui did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        assert len(session_members(make.pid)) >= 5  # make, the wrapper, dagster dev, webserver, daemon, ...

        stopped_at = time.monotonic()
        if sent_to == "make":
            os.kill(make.pid, stop_signal)
        else:
            os.killpg(make.pid, stop_signal)  # what the terminal does on Ctrl-C: the foreground group
        while session_members(make.pid) and time.monotonic() - stopped_at < GRACE_S + 10:
            time.sleep(0.2)
        elapsed = time.monotonic() - stopped_at
        assert not session_members(make.pid), (elapsed, session_members(make.pid))
        assert elapsed < GRACE_S + 5
        assert not serving(port)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=30)
        for pid in session_members(make.pid):
            os.kill(pid, signal.SIGKILL)

    output = log.read_text()
    assert f"{stop_signal.name}: stopping dagster dev" in output
    for unwanted in (
        "SupersessionWarning",
        "BetaWarning",
        "PreviewWarning",
        "No dagster instance configuration file",
        "temporary directory",
    ):
        assert unwanted not in output, unwanted
