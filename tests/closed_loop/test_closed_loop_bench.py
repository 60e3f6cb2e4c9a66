"""The bench's own promises: heap budget, CAN logs, python-can reachability, real-time serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import can
import cantools
import pytest

from hil import DBC_PATH
from hil.bench.dut import DEFAULT_HEAP, ProcessDut, UnixPortDut, heap_bytes
from hil.bench.loop import Bench
from hil.bench.transport import PythonCanTransport, SlcanSocketTransport
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

# The smallest board budget (32-bit bytes) in this binary's bytes
# (hil.bench.dut.UNIX64_PER_BOARD32).
HEAP_BYTES = heap_bytes(DEFAULT_HEAP)
# Live heap may take at most this share of the budget: the rest is the headroom a cycle's garbage
# and fragmentation need between collections (a heap that just fits is not a pass).
HEADROOM = 0.85


def test_192_cells_run_in_the_smallest_heap(bench_factory) -> None:  # type: ignore[no-untyped-def]
    """The largest pack we claim runs on the smallest heap we claim (the esp32's 144K budget on
    a 32-bit board, scaled for the 64-bit port)."""
    bench = bench_factory(cells=192)
    for _ in range(60):
        bench.step(0.0)
    assert bench.status.closed
    used = bench.status.heap_used
    assert 0 < used <= HEADROOM * HEAP_BYTES, f"live heap {used} B of {HEAP_BYTES} B"
    assert bench.dut is not None and bench.dut.alive()
    # Every cell's voltage arrives: the BMS's min/max match the injected extremes.
    assert bench.status.cell_v_min > 3.5 and bench.status.cell_v_max < 4.3


def test_can_log_opens_in_python_can_and_decodes(tmp_path: Path, bench_factory) -> None:  # type: ignore[no-untyped-def]
    """Every frame of a run lands in a .blf log that python-can reads and cantools decodes."""
    log = tmp_path / "run.blf"
    bench = bench_factory(log_path=log)
    for _ in range(20):
        bench.step(0.0)
    bench.close()
    db = cantools.database.load_file(DBC_PATH)
    frames = list(can.BLFReader(log))
    ids = {f.arbitration_id for f in frames}
    assert {0x100, 0x101, 0x200, 0x20F, 0x300} <= ids
    states = [
        db.decode_message(f.arbitration_id, f.data) for f in frames if f.arbitration_id == 0x100
    ]
    assert len(states) == 20
    assert states[-1]["BmsState"] == "CLOSED"
    # Every cell voltage goes out on BMS_CellVoltages within the 1 s period of the full set.
    voltages: dict[str, float] = {}
    for f in frames:
        if f.arbitration_id == 0x110:
            voltages.update(db.decode_message(f.arbitration_id, f.data))
    assert {f"Cell{i:03d}_Voltage" for i in range(1, 17)} <= set(voltages)
    assert all(3.5 < voltages[f"Cell{i:03d}_Voltage"] < 4.3 for i in range(1, 17))
    times = [f.timestamp for f in frames]
    assert times == sorted(times) and times[-1] - times[0] > 1.5  # simulated time stamps
    # ... from the wall-clock time the run started (not 1970): readers show a real start time
    assert can.BLFReader(log).start_timestamp == pytest.approx(bench.log_start, abs=0.01)
    assert abs(bench.log_start - time.time()) < 600


def test_events_log_keeps_the_windows_around_a_fault(tmp_path: Path, bench_factory) -> None:  # type: ignore[no-untyped-def]
    """The default log of `cellguard sim` on the firmware: the start, the over-voltage that
    opens the contactors from 10 s before it to 30 s after the last change it causes, and the
    last 10 s; every frame in it decodes with cantools, all of them inside the windows it lists,
    and each window holds every control period (a BMS_CycleDiag for every SIM_Tick)."""
    log = tmp_path / "run.blf"
    bench = bench_factory(log_path=log, log_mode="events")
    bench.step_until(lambda s: s.closed, 30)
    while bench.t_s < 60.0:
        bench.step(0.0)

    def overvoltage(m):  # type: ignore[no-untyped-def]
        m.cell_mv[3] = 4400
        return m

    bench.measurement_hook = overvoltage
    bench.step_until(lambda s: not s.closed, 50)
    assert not bench.status.closed and "CellOverVoltage" in bench.status.faults
    bench.measurement_hook = None
    while bench.t_s < 120.0:
        bench.step(0.0)
    bench.close()
    assert bench.can_log is not None
    windows = bench.can_log.windows
    assert [w.events[0].split(" s ", 1)[1] for w in windows][:: len(windows) - 1] == [
        "start",
        "end",
    ]
    fault = next(w for w in windows if any("CellOverVoltage 0 -> 1" in e for e in w.events))
    first_event = float(fault.events[0].split(" s ")[0])
    assert 59.0 < first_event < 62.0 and fault.start_s == pytest.approx(first_event - 10, abs=0.11)
    assert any("ContactorPos CLOSED -> OPEN" in e for e in fault.events)
    assert windows[-1].end_s == pytest.approx(bench.t_s, abs=0.11)
    assert windows[-1].start_s <= windows[-1].end_s - 10 + 0.11
    db = cantools.database.load_file(DBC_PATH)
    frames = list(can.BLFReader(log))
    assert len(frames) == sum(w.frames for w in windows) < 0.7 * bench.can_log.frames_seen
    t0 = frames[0].timestamp
    for f in frames:
        db.decode_message(f.arbitration_id, f.data)
        t = f.timestamp - t0
        assert any(w.start_s - 1e-6 <= t <= w.end_s + 1e-6 for w in windows), t
    for w in windows:
        ids = [f.arbitration_id for f in frames if w.start_s <= f.timestamp - t0 <= w.end_s]
        assert abs(ids.count(0x20F) - ids.count(0x1FF)) <= 1  # a period cut at the edge


def test_bench_clock_counts_control_periods(bench) -> None:  # type: ignore[no-untyped-def]
    """After n steps the plant time is n periods exactly, not a sum of 0.1 s that drifts off
    the whole seconds (series.csv's rows and a replay trace made from them need 1 s steps)."""
    for n in range(1, 31):
        bench.step(0.0)
        assert bench.t_s == n * bench.cycle_ms / 1000


def test_python_can_slcan_reaches_the_virtual_bms(dut_factory: Callable[..., ProcessDut]) -> None:
    """The DUT's CAN is reachable through python-can's slcan interface over socket://."""
    with dut_factory({"cell_count": 8}) as dut:
        bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0, bitrate=500000)
        bench = Bench(PythonCanTransport(bus), Pack(PackConfig(n_cells=8)), SensorModel(seed=1))
        bench.vcu_of(dut)
        try:
            for _ in range(15):
                bench.step(0.0)
            assert bench.status.closed
        finally:
            bench.close()


@pytest.mark.sim_board
def test_served_bms_transmits_in_real_time() -> None:
    """`cellguard serve` mode: the firmware runs on the wall clock and broadcasts its frames,
    which any second client on the virtual bus receives and cantools decodes."""
    db = cantools.database.load_file(DBC_PATH)
    with UnixPortDut({"cell_count": 16}, realtime=True) as dut:
        feeder = Bench(
            SlcanSocketTransport("127.0.0.1", dut.port),
            Pack(PackConfig(n_cells=16)),
            SensorModel(seed=2),
            lockstep=False,
        )
        feeder.vcu_of(dut)
        monitor = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0)
        try:
            t0 = time.monotonic()
            for _ in range(15):
                feeder.step(0.0)
            elapsed = time.monotonic() - t0
            seen: dict[str, dict[str, object]] = {}
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and "BMS_State" not in seen:
                msg = monitor.recv(0.2)
                if msg is not None:
                    m = db.get_message_by_frame_id(msg.arbitration_id)
                    seen[m.name] = m.decode(msg.data)
            assert elapsed >= 1.4  # 15 periods of 100 ms on the wall clock
            assert feeder.status.closed
            assert "BMS_State" in seen
        finally:
            monitor.shutdown()
            feeder.close()
