"""`make audit`: pip-audit on the locked set (constraints.txt), honest about what it could not audit.

pip-audit says "No known vulnerabilities found" and exits 0 even when it could not reach the vulnerability
service and skipped every package (each skip is a warning line; where the service is unreachable it reads
"Dependency not found on PyPI"). A deployment must not read that as a clean audit. So this runs pip-audit
with JSON output on the pinned file, without resolving anything, and judges the report itself:

- exit 0: every locked package was audited and none has a known vulnerability;
- exit 1: known vulnerabilities (each package, advisory and fixed versions is listed);
- exit 2: some or all packages could not be audited (how many, which, and pip-audit's reason), or pip-audit
  itself failed. Nothing is called clean that was not checked.

Usage: python scripts/audit_dependencies.py constraints.txt [pip-audit options, e.g. -s osv]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

EXIT_CLEAN, EXIT_VULNERABLE, EXIT_NOT_AUDITED = 0, 1, 2
SHOWN_SKIPS = 5


@dataclass(frozen=True)
class AuditVerdict:
    exit_code: int
    text: str


def pinned_packages(lock_file: Path) -> list[str]:
    """`name==version` lines of the lock file (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in lock_file.read_text().splitlines())
    return [line for line in lines if "==" in line]


def judge(report: dict, locked: int) -> AuditVerdict:
    """The verdict on one pip-audit JSON report of a lock file with `locked` pinned packages."""
    dependencies = report.get("dependencies", [])
    skipped = [dependency for dependency in dependencies if dependency.get("skip_reason")]
    audited = [dependency for dependency in dependencies if not dependency.get("skip_reason")]
    vulnerable = [dependency for dependency in audited if dependency.get("vulns")]
    lines = []
    if vulnerable:
        lines.append(f"known vulnerabilities in {len(vulnerable)} of {len(audited)} audited packages:")
        for dependency in vulnerable:
            for vulnerability in dependency["vulns"]:
                fixed = ", ".join(vulnerability.get("fix_versions") or []) or "no fixed release"
                lines.append(
                    f"  {dependency['name']} {dependency.get('version', '?')}: {vulnerability['id']} "
                    f"(fixed in {fixed})"
                )
    if not audited:
        lines.append(
            f"audited NOTHING: all {len(skipped)} of {locked} locked packages were skipped, so this is not a "
            "clean result. The vulnerability service could not be reached from here (pip-audit says, e.g.: "
            f"{skipped[0]['skip_reason'] if skipped else 'no package in the report'}). Run `make audit` "
            "where the service is reachable."
        )
        return AuditVerdict(EXIT_NOT_AUDITED, "\n".join(lines))
    if skipped:
        names = ", ".join(dependency["name"] for dependency in skipped[:SHOWN_SKIPS])
        more = f" and {len(skipped) - SHOWN_SKIPS} more" if len(skipped) > SHOWN_SKIPS else ""
        lines.append(
            f"{len(skipped)} of {locked} locked packages could not be audited ({names}{more}; e.g. "
            f"{skipped[0]['skip_reason']}): the audit is incomplete"
        )
        return AuditVerdict(EXIT_VULNERABLE if vulnerable else EXIT_NOT_AUDITED, "\n".join(lines))
    if vulnerable:
        return AuditVerdict(EXIT_VULNERABLE, "\n".join(lines))
    return AuditVerdict(EXIT_CLEAN, f"audited all {len(audited)} locked packages: no known vulnerabilities")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return EXIT_NOT_AUDITED
    lock_file, options = Path(argv[0]), argv[1:]
    locked = len(pinned_packages(lock_file))
    with tempfile.TemporaryDirectory() as scratch:
        report_file = Path(scratch) / "pip-audit.json"
        completed = subprocess.run(
            [
                sys.executable, "-m", "pip_audit", "--requirement", str(lock_file), "--disable-pip",
                "--no-deps", "--progress-spinner", "off", "--format", "json", "--output", str(report_file),
                *options,
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if not report_file.exists():
            reason = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            print(
                f"pip-audit failed (exit {completed.returncode}), nothing audited: {reason}", file=sys.stderr
            )
            return EXIT_NOT_AUDITED
        verdict = judge(json.loads(report_file.read_text()), locked)
    print(verdict.text, file=sys.stderr if verdict.exit_code else sys.stdout)
    return verdict.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
