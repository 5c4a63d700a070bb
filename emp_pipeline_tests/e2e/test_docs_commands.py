"""Every ```bash block of README.md and docs/*.md, run as printed in a fresh copy of the repository.

The blocks run in document order (README first, then docs/ alphabetically) in ONE fresh copy with its own
EMP_HOME and the repository's virtual environment, so `make demo` runs once and the blocks after it find its
results, as a reader following the documents would. A block may not run here only if its first line says so
with the one convention `# not run by the doc test: <why>`; such a block is still checked: its shell syntax
always, the services it names against docker-compose.yml, the GraphQL it sends against Dagster's schema,
`make test` with `make -n`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from graphql import parse, validate

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
NOT_RUN = "# not run by the doc test: "
# README's hourly demo: e2e/test_hourly_demo.py runs exactly that block's command (its home in memory).
HOURLY_DEMO_MARKER = "emp_pipeline_tests/e2e/test_hourly_demo.py runs exactly this command"
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```bash\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
# Nothing a user would have to learn to ignore.
UNWANTED_OUTPUT = ("SupersessionWarning", "no dagster.yaml found", "Traceback")
# What a block's output must show, where the document promises it.
PROMISED_OUTPUT = {
    "make demo": ("walk-forward study:", "paper-trading tick:"),
    ".venv/bin/emp run research_job": ("- research_job [unpartitioned]",),
    ".venv/bin/emp run daily_update_job --from 2012-11-01 --to 2013-01-31": (
        "- daily_update_job [2012-11..2013-01]",
    ),
    "DAGSTER_HOME=$PWD .venv/bin/dagster instance info": ("LocalProcessRunLauncher",),
}
# make demo takes about a minute and a half on a quiet 2-core machine; the margin is for a busy one.
BLOCK_TIMEOUT_S = 1500
# `docker compose <command> [flags] SERVICE`: the service a command names (flags: -T, --rm, -e VAR).
COMPOSE_COMMAND = re.compile(
    r'docker compose (?:exec|run|stop|logs|up|ps)(?:[ \t]+-\S+(?:[ \t]+[A-Z_]+)?)*[ \t]+([^\s#<$"-]\S*)'
)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    body: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def not_run_because(self) -> str | None:
        first = self.body.lstrip().splitlines()[0].strip()
        return first[len(NOT_RUN) :] if first.startswith(NOT_RUN) else None


def document_blocks() -> list[Block]:
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in BLOCK.finditer(text):
            indent = match.group("indent")
            body = "".join(
                line[len(indent) :] if line.startswith(indent) else line
                for line in match.group("body").splitlines(keepends=True)
            )
            blocks.append(Block(document, text[: match.start()].count("\n") + 1, body))
    return blocks


BLOCKS = document_blocks()
RUN_BLOCKS = [block for block in BLOCKS if block.not_run_because is None]
MARKED_BLOCKS = [block for block in BLOCKS if block.not_run_because is not None]


def fresh_copy(destination: Path) -> Path:
    """The repository's tracked files, the venv linked in; build inputs dated so make does not reinstall."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to(VENV)
    # make demo rebuilds .venv when these are newer than .venv/bin/emp; the linked venv is already installed.
    for name in ("setup.py", "pyproject.toml", "constraints.txt"):
        os.utime(destination / name, (0, 0))
    return destination


def reader_environment(home: Path) -> dict[str, str]:
    """A reader's shell: none of the test run's EMP_*/DAGSTER_*/CTRADER_* settings, the copy's EMP_HOME."""
    leaked = ("EMP_", "DAGSTER_", "CTRADER_", "DATABASE_URL", "REDIS_URL", "FRED_API_KEY", "PYTHONWARNINGS")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(leaked)}
    environment["PATH"] = f"{VENV / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    environment["EMP_HOME"] = str(home / ".emp")
    return environment


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = fresh_copy(tmp_path_factory.mktemp("fresh_clone"))
    return home, reader_environment(home)


def test_the_documents_have_command_blocks_and_few_are_not_run():
    assert len(RUN_BLOCKS) >= 6, [block.name for block in RUN_BLOCKS]
    reasons = {block.not_run_because for block in MARKED_BLOCKS}
    assert all(
        reason.startswith(
            (
                "needs a Docker engine",
                "needs a Kubernetes cluster",
                "needs a running `make ui`",
                "needs your own folder of CSV files",
                "serves until stopped",
                "a benchmark of several minutes",
                "it is part of the suite this runs",
                HOURLY_DEMO_MARKER,
            )
        )
        for reason in reasons
    ), reasons


@pytest.mark.timeout(BLOCK_TIMEOUT_S + 60)
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda block: block.name)
def test_block_runs_as_printed(block: Block, reader: tuple[Path, dict[str, str]]):
    home, environment = reader
    started = time.monotonic()
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", block.body],
        cwd=home,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,  # a prompt ([y/N]) fails instead of waiting
        start_new_session=True,  # on a timeout the block's whole process group is stopped
    )
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{block.name} still running after {BLOCK_TIMEOUT_S}s:\n{output[-4000:]}")
    assert process.returncode == 0, f"{block.name} exited {process.returncode}:\n{output[-4000:]}"
    for unwanted in UNWANTED_OUTPUT:
        assert unwanted not in output, f"{block.name} printed {unwanted!r}:\n{output[-4000:]}"
    for command, promised in PROMISED_OUTPUT.items():
        if command in block.body:
            for text in promised:
                assert text in output, f"{block.name}: {command} did not print {text!r}:\n{output[-4000:]}"
    print(f"{block.name}: {time.monotonic() - started:.1f}s")


@pytest.mark.parametrize("block", MARKED_BLOCKS, ids=lambda block: block.name)
def test_block_not_run_here_is_still_valid(block: Block):
    syntax = subprocess.run(["bash", "-n", "-c", block.body], capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.name}: {syntax.stderr}"
    reason = block.not_run_because
    if reason.startswith("needs a Docker engine"):
        services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
        # $EMP is operations.md's prefix for `docker compose run --rm emp_user_code emp`.
        text = block.body.replace("$EMP ", "docker compose run --rm emp_user_code emp ")
        named = [match.group(1) for match in COMPOSE_COMMAND.finditer(text)]
        unknown = [name for name in named if name not in services]
        assert not unknown, f"{block.name} names services {unknown} that docker-compose.yml does not have"
    elif reason.startswith("needs a running `make ui`"):
        from dagster_graphql.schema import create_schema

        schema = create_schema().graphql_schema
        queries = re.findall(r'"query": "((?:[^"\\]|\\.)*)"', block.body.replace("\\$", "$"))
        assert queries, block.name
        for query in queries:
            errors = validate(schema, parse(json.loads(f'"{query}"')))
            assert not errors, f"{block.name}: {errors}"
    elif reason.startswith("it is part of the suite this runs"):
        assert "make test" in block.body
        dry_run = subprocess.run(["make", "-n", "test"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert dry_run.returncode == 0, dry_run.stderr
