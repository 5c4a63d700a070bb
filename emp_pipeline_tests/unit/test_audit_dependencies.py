"""`make audit` (scripts/audit_dependencies.py): pip-audit on the lock file, never "clean" unless it was."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from emp_pipeline_tests.conftest import local_http_server
from emp_pipeline_tests.e2e.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "audit_dependencies.py"
_spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
audit = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = audit  # its dataclasses look their module up there
_spec.loader.exec_module(audit)

# What pip-audit's JSON says on these machines, where the PyPI vulnerability feed answers "not found" for
# every package (recorded from `pip-audit -r constraints.txt -f json`, three entries of 124).
RECORDED_UNREACHABLE = {
    "dependencies": [
        {
            "name": name,
            "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} ({version})",
        }
        for name, version in (("alembic", "1.20.1"), ("annotated-types", "0.8.0"), ("anyio", "4.16.0"))
    ],
    "fixes": [],
}
CLEAN = {"name": "alembic", "version": "1.20.1", "vulns": []}
VULNERABLE = {
    "name": "anyio",
    "version": "4.16.0",
    "vulns": [{"id": "GHSA-test-0001", "fix_versions": ["4.16.1"], "aliases": [], "description": "x"}],
}


def test_nothing_audited_is_not_reported_clean():
    verdict = audit.judge(RECORDED_UNREACHABLE, locked=3)
    assert verdict.exit_code == audit.EXIT_NOT_AUDITED
    assert "audited NOTHING: all 3 of 3 locked packages were skipped" in verdict.text
    assert "not a clean result" in verdict.text
    assert "no known vulnerabilities" not in verdict.text.lower()


def test_a_partial_audit_is_incomplete_and_names_what_was_skipped():
    report = {"dependencies": [CLEAN, RECORDED_UNREACHABLE["dependencies"][2]]}
    verdict = audit.judge(report, locked=2)
    assert verdict.exit_code == audit.EXIT_NOT_AUDITED
    assert "1 of 2 locked packages could not be audited (anyio" in verdict.text


def test_vulnerabilities_are_listed_with_their_fixed_versions():
    verdict = audit.judge({"dependencies": [CLEAN, VULNERABLE]}, locked=2)
    assert verdict.exit_code == audit.EXIT_VULNERABLE
    assert "anyio 4.16.0: GHSA-test-0001 (fixed in 4.16.1)" in verdict.text


def test_a_complete_clean_audit_says_how_much_it_audited():
    verdict = audit.judge({"dependencies": [CLEAN, {**VULNERABLE, "vulns": []}]}, locked=2)
    assert (verdict.exit_code, verdict.text) == (
        audit.EXIT_CLEAN,
        "audited all 2 locked packages: no known vulnerabilities",
    )


@pytest.fixture
def osv_server() -> Iterator[tuple[str, dict]]:
    """A local stand-in for OSV's query API: answers what `behaviour["answer"]` says, per package."""
    behaviour: dict = {"status": 200, "vulnerable": set()}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = query["package"]["name"]
            body = {}
            if name in behaviour["vulnerable"]:
                body = {
                    "vulns": [
                        {
                            "id": "GHSA-test-0001",
                            "summary": "test advisory",
                            "affected": [
                                {
                                    "package": {"name": name, "ecosystem": "PyPI"},
                                    "ranges": [
                                        {
                                            "type": "ECOSYSTEM",
                                            "events": [{"introduced": "0"}, {"fixed": "99.0"}],
                                        }
                                    ],
                                }
                            ],
                        }
                    ]
                }
            payload = json.dumps(body).encode()
            self.send_response(behaviour["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    with local_http_server(Handler) as base_url:
        yield f"{base_url}/v1/query", behaviour


def _run_audit(tmp_path, osv_url: str) -> subprocess.CompletedProcess:
    lock = tmp_path / "constraints.txt"
    lock.write_text("# a lock file\nalembic==1.20.1\nanyio==4.16.0\n")
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(lock),
            "-s",
            "osv",
            "--osv-url",
            osv_url,
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pip_audit_against_a_service_that_knows_nothing_bad(tmp_path, osv_server):
    url, _ = osv_server
    result = _run_audit(tmp_path, url)
    assert result.returncode == audit.EXIT_CLEAN, result.stderr
    assert result.stdout.strip() == "audited all 2 locked packages: no known vulnerabilities"


def test_pip_audit_finding_a_vulnerability_fails(tmp_path, osv_server):
    url, behaviour = osv_server
    behaviour["vulnerable"].add("anyio")
    result = _run_audit(tmp_path, url)
    assert result.returncode == audit.EXIT_VULNERABLE
    assert "anyio 4.16.0: GHSA-test-0001 (fixed in 99.0)" in result.stderr


def test_an_unavailable_service_audits_nothing_and_fails_saying_so(tmp_path, osv_server):
    url, behaviour = osv_server
    behaviour["status"] = 503
    result = _run_audit(tmp_path, url)
    assert result.returncode == audit.EXIT_NOT_AUDITED
    assert "nothing audited" in result.stderr
    assert "no known vulnerabilities" not in (result.stdout + result.stderr).lower()
