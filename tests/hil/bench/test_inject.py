"""The fault injector's transformations, without a firmware: readings, frames, log."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boards import lockstep
from firmware import can_codec as codec
from hil.bench.inject import (
    BITRATE,
    FRAME_BITS,
    SIM_IDS,
    THERMISTOR_OPEN_DC,
    THERMISTOR_SHORT_DC,
    VCU_ID,
    FaultInjector,
)
from sim.sensors import Measurement

CELLS = 8


def fake_bench() -> Any:
    return SimpleNamespace(t_s=12.3, cycle_ms=100, pack=SimpleNamespace(n_cells=CELLS))


def reading(cells: list[int] | None = None) -> Measurement:
    mv = cells if cells is not None else [3700 + 10 * i for i in range(CELLS)]
    return Measurement(
        cell_mv=np.array(mv, dtype=np.int64),
        temp_dc=np.full(CELLS, 250, dtype=np.int64),
        current_ma=1000,
        pack_mv=sum(mv),
        link_mv=sum(mv),
    )


FRAMES = [(codec.SIM_CELL_VOLTAGES_ID, bytes(8)), (VCU_ID, bytes(8))]


def test_installs_itself_and_logs_plant_time() -> None:
    bench = fake_bench()
    inject = FaultInjector(bench)
    assert bench.faults is inject
    a = inject.stuck_cell(1, 4000)
    bench.t_s = 13.0
    b = inject.current_offset(2.0)
    assert (a.start_s, b.start_s) == (12.3, 13.0)
    inject.clear("stuck_cell")
    assert a.end_s == 13.0 and b.active and inject.active == [b]
    inject.clear()
    assert not inject.active and len(inject.log) == 2


@settings(max_examples=50, deadline=None)
@given(
    line=st.integers(1, CELLS - 1),
    cells=st.lists(st.integers(2500, 4300), min_size=CELLS, max_size=CELLS),
)
def test_open_inner_sense_line_keeps_the_sum(line: int, cells: list[int]) -> None:
    """An open sense line between two cells moves their voltage onto one reading: the cell below
    reads the residual, the one above the sum of both, and the string's sum is unchanged."""
    inject = FaultInjector(fake_bench())
    inject.open_wire(line)
    m = inject.on_measurement(reading(list(cells)))
    assert m.cell_mv[line - 1] == 0
    assert m.cell_mv[line] == cells[line - 1] + cells[line]
    assert int(m.cell_mv.sum()) == sum(cells)


def test_open_end_lines_zero_their_one_cell() -> None:
    inject = FaultInjector(fake_bench())
    inject.open_wire(0)
    inject.open_wire(CELLS, residual_mv=12)
    m = inject.on_measurement(reading())
    assert m.cell_mv[0] == 12 and m.cell_mv[CELLS - 1] == 12  # one residual for all lines
    with pytest.raises(ValueError):
        inject.open_wire(CELLS + 1)


def test_stuck_noisy_thermistor_offset() -> None:
    inject = FaultInjector(fake_bench(), seed=1)
    inject.stuck_cell(2)
    inject.stuck_cell(3, 4500)
    inject.noisy_cell(4, 50.0)
    inject.thermistor(0, "open")
    inject.thermistor(1, "short")
    inject.thermistor(2, "stuck")
    inject.thermistor(3, "open", dc=-400)
    inject.current_offset(-1.5)
    first = inject.on_measurement(reading())
    later = inject.on_measurement(reading([3000] * CELLS))
    assert first.cell_mv[2] == later.cell_mv[2] == 3720  # the reading at injection, kept
    assert later.cell_mv[3] == 4500
    assert later.temp_dc[:4].tolist() == [THERMISTOR_OPEN_DC, THERMISTOR_SHORT_DC, 250, -400]
    assert later.current_ma == 1000 - 1500
    noise = [inject.on_measurement(reading([3000] * CELLS)).cell_mv[4] - 3000 for _ in range(400)]
    assert 40.0 < np.std(noise) < 60.0
    with pytest.raises(ValueError):
        inject.thermistor(0, "melted")


def test_drop_and_delay() -> None:
    inject = FaultInjector(fake_bench())
    inject.can_drop(VCU_ID)
    assert inject.on_frames(list(FRAMES)) == FRAMES[:1]
    inject.clear()
    inject.can_delay(SIM_IDS, ms=150)  # two ticks: the firmware reads once per 100 ms cycle
    tagged = [[(codec.SIM_CELL_VOLTAGES_ID, bytes([k] * 8)), FRAMES[1]] for k in range(4)]
    out = [inject.on_frames(frames) for frames in tagged]
    assert out[0] == out[1] == [FRAMES[1]]
    assert out[2] == [tagged[0][0], FRAMES[1]] and out[3] == [tagged[1][0], FRAMES[1]]
    inject.clear("can_delay")
    assert inject.on_frames(list(FRAMES)) == FRAMES  # what was held back is lost


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 1000))
def test_corrupt_flips_exactly_the_requested_bits_at_most(bits: int, seed: int) -> None:
    """A corrupted frame differs from the original in at most `bits` bits (two draws may hit the
    same bit and cancel) and keeps its id and length; other ids pass untouched."""
    inject = FaultInjector(fake_bench(), seed=seed)
    inject.can_corrupt(codec.SIM_CELL_VOLTAGES_ID, p=1.0, bits=bits)
    out = inject.on_frames(list(FRAMES))
    assert out[1] == FRAMES[1] and out[0][0] == FRAMES[0][0] and len(out[0][1]) == 8
    flipped = sum(bin(b).count("1") for b in out[0][1])
    # Each draw toggles one bit: the count keeps the parity of `bits` (an odd count is never 0).
    assert flipped <= bits and flipped % 2 == bits % 2


def test_flood_takes_the_bus_by_priority() -> None:
    """A babbling node with id 0 and more frames than the bus carries starves every bench frame;
    below capacity the bench frames still fit, lowest id first."""
    capacity = BITRATE * 100 // (1000 * FRAME_BITS)
    inject = FaultInjector(fake_bench())
    inject.can_flood(rate=capacity * 10 + 10)
    out = inject.on_frames(list(FRAMES))
    assert len(out) == capacity and {f[0] for f in out} == {0}
    inject.clear()
    inject.can_flood(rate=(capacity - 1) * 10)
    out = inject.on_frames(list(FRAMES))
    assert [f[0] for f in out if f[0]] == [codec.SIM_CELL_VOLTAGES_ID] and len(out) == capacity
    inject.clear()
    inject.can_flood(rate=capacity * 10, can_id=0x250)  # below SIM_ priority: SIM_ frames pass
    out = inject.on_frames(list(FRAMES))
    assert out[0] == FRAMES[0] and VCU_ID not in {f[0] for f in out}


def test_loop_overrun_sends_sim_stall_each_cycle_then_ends() -> None:
    inject = FaultInjector(fake_bench())
    injection = inject.loop_overrun(250, cycles=2)
    stall = [0, 0]
    for _ in range(2):
        frame = inject.on_frames([])[-1]
        assert frame[0] == codec.SIM_STALL_ID
        assert codec.decode_sim_stall(frame[1], stall) == [1, 250]
    assert inject.on_frames([]) == [] and not injection.active


def test_sim_board_decodes_sim_stall_as_the_dbc_says() -> None:
    """The bench boards decode SIM_Stall by hand (no codec import): same id and layout."""
    assert lockstep._SIM_STALL_ID == codec.SIM_STALL_ID
    buf = bytearray(8)
    codec.encode_sim_stall(buf, 3, 0x1234)
    stall = [buf[0] | buf[1] << 8, buf[2] | buf[3] << 8]  # as boards/lockstep.py reads it
    assert stall == codec.decode_sim_stall(buf, [0, 0]) == [3, 0x1234]
