"""Bounded, fair I/O: a flood of frames or a delayed loop never leaves the pack uncontrolled.

The firmware runs on the micropython binary. In real time (the sim board on the wall clock) a
flood of id 0x000 frames from another node on the bus (beyond 16 000 frames/s, more than the
unix port drains) must not hold off the control cycle: the receive loop takes at most a
budget of frames and time per pass (firmware/comm.py), so BMS_State keeps coming, and the
measurements stuck behind the flood go stale, which opens the contactors within meas_stale_ms
plus a few cycles. In lock-step a delay is a SIM_Tick that advances the clock by several periods
at once: the cycles it skips are not run back to back on the one set of measurements that
arrived before it, so one glitching link reading cannot end a precharge onto a 0 V link.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest

from firmware import can_codec as codec
from firmware import config as fw_config
from hil.bench.dut import UnixPortDut
from hil.bench.loop import Bench
from hil.bench.transport import SlcanSocketTransport
from sim.pack import Pack, PackConfig
from sim.sensors import Measurement, SensorModel

CELLS = 8
CFG = fw_config.load({"cell_count": CELLS, "temp_count": CELLS})
FLOOD_RATE = 60_000  # frames/s offered: above what the unix port drains, so a backlog builds
MIN_RATE = 16_000  # frames/s the flood must reach for the test to mean anything
FLOOD_LINE = b"t0008" + b"00" * 8 + b"\r"  # id 0x000, 8 zero bytes, as SLCAN


class Flooder:
    """Another node on the virtual bus (a second SLCAN connection) sending id 0x000 at
    FLOOD_RATE frames/s, in 10 ms bursts, from a thread; `rate` is what the bus took."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"O\r")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0
        self._t0 = self._t1 = 0.0

    def _run(self) -> None:
        burst = FLOOD_RATE // 100
        blob = FLOOD_LINE * burst
        self._t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            self._sock.sendall(blob)
            self.sent += burst
            k += 1
            pause = self._t0 + k / 100 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self._t1 = time.monotonic()

    @property
    def rate(self) -> float:
        return self.sent / max(1e-9, self._t1 - self._t0)

    def __enter__(self) -> Flooder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()


def _realtime_bench(dut: UnixPortDut) -> Bench:
    bench = Bench(
        SlcanSocketTransport("127.0.0.1", dut.port),
        Pack(PackConfig(n_cells=CELLS)),
        SensorModel(seed=3),
        lockstep=False,
    )
    bench.attach_dut(dut)
    return bench


def _close(bench: Bench) -> None:
    bench.step_until(lambda s: s.closed, 100)
    assert bench.status.closed, f"contactors not closed: {bench.status}"


@pytest.mark.sim_board
def test_a_flood_alone_cannot_hold_off_the_cycle_and_the_stale_inputs_open() -> None:
    """Only the flood on the bus (the bench stops sending): the alive counter in BMS_State keeps
    advancing, LoopOverrun reports the backlog, and the contactors open within meas_stale_ms
    plus 0.5 s (a loaded host included).
    Without a receive budget the loop never leaves the flood: no BMS_State, contactors held
    closed."""
    with UnixPortDut({"cell_count": CELLS}, realtime=True) as dut:
        bench = _realtime_bench(dut)
        try:
            _close(bench)
            opened_after = None
            advanced = 0
            overrun = False
            with Flooder(dut.port) as flood:
                t0 = time.monotonic()
                while time.monotonic() - t0 < 3.0:
                    alive = bench.status.alive
                    bench.step(0.0, inject=False, vcu=False)
                    advanced += bench.status.alive != alive
                    overrun |= "LoopOverrun" in bench.status.faults
                    if opened_after is None and not bench.status.closed:
                        opened_after = time.monotonic() - t0
            assert flood.rate >= MIN_RATE, flood.rate
            assert opened_after is not None, "contactors held closed through the flood"
            assert opened_after <= (CFG.meas_stale_ms + 500) / 1000, opened_after
            assert "MeasurementStale" in bench.status.faults
            assert advanced >= 10, f"the alive counter advanced in only {advanced} periods"
            assert overrun  # the backlog the budget holds back is reported
        finally:
            bench.close()


@pytest.mark.sim_board
def test_a_flood_beside_legitimate_traffic_keeps_the_cycle_running() -> None:
    """The flood from another node while the bench sends its measurements and vehicle requests:
    the alive counter advances in at least two periods of three (the cycle runs), and the BMS
    is either in control (fresh inputs) or open, never closed on stale inputs."""
    with UnixPortDut({"cell_count": CELLS}, realtime=True) as dut:
        bench = _realtime_bench(dut)
        try:
            _close(bench)
            periods = advanced = 0
            with Flooder(dut.port) as flood:
                for _ in range(30):
                    alive = bench.status.alive
                    bench.step(0.0)
                    periods += 1
                    advanced += bench.status.alive != alive
                    s = bench.status
                    assert not (s.closed and "MeasurementStale" in s.faults), s
            assert flood.rate >= MIN_RATE, flood.rate
            assert advanced * 3 >= periods * 2, f"alive advanced in {advanced} of {periods}"
        finally:
            bench.close()


def _link_stuck_at_zero(glitch: list[bool]):  # type: ignore[no-untyped-def]
    def hook(m: Measurement) -> Measurement:
        # A broken precharge path: the link stays at 0 V, except one reading that glitches to
        # the pack voltage when the test asks for it.
        link = m.pack_mv if glitch and glitch.pop() else 0
        return replace(m, link_mv=link)

    return hook


@pytest.mark.parametrize("delay_ms", [300, 400])
def test_catch_up_after_a_delay_never_closes_on_one_glitching_link_reading(
    bench: Bench, delay_ms: int
) -> None:
    """Safety rule (precharge_confirm): one glitching link reading followed by a loop delay of
    `delay_ms` (a SIM_Tick advancing the clock by that much at once) does not end the
    precharge; with the link at 0 V the positive contactor never closes."""
    glitch: list[bool] = []
    bench.measurement_hook = _link_stuck_at_zero(glitch)
    bench.step_until(lambda s: s.state_name == "PRECHARGE", 20)
    assert bench.status.state_name == "PRECHARGE"
    bench.step(0.0)
    glitch.append(True)
    bench.cycle_ms = delay_ms
    bench.step(0.0)
    bench.cycle_ms = CFG.cycle_ms
    assert not bench.status.contactor_pos, f"pos closed onto a 0 V link: {bench.status}"
    overrun = False
    for _ in range(5):
        bench.step(0.0)
        assert not bench.status.contactor_pos, f"pos closed onto a 0 V link: {bench.status}"
        overrun |= "LoopOverrun" in bench.status.faults
    assert overrun  # the skipped cycles are reported (in the frames of the cycle after)


@pytest.mark.sim_board
def test_a_delay_in_real_time_is_not_followed_by_a_burst_of_catch_up_cycles() -> None:
    """A cycle stalled 1 s in real time (SIM_Stall, under the 2 s watchdog): afterwards the
    firmware runs the latest due cycle, not the ten it missed back to back on one set of
    measurements: no 100 ms window after the stall holds more than three BMS_State frames,
    and the skipped cycles are reported (LoopOverrun)."""
    with UnixPortDut({"cell_count": CELLS}, realtime=True) as dut:
        bench = _realtime_bench(dut)
        try:
            _close(bench)
            buf = bytearray(8)
            codec.encode_sim_stall(buf, 1, 1000)
            bench.transport.send_many([(codec.SIM_STALL_ID, bytes(buf))])
            t0 = time.monotonic()
            states: list[float] = []
            overrun = False
            while time.monotonic() - t0 < 2.0:
                frame = bench.transport.recv(0.05)
                if frame is None:
                    continue
                if frame[0] == codec.BMS_STATE_ID:
                    states.append(time.monotonic())
                if frame[0] == codec.BMS_FAULTS_ID:
                    overrun |= bool(bench.db.decode_message(frame[0], frame[1])["LoopOverrun"])
            assert states, "no BMS_State after the stall"
            burst = max(sum(1 for u in states if t <= u < t + 0.1) for t in states)
            assert burst <= 3, f"{burst} BMS_State frames within 100 ms after the stall"
            assert overrun
        finally:
            bench.close()
