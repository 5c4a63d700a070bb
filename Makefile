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

# The browser test (emp_pipeline_tests/e2e/test_browser_ui.py) drives Debian's Chromium, no browser download.
# As root this installs it once; otherwise it says what to run instead of failing on apt-get's lock file.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "make test needs Chromium ($(CHROMIUM)) for the browser test, and installing it needs root:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y chromium"; \
	    echo "then run make test again (or run make test as root, which installs it)."; \
	    exit 1; \
	  fi; \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null \
	    || { echo "apt-get could not install chromium (its error is above): install it, then run make test again"; exit 1; }; \
	fi

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
