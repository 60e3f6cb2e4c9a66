"""Each board's flashed bundle runs on the unix port under that board's heap budget (from its
profile JSON): a short closed loop per board.

The unix port needs the sim board module for I/O, which the board does not carry; the board module
and its drivers are preloaded instead so their code takes the heap it takes on the board. The DUT
gets the budget plus exactly what importing the sim board costs (measured, not guessed), so the
firmware, the board module and the drivers together must fit the budget."""

from __future__ import annotations

import pytest

from hil.bench.dut import (
    UNIX64_PER_BOARD32,
    UnixPortDut,
    board_unix_heap,
    heap_bytes,
    import_footprint,
    preload_modules,
)
from hil.bench.loop import Bench
from hil.bench.transport import SlcanSocketTransport
from hil.toolchain.build import board_profile, build_bundle, bundle_sources, profiled_boards
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

CELLS = 16


def test_profiles_state_what_the_issue_asks() -> None:
    assert set(profiled_boards()) >= {"stm32f4", "esp32"}
    for board in profiled_boards():
        p = board_profile(board)
        assert p is not None
        assert p["arch"] in ("armv7emsp", "xtensawin", "armv7m", "armv6m", "x64", "rv32imc")
        assert p["float"] == "single"
        assert p["measurement"] in ("bench", "ltc681x")
        assert p["can"]["bitrate"] == 500_000
        assert {"contactor_neg", "contactor_pre", "contactor_pos", "cooling"} <= set(p["pins"])
        assert p["micropython"]["min"] == "1.23"
        assert heap_bytes(p["heap_budget"]) >= 32 * 1024


def test_board_bundle_holds_its_modules() -> None:
    sources = {str(s) for s in bundle_sources("esp32", with_sim=True)}
    assert {"boards/esp32.py", "boards/hw.py", "boards/sim.py"} <= sources
    assert "firmware/drivers/mcp2515.py" in sources
    assert "boards/stm32f4.py" not in sources
    assert preload_modules("esp32")[:3] == ["boards.esp32", "boards.hw", "firmware.drivers"]
    bundle = build_bundle("stm32f4", with_sim=True)
    assert (bundle / "boards" / "stm32f4.mpy").exists() and (bundle / "boards" / "sim.mpy").exists()


def _budget_case(board: str) -> object:
    profile = board_profile(board) or {}
    if profile.get("heap_fits", True):
        return board
    # The profile says the firmware does not fit (and why): strict, so it fails once it does.
    reason = f"boards/{board}.json heap_fits false: its heap_fits_note"
    return pytest.param(board, marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.parametrize("board", [_budget_case(b) for b in profiled_boards()])
def test_board_bundle_closed_loop_within_heap_budget(board: str) -> None:
    profile = board_profile(board)
    assert profile is not None
    # The budget in this (64-bit) binary's bytes: see hil.bench.dut.UNIX64_PER_BOARD32.
    budget = round(heap_bytes(profile["heap_budget"]) * UNIX64_PER_BOARD32)
    sim_io = import_footprint(["boards.sim"], board)
    assert 0 < sim_io < budget // 4
    heap = board_unix_heap(board)
    assert heap == str(budget + sim_io)
    config = {"cell_count": CELLS, "temp_count": CELLS}
    with UnixPortDut(config, heap=heap, bundle_board=board) as dut:
        assert f"--preload boards.{board}," in " ".join(dut.command())
        bench = Bench(
            SlcanSocketTransport("127.0.0.1", dut.port),
            Pack(PackConfig(n_cells=CELLS)),
            SensorModel(seed=3),
        )
        bench.attach_dut(dut)
        try:
            states = [r.status.state_name for r in bench.step_until(lambda s: s.closed, 30)]
            assert "PRECHARGE" in states and bench.status.closed
            for _ in range(20):  # the firmware reports its live heap every 16 cycles
                bench.step(0.0)
            # At most 85 % of the budget live: the rest is the headroom between collections.
            used = bench.status.heap_used - sim_io
            assert 0 < used <= 0.85 * budget, f"{board}: live heap {used} B of {budget} B"
            # Stale measurements: a fault opens the contactors.
            bench.step_until(lambda s: not s.closed, 10, inject=False)
            assert not bench.status.closed
            assert "MeasurementStale" in bench.status.faults
        finally:
            bench.close()
        assert dut.alive(), dut.console()
