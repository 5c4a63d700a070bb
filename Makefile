# The README's commands. `make demo` and `make test` each set up the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Every install goes through constraints.txt: the exact versions the tests passed with (see `lock`).
CONSTRAINTS := constraints.txt

.PHONY: demo test lint ui bench chromium audit lock

$(BIN)/emp: setup.py pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
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
# Ctrl-C or SIGTERM stops it and every process it started within seconds. Options: UI_ARGS="-p 3001";
# TIMEFRAME=H1 opens the study of `emp demo --timeframe H1` (EMP_HOME/h1); EMP_HOME=DIR another home, each
# with the root file's instance settings.
ui: $(BIN)/emp
	exec $(BIN)/python -m emp_pipeline.instance.dagster_dev $(if $(TIMEFRAME),--timeframe $(TIMEFRAME)) $(UI_ARGS)

bench: $(BIN)/emp
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[bench]'
	for script in benchmarks/*.py; do $(BIN)/python $$script; done

# pip-audit on the locked set. Needs the vulnerability service (pypi.org, or OSV with AUDIT_ARGS="-s osv");
# where it cannot be reached nothing is audited and this fails saying so, never "no known vulnerabilities".
audit: $(BIN)/emp
	$(BIN)/python scripts/audit_dependencies.py $(CONSTRAINTS) $(AUDIT_ARGS)

# Re-resolve the newest versions setup.py allows, in a scratch environment, into constraints.txt. Then run
# make test and commit the file if it passes; nothing else changes the versions CI and the image install.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet '.[dev,deploy]'
	{ echo "# Exact versions of every package of .[dev,deploy], written by make lock; installed with -c."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v -E '^emp[-_]pipeline[ =]'; } > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)
