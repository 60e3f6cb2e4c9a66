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


def test_192_cells_run_in_the_smallest_heap(bench_factory) -> None:  # type: ignore[no-untyped-def]
    """The largest pack we claim runs on the smallest heap we claim (the esp32's 144K budget on
    a 32-bit board, scaled for the 64-bit port)."""
    bench = bench_factory(cells=192)
    for _ in range(60):
        bench.step(0.0)
    assert bench.status.closed
    assert 0 < bench.status.heap_used < HEAP_BYTES
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


def test_python_can_slcan_reaches_the_virtual_bms(dut_factory: Callable[..., ProcessDut]) -> None:
    """The DUT's CAN is reachable through python-can's slcan interface over socket://."""
    with dut_factory({"cell_count": 8}) as dut:
        bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0, bitrate=500000)
        bench = Bench(PythonCanTransport(bus), Pack(PackConfig(n_cells=8)), SensorModel(seed=1))
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
