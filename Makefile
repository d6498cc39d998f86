# The two commands a newcomer runs: `make run` and `make test`.
# Each creates .venv when missing and installs what it needs; the stamp file
# makes the second run skip pip entirely unless pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.biomem-installed
SAMPLES := samples/memories.jsonl
PYTEST_ARGS ?=

.PHONY: run test lint unit integration install samples clean bench chromium

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
