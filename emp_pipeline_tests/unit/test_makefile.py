"""The Makefile's own targets: what `make test` (and so CI's .ci/run) does before the tests run."""

from __future__ import annotations

import ast
import subprocess

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def _setup_requirements() -> list[Requirement]:
    """install_requires plus the dev and deploy extras, read from setup.py's setup() call."""
    call = next(
        node
        for node in ast.walk(ast.parse((REPO_ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    required = ast.literal_eval(keywords["install_requires"])
    extras = ast.literal_eval(keywords["extras_require"])
    return [Requirement(text) for text in [*required, *extras["dev"], *extras["deploy"]]]


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator and version, f"constraints.txt: {line!r} is not name==version"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_lock_pins_every_requirement_within_its_range():
    locked = _locked()
    for requirement in _setup_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (requirement, locked[name])
    assert "emp-pipeline" not in locked
    assert len(locked) > 100  # the whole resolved set, not only the direct requirements


def test_every_install_of_the_makefile_and_the_image_goes_through_the_lock():
    recipes = [line.strip() for line in MAKEFILE.read_text().splitlines() if line.startswith("\t")]
    installs = [line for line in recipes if "pip install" in line]
    scratch = [line for line in installs if "$(LOCK_VENV)" in line]  # make lock resolves afresh, on purpose
    assert len(scratch) == 1
    for line in set(installs) - set(scratch):
        assert "-c $(CONSTRAINTS)" in line, line
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert dockerfile.count("pip install -c constraints.txt") == 1
    assert (
        "audit:" in MAKEFILE.read_text()
        and "scripts/audit_dependencies.py $(CONSTRAINTS)" in MAKEFILE.read_text()
    )
