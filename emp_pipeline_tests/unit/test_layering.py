"""The dependency rule of docs/architecture.md, checked on the imports themselves (function-level ones too).

The domain is what the live engine, the parity replay and the Dagster assets share; an import of Dagster, a
database, a network client or an upper package there would tie the core to one of its callers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import emp_pipeline

PACKAGE = Path(emp_pipeline.__file__).parent
# Services and frameworks the pure core must not reach: Dagster, databases, Redis, HTTP and WebSocket clients.
SERVICE_MODULES = {
    "dagster",
    "sqlalchemy",
    "alembic",
    "psycopg2",
    "redis",
    "requests",
    "yfinance",
    "websockets",
    "prometheus_client",
}
# The only places that may import Dagster (docs/architecture.md, "The dependency rule").
DAGSTER_PLACES = ("defs/", "definitions.py", "cli.py", "job_runs.py", "demo.py", "instance/")
DAGSTER_FILES = ("reporting/formatting.py",)


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def offenders(folder: str, allowed: str, forbidden_roots: set[str], root: Path = PACKAGE) -> list[str]:
    """`file: module` for every import under `folder` of another project package or of a forbidden root."""
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            upward = module.startswith("emp_pipeline") and not module.startswith(f"emp_pipeline.{allowed}")
            if upward or module.split(".")[0] in forbidden_roots:
                found.append(f"{path.relative_to(root)}: {module}")
    return found


def test_domain_imports_only_itself_and_no_service():
    assert offenders("domain", "domain", SERVICE_MODULES) == []


def test_storage_imports_only_itself_and_no_service():
    assert offenders("storage", "storage", SERVICE_MODULES) == []


def test_only_the_dagster_layer_and_the_entry_points_import_dagster():
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(module.split(".")[0] == "dagster" for module in imported_modules(path))
    )
    assert importers, "no module imports dagster: the scan is broken"
    outside = [
        name for name in importers if not name.startswith(DAGSTER_PLACES) and name not in DAGSTER_FILES
    ]
    assert outside == []


def test_the_scan_reports_upward_and_service_imports_even_inside_functions(tmp_path):
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "core.py").write_text(
        "import numpy\nfrom emp_pipeline.domain.bars import normalise_bars\n\n"
        "def f():\n    from emp_pipeline.registry.engine import make_engine\n    import dagster\n",
        encoding="utf-8",
    )
    assert offenders("domain", "domain", SERVICE_MODULES, root=tmp_path) == [
        "domain/core.py: dagster",
        "domain/core.py: emp_pipeline.registry.engine",
    ]
