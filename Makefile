# The README's commands. `make demo` and `make test` each set up the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint ui bench chromium

$(BIN)/emp: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/emp
	$(BIN)/emp demo

# The browser test drives Debian's Chromium (no browser download): install it once if it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(BIN)/emp chromium
	$(BIN)/ruff check emp_pipeline emp_pipeline_tests benchmarks scripts
	$(BIN)/pytest

lint: $(BIN)/emp
	$(BIN)/ruff check emp_pipeline emp_pipeline_tests benchmarks scripts
	$(BIN)/ruff format --check emp_pipeline emp_pipeline_tests benchmarks scripts

# `dagster dev` on the root dagster.yaml (the local instance) and workspace.yaml (location emp_pipeline).
# Ctrl-C or SIGTERM stops it and every process it started within seconds. Options: UI_ARGS="-p 3001".
ui: $(BIN)/emp
	exec $(BIN)/python -m emp_pipeline.instance.dagster_dev $(UI_ARGS)

bench: $(BIN)/emp
	$(BIN)/pip install --quiet -e '.[bench]'
	for script in benchmarks/*.py; do $(BIN)/python $$script; done
