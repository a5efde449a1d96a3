# Two commands: `make demo` runs the main job end to end, `make test` runs every check.
# `make test-fast`: lint and the tests that need no Prefect server or PostgreSQL, under 2 minutes
# (tests/conftest.py marks the others `slow` and `postgres`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast lint typecheck pytest pytest-fast demo bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meter-recon needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP) lint typecheck pytest-fast

pytest-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not postgres"

demo: $(STAMP)
	$(BIN)/meter-recon demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache meter_recon.db demo
