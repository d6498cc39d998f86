# The two commands a newcomer runs: `make run` and `make test`.
# Each creates .venv when missing and installs what it needs; the stamp file
# makes the second run skip pip entirely unless pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.biomem-installed
SAMPLES := samples/memories.jsonl
PYTEST_ARGS ?=
CHAOS_RESULTS_DIR ?= build/chaos

.PHONY: run test lint unit integration install samples clean bench chromium chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: load the sample memories into the embedded store, then run the daemon (Ctrl-C to stop)
run: $(STAMP)
	$(BIN)/biomem ingest $(SAMPLES)
	exec $(BIN)/biomem run

## test: lint, then the whole test suite
test: lint chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## chromium: the status-page test drives Debian's chromium (never a downloaded browser);
## installed with apt-get only when missing (CI machines run as root, no sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium fonts-liberation; }

## chaos: every failure scenario against the real daemon, then docs/RELIABILITY.md from the results
# The report is written whatever the outcome (a failure is documented too);
# the target still fails when a scenario did.
chaos: $(STAMP)
	rm -rf $(CHAOS_RESULTS_DIR)
	CHAOS_RESULTS_DIR=$(CHAOS_RESULTS_DIR) $(BIN)/python -m pytest -m chaos tests/chaos $(PYTEST_ARGS); \
	status=$$?; \
	$(BIN)/python scripts/chaos_report.py --results $(CHAOS_RESULTS_DIR) --output docs/RELIABILITY.md; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## bench: the resilience benchmarks against their peers (prints the tables; see bench/RESULTS.md)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/resilience_overhead.py

samples: $(STAMP)
	$(BIN)/python scripts/generate_samples.py --output $(SAMPLES)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
