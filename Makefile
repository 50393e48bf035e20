# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_SECONDS ?= 60

.PHONY: demo test lint format typecheck pytest bench bench-startup crash soak ha clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/factory-watcher --log-level WARNING demo --duration $(DEMO_SECONDS)

test: $(VENV)/.installed-dev lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

# Each benchmark runs even when an earlier one missed a target; make fails at the end.
# Start-up first: it is quick, and fails if `--help` takes over 4x `python -c pass`;
# history (a million stored rows against none) takes about half a minute.
BENCHES := bench/startup.py bench/history.py bench/poll_bench.py

bench: $(VENV)/.installed-dev
	@status=0; for script in $(BENCHES); do \
		echo "== $$script"; $(BIN)/python $$script || status=1; \
	done; exit $$status

bench-startup: $(VENV)/.installed-dev
	$(BIN)/python bench/startup.py

crash: $(VENV)/.installed-dev
	$(BIN)/python bench/crash.py --kills 200

# An hour by default (too long for `make bench`): make soak SOAK_ARGS="--minutes 10 --sample 30"
SOAK_ARGS ?=
soak: $(VENV)/.installed-dev
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Three replicas on the local PostgreSQL (FACTORY_WATCHER_TEST_PG): the leader killed five
# times, one SIGTERM handover, one pause past the lease, one cut of its database sessions.
# About three minutes: make ha HA_ARGS="--kills 10 --keep"
HA_ARGS ?=
ha: $(VENV)/.installed-dev
	$(BIN)/python bench/ha.py $(HA_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
