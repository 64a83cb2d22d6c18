# The two commands that matter: `make run` and `make test`. Each sets up
# everything it needs on a machine with only Python 3.11+.
SHELL := /bin/bash
# The first interpreter that runs and is new enough (pyenv shims may exist but not run).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit install bench soak clean

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Chronik needs Python 3.11 or newer on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/chronik dev $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python -m bench.commands $(ARGS)
	$(BIN)/python -m bench.projections $(ARGS)
	$(BIN)/python -m bench.sync $(ARGS)
	$(BIN)/python -m bench.webhooks $(ARGS)
	$(BIN)/python -m bench.audit $(ARGS)

# 10 minutes of mixed load; memory, errors and projection lag checked (docs/operations.md, "Soak").
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)
