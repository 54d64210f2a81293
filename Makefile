# The two set-up commands of the README's quick start, and a few helpers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/dynamind.toml
ARGS ?=

.PHONY: run test test-tools install install-test lint bench clean

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
test: install test-tools
	$(BIN)/ruff check appliance tests bench
	$(BIN)/python -m pytest -n auto --dist worksteal -q $(ARGS)

# The service tests need systemd-analyze and systemd-sysusers, the terminal test tmux.
# A fresh CI machine (root, apt) gets them here, so those tests run instead of skipping;
# elsewhere this only says which tests will skip.
TEST_TOOLS := systemd-analyze systemd-sysusers tmux
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing systemd and tmux for the service and terminal tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd tmux >/dev/null \
		|| { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd tmux >/dev/null; }; \
	else \
		echo "missing:$$missing: the tests that need them will skip"; \
	fi

lint: install
	$(BIN)/ruff check appliance tests bench
	$(BIN)/ruff format --check appliance tests bench

bench: install
	mkdir -p bench/results
	$(BIN)/dynamind bench ipc --out-dir bench/results
	$(BIN)/dynamind bench pipeline --out-dir bench/results

clean:
	rm -rf $(VENV) var bench/results/*.json
