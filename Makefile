# Two commands on a fresh machine: `make sim` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
BOARD ?=
PORT ?=

.PHONY: sim test lint serve codegen busload bench flash clean

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
	$(BIN)/python -m pytest -q -n 2 $(ARGS)
	# The closed-loop suite again on each board's flashed bundle, under that board's heap budget.
	for board in $$($(BIN)/python -c "from hil.toolchain.build import profiled_boards as p; print(*p())"); do \
		$(BIN)/python -m pytest -q -n 2 tests/closed_loop --dut unix:$$board || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

serve: $(STAMP)
	$(BIN)/cellguard serve $(ARGS)

codegen: $(STAMP)
	$(BIN)/cellguard codegen

busload: $(STAMP)
	$(BIN)/cellguard busload $(ARGS)

# make flash BOARD=stm32f4 PORT=/dev/ttyACM0 [ARGS=--dry-run]
flash: $(STAMP)
	@test -n "$(BOARD)" -a -n "$(PORT)" || { echo "usage: make flash BOARD=stm32f4|esp32 PORT=/dev/ttyACM0"; exit 2; }
	$(BIN)/cellguard flash --board $(BOARD) --port $(PORT) $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/closed_loop_speed.py $(ARGS)

clean:
	rm -rf $(VENV) reports build *.egg-info
