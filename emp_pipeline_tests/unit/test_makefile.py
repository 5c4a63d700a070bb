"""The Makefile's own targets: what `make test` (and so CI's .ci/run) does before the tests run."""

from __future__ import annotations

import subprocess

from emp_pipeline_tests.e2e.conftest import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _make(*arguments: str, as_user: list[str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(as_user or []), "make", "-s", "-f", str(MAKEFILE), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_test_says_it_needs_root_to_install_a_missing_chromium(tmp_path):
    result = _make("chromium", "CHROMIUM=/nonexistent/chromium", as_user=NOBODY, cwd=tmp_path)
    assert result.returncode != 0
    assert "needs Chromium (/nonexistent/chromium) for the browser test, and installing it needs root" in (
        result.stdout
    )
    assert "sudo apt-get install -y chromium" in result.stdout
    assert "lock" not in result.stdout + result.stderr  # not apt-get's own error


def test_make_test_goes_on_when_chromium_is_there(tmp_path):
    # Any executable stands in for the browser: the target only checks that it is there.
    result = _make("chromium", "CHROMIUM=/bin/sh", as_user=NOBODY, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "")


def test_the_test_target_installs_chromium_before_running_pytest():
    makefile = MAKEFILE.read_text()
    assert "\ntest: $(BIN)/emp chromium\n" in makefile
    assert (REPO_ROOT / ".ci" / "run").read_text().rstrip().endswith("\nmake test")
