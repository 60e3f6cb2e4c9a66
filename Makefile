# Two commands on a fresh machine: `make sim` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: sim test lint serve codegen busload bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

sim: $(STAMP)
	$(BIN)/cellguard sim $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cellguard codegen --check
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

serve: $(STAMP)
	$(BIN)/cellguard serve $(ARGS)

codegen: $(STAMP)
	$(BIN)/cellguard codegen

busload: $(STAMP)
	$(BIN)/cellguard busload $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/closed_loop_speed.py $(ARGS)

clean:
	rm -rf $(VENV) reports build *.egg-info
