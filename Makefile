# Two commands on a fresh machine: `make sim` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
BOARD ?=
PORT ?=
MCU_TESTS := tests/closed_loop tests/firmware/test_micropython.py tests/hil/cellmodel/test_replay.py \
	tests/hil/cellmodel/test_real_cell.py tests/boards/test_board_qemu.py

.PHONY: sim test lint serve codegen busload bench mcu-bench image flash clean

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
	# A board whose profile says its firmware does not fit its budget (heap_fits) is named, not run.
	@$(BIN)/python -c "from hil.toolchain.build import fitting_boards as f, profiled_boards as p; \
		left = sorted(set(p()) - set(f())); \
		left and print('make test: SKIPPED the closed loop on', *left, '(boards/NAME.json heap_fits false: heap_fits_note says why)')"
	for board in $$($(BIN)/python -c "from hil.toolchain.build import fitting_boards as f; print(*f())"); do \
		$(BIN)/python -m pytest -q -n 2 tests/closed_loop --dut unix:$$board || exit 1; \
	done
	# The firmware frozen into the Cortex-M image on QEMU (hil/toolchain/image.py): the closed-loop
	# tests marked mcu and the firmware's unit tests; without the toolchain, one line says so.
	@missing=$$($(BIN)/python -m hil.toolchain.image check); \
	if [ -n "$$missing" ]; then \
		echo "make test: SKIPPED the tests on the Cortex-M image (pytest -m mcu --dut qemu: $(MCU_TESTS)): $$missing"; \
	else \
		echo "$(BIN)/python -m pytest -q -n 2 -m mcu $(MCU_TESTS) --dut qemu"; \
		$(BIN)/python -m pytest -q -n 2 -m mcu $(MCU_TESTS) --dut qemu || exit 1; \
	fi

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

# The Cortex-M image (IMAGE=an385|an500) and its benchmark (BENCHMARKS.md).
IMAGE ?= an385
image: $(STAMP)
	$(BIN)/python -m hil.toolchain.image build $(IMAGE)

mcu-bench: $(STAMP)
	$(BIN)/python benchmarks/mcu_cycle.py $(ARGS)

clean:
	rm -rf $(VENV) reports build *.egg-info
