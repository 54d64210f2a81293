# The two set-up commands of the README's quick start, and a few helpers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/dynamind.toml
ARGS ?=

.PHONY: run test install install-test lint bench clean

$(BIN)/dynamind: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/dynamind

## run: install, then run the appliance on the offline default config (Ctrl-C stops it)
run: install
	$(BIN)/dynamind run --config $(CONFIG) $(ARGS)

## test: install, then run the whole test suite on every core
test: install
	$(BIN)/ruff check appliance tests bench
	$(BIN)/python -m pytest -n auto -q $(ARGS)

lint: install
	$(BIN)/ruff check appliance tests bench
	$(BIN)/ruff format --check appliance tests bench

bench: install
	$(BIN)/dynamind bench ipc
	$(BIN)/dynamind bench pipeline

clean:
	rm -rf $(VENV) var bench/results/*.json
