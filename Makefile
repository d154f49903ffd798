# civic-workers: one entry point for setting up, testing and running everything.
# `make test` on a brand-new Debian 12 machine installs what it needs, then runs every test tier.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CIVIC_CACHE ?= $(HOME)/.cache/civic-workers
APT_PACKAGES := postgresql postgresql-contrib poppler-utils

.PHONY: help deps venv lint test test-fast test-integration test-compat bench run clean

help:
	@echo "make test        install what is missing, lint, run every test tier"
	@echo "make test-fast   lint + unit tests (seconds)"
	@echo "make run         local PostgreSQL + migrations + a runner on the default queues"
	@echo "make bench       benchmarks (results go to bench/RESULTS.md by hand)"

deps:
	@scripts/install-deps.sh $(APT_PACKAGES)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements-dev.txt job-runner/pyproject.toml operator/pyproject.toml
	$(BIN)/pip install -q -r requirements-dev.txt -e job-runner -e operator
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check job-runner operator tests bench scripts
	$(BIN)/ruff format --check job-runner operator tests bench scripts
	$(BIN)/mypy job-runner/src/civic_runner operator/src/civic_operator

test-fast: venv lint
	$(BIN)/pytest -m unit -q

test-integration: deps venv
	$(BIN)/pytest -m "integration" -q

test-compat: deps venv
	$(BIN)/pytest -m "compat" -q

# Every tier. Tests start the servers they need themselves.
test: deps venv lint
	$(BIN)/pytest -q

bench: deps venv
	$(BIN)/python -m bench.run_all

run: deps venv
	$(BIN)/python scripts/localdb.py start
	DATABASE_URL=$$($(BIN)/python scripts/localdb.py url) $(BIN)/civic-runner migrate
	DATABASE_URL=$$($(BIN)/python scripts/localdb.py url) PYTHONPATH=$(CURDIR) \
	  CIVIC_KINDS_MODULES=$${CIVIC_KINDS_MODULES:-bench.kinds} $(BIN)/civic-runner run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
