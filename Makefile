# e2e-voice: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup models demo test lint format pytest bench clean help

help:
	@echo "make demo   - set up (first time) and run the offline end-to-end demo"
	@echo "make test   - set up (first time), lint, type-check and run the test suite"
	@echo "make setup  - virtualenv, Python packages, system packages (as root), model bundle"
	@echo "make models - install or repair the offline model bundle"
	@echo "make lint   - ruff (lint + format check) and mypy"
	@echo "make bench  - run every benchmarks/bench_*.py; results in runs/bench/"

setup:
	@scripts/setup.sh

models:
	@SKIP_MODELS=1 scripts/setup.sh
	$(BIN)/e2e-voice models install

demo: setup
	$(BIN)/e2e-voice demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

pytest: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint pytest

bench: setup
	@set -e; for b in benchmarks/bench_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python "$$b"; done

clean:
	rm -rf runs outputs .pytest_cache .mypy_cache .ruff_cache
