# e2e-voice: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup models demo test lint format pytest bench clean help

help:
	@echo "make demo   - set up (first time), run the offline demo, then the small benchmark suite (e2e vs cascade)"
	@echo "make test   - set up (first time), lint, type-check and run the test suite"
	@echo "make setup  - virtualenv, Python packages, system packages (as root), model bundle"
	@echo "make models - install or repair the offline model bundle"
	@echo "make lint   - ruff (lint + format check) and mypy"
	@echo "make bench  - every benchmarks/bench_*.py, then the full evaluation suite; results in runs/bench/"

setup:
	@scripts/setup.sh

models:
	@SKIP_MODELS=1 scripts/setup.sh
	$(BIN)/e2e-voice models install

demo: setup
	$(BIN)/e2e-voice demo
	$(BIN)/e2e-voice bench

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

# Speed benchmarks first (runs/bench/NAME.md), then `e2e-voice bench suite=full` (the whole held-out test
# split, e2e and cascade, codec metrics; runs/bench/<time>/report.md). The suite needs the corpus
# (`e2e-voice synth-data`) and the e2e checkpoints (configs/system/e2e.yaml) and says so when missing.
bench: setup
	@set -e; for b in benchmarks/bench_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python "$$b"; done
	@echo "== e2e-voice bench suite=full"
	$(BIN)/e2e-voice bench suite=full

clean:
	rm -rf runs outputs .pytest_cache .mypy_cache .ruff_cache
