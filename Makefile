# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv if missing
# and install everything in ONE pip run through the committed constraints file.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CONFIG ?= configs/cpu.yaml

.PHONY: setup test test-fast demo demo-clean clean

setup: $(STAMP)

$(STAMP): constraints.txt setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing into $(VENV) (one pip run, pinned by constraints.txt; ~2-3 min the first time)"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/anomalyagent demo --config $(CONFIG)

demo-clean:
	rm -rf runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
