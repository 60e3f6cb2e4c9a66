"""Fuzz and fault suite: hostile and broken CAN traffic against the firmware on the micropython
binary, through the real receive path (SLCAN over TCP into the sim board, the firmware's
receive loop and dispatch), interleaved with the bench's legitimate traffic.

Every example starts a fresh firmware and plant (8 NMC cells, lock-step). Rules, drawn by
hypothesis in random order, each run whole 100 ms cycles:

- legitimate driving and resting with the vehicle asking to close or to open;
- random frames (any 11-bit id but the bench's lock-step and measurement ids 0x200-0x20F, the
  vehicle request and the diagnostic request ids, which structured rules cover; length 0..8,
  random bytes) at random places among the cycle's legitimate frames;
- structured frames: the BMS's own ids, SIM_ measurement frames whose group (mux) does not
  exist, VCU_Request with a wrong CRC, a repeated or a jumping alive counter, malformed ISO-TP
  frames on the diagnostic ids (bad PCI, consecutive frames out of sequence, flow control
  without a transfer), frames of the right id but the wrong length;
- floods: 200..5000 copies of one frame ahead of the cycle's legitimate frames;
- withheld inputs: cycles without measurement frames or without vehicle requests (stale).

Replays of recorded VCU_Request frames (each close request right behind the real open request,
with the next counter) and forgeries (the next counter, a guessed CRC, no valid MAC) run too: the
request is authenticated (SecOC style, docs/security.md), so they close nothing. Against the
CRC-only request of before, the replay closed the contactors (issue #13; this suite reported
"pos closed without a vehicle close request"). CELLGUARD_FUZZ_VCU_ATTACKS=0 leaves them out.

After every cycle:
(a) no exception: InternalError never reported, the process alive, a BMS_CycleDiag for every
    tick (the bench raises otherwise), the alive counter advancing by exactly one;
(b) no close without a request and a completed precharge: the positive contactor closes only out
    of PRECHARGE, only while the last vehicle request the bench sent (not yet stale) asks to
    close, and only with the plant's link at precharge_pct of its pack (0.5 V of sensor noise
    allowed); no contactor closed while an open-tier fault is reported;
(c) stale inputs open: once the measurements or the vehicle request are older than their stale
    time plus one cycle, the contactors are open (the stale faults are open tier, immediate).

CI runs the `cellguard-ci` profile with few examples (CELLGUARD_FUZZ_EXAMPLES, default 8, under
a minute); the long profile runs for as long as asked and writes its figures after every example:
    CELLGUARD_FUZZ_EXAMPLES=100000 CELLGUARD_FUZZ_SECONDS=1200 CELLGUARD_FUZZ_STATS=fuzz.json \\
        .venv/bin/pytest -q -s tests/closed_loop/test_closed_loop_fuzz.py \\
        --hypothesis-profile cellguard-long
(figures in BENCHMARKS.md, "Fuzz and fault suite").
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from firmware import can_codec as codec
from firmware import config as fw_config
from hil.bench.loop import Bench, BmsStatus, vcu_crc
from hil.bench.runner import open_bench
from hil.bench.transport import Frame
from sim.sensors import Measurement

CELLS = 8
FIRMWARE = {"balance_enable": 0}
CFG = fw_config.load({"cell_count": CELLS, "temp_count": CELLS, **FIRMWARE})
CYCLE = CFG.cycle_ms
OPEN_TIER = 3
PRECHARGE = 2
LINK_NOISE_MV = 500
SURE_STALE = 1 + CFG.meas_stale_ms // CYCLE  # cycles without a delivery: stale for sure
SURE_VCU_STALE = 1 + CFG.vcu_stale_ms // CYCLE
UDS_IDS = (codec.UDS_PHYSICAL_REQUEST_ID, codec.UDS_FUNCTIONAL_REQUEST_ID)
SIM_MEAS_IDS = (
    codec.SIM_CELL_VOLTAGES_ID,
    codec.SIM_CELL_TEMPS_ID,
    codec.SIM_PACK_MEASUREMENTS_ID,
    codec.SIM_AUX_ID,
)
BENCH_IDS = range(0x200, 0x210)  # the bench's measurement and lock-step ids
EXCLUDED = set(BENCH_IDS) | {codec.VCU_REQUEST_ID, *UDS_IDS}
RANDOM_ID = st.integers(0, 0x7FF).filter(lambda i: i not in EXCLUDED)
PAYLOAD = st.binary(min_size=0, max_size=8)
RANDOM_FRAME = st.tuples(RANDOM_ID, PAYLOAD)
BMS_IDS = (
    codec.BMS_STATE_ID,
    codec.BMS_PACK_ID,
    codec.BMS_LIMITS_ID,
    codec.BMS_FAULTS_ID,
    codec.BMS_CYCLE_DIAG_ID,
    codec.UDS_RESPONSE_ID,
)
VCU_ATTACKS = os.environ.get("CELLGUARD_FUZZ_VCU_ATTACKS", "1") == "1"
STATS: Counter[str] = Counter()


class Interleaver:
    """The bench's fault hooks: puts this cycle's extra frames among the legitimate ones (at
    positions a seeded generator picks) or ahead of them (floods), and records what the
    firmware receives."""

    def __init__(self) -> None:
        self.extra: list[Frame] = []
        self.ahead: list[Frame] = []
        self.rng = random.Random(0)
        self.recorded: dict[int, Frame] = {}  # alive counter -> a recorded close request
        self.replaying = False

    def on_measurement(self, m: Measurement) -> Measurement:
        return m

    def on_frames(self, frames: list[Frame]) -> list[Frame]:
        STATS["frames_legitimate"] += len(frames) + 1  # and the tick
        out = list(frames)
        for i, f in enumerate(frames):
            if f[0] != codec.VCU_REQUEST_ID:
                continue
            alive = f[1][0] >> 4
            if f[1][0] & 1:
                self.recorded[alive] = f
            forged = self.recorded.get((alive + 1) & 15)
            if self.replaying and forged is not None:
                # Right behind the real frame, the recorded one with the next counter: in
                # sequence for the receiver, which then sees the real one after it as a repeat.
                out.insert(i + 1, forged)
                STATS["frames_replayed"] += 1
        for f in self.extra:
            out.insert(self.rng.randint(0, len(out)), f)
        out = self.ahead + out
        self.extra = []
        self.ahead = []
        return out

    def on_plant(self, pack: Any, dt_s: float) -> None:
        pass


class FuzzBench(RuleBasedStateMachine):
    """One fresh firmware and plant per example; see the module docstring."""

    options: dict[str, Any] = {}

    def __init__(self) -> None:
        super().__init__()
        self._cm: AbstractContextManager[Bench] = open_bench(
            cells=CELLS, firmware_config=FIRMWARE, **self.options
        )
        self.bench = self._cm.__enter__()
        self.hooks = Interleaver()
        self.bench.faults = self.hooks
        self.close = True
        self.prev = BmsStatus()
        self.asked_close = False  # what the last vehicle request the bench sent asked
        self.since_meas = 1 << 30  # cycles since the bench last sent measurements / a request
        self.since_vcu = 1 << 30
        STATS["examples"] += 1

    def teardown(self) -> None:
        self._cm.__exit__(None, None, None)
        _write_stats()

    # ---- one control cycle and the invariants ------------------------------------------------
    def cycle(self, load_a: float = 0.0, *, inject: bool = True, vcu: bool = True) -> None:
        bench = self.bench
        pack_v, link_v = bench.pack.pack_voltage_v, bench.pack.link_voltage_v
        rec = bench.step(bench.within_limits(load_a), vcu_close=self.close, inject=inject, vcu=vcu)
        s = bench.status
        STATS["cycles"] += 1
        self.since_meas = 0 if inject else self.since_meas + 1
        self.since_vcu = 0 if vcu else self.since_vcu + 1
        if vcu:
            self.asked_close = self.close
        # (a) no exception, alive and cycling
        assert "InternalError" not in s.faults, s
        assert bench.dut is None or bench.dut.alive()
        if self.prev.alive >= 0:
            assert s.alive == (self.prev.alive + 1) & 15, (self.prev.alive, s.alive)
        # (b) no close without a request and a completed precharge
        if s.fault_tier == OPEN_TIER:
            assert not (s.contactor_neg or s.contactor_pre or s.contactor_pos), s
        if s.contactor_pos and not self.prev.contactor_pos:
            STATS["closings"] += 1
            assert self.prev.state == PRECHARGE, (self.prev, s)
            # The firmware acts on the last request it accepted until it is stale.
            asked = self.asked_close and self.since_vcu < SURE_VCU_STALE
            assert asked, "pos closed without a vehicle close request"
            pct = CFG.precharge_pct / 100
            assert 1000 * link_v >= pct * 1000 * pack_v - LINK_NOISE_MV, (link_v, pack_v)
        # (c) stale inputs open
        if self.since_meas >= SURE_STALE or self.since_vcu >= SURE_VCU_STALE:
            STATS["stale_cycles"] += 1
            assert not (s.contactor_neg or s.contactor_pos), (self.since_meas, s)
        self.prev = rec.status

    # ---- rules -------------------------------------------------------------------------------
    @rule(
        close=st.booleans(),
        load=st.sampled_from([0.0, 2.0, 5.0, -2.5]),
        cycles=st.integers(1, 20),
    )
    def drive(self, close: bool, load: float, cycles: int) -> None:
        self.close = close
        for _ in range(cycles):
            self.cycle(load)

    @rule(frames=st.lists(RANDOM_FRAME, min_size=1, max_size=60), seed=st.integers(0, 2**16))
    def random_frames(self, frames: list[Frame], seed: int) -> None:
        self.hooks.rng.seed(seed)
        self.hooks.extra = frames
        STATS["frames_random"] += len(frames)
        self.cycle()

    @rule(
        kind=st.sampled_from(["bms_ids", "sim_mux", "vcu_bad", "isotp", "length"]), data=st.data()
    )
    def structured(self, kind: str, data: st.DataObject) -> None:
        frames = getattr(self, "_" + kind)(data.draw)
        self.hooks.extra = frames
        STATS[f"frames_structured_{kind}"] += len(frames)
        self.cycle()

    @rule(
        frame=RANDOM_FRAME | st.tuples(st.sampled_from(BMS_IDS + UDS_IDS), PAYLOAD),
        n=st.integers(200, 5000),
    )
    def flood(self, frame: Frame, n: int) -> None:
        self.hooks.ahead = [frame] * n
        STATS["frames_flood"] += n
        self.cycle()

    @rule(what=st.sampled_from(["measurements", "vcu", "both"]), cycles=st.integers(1, 10))
    def withhold(self, what: str, cycles: int) -> None:
        for _ in range(cycles):
            self.cycle(inject=what == "vcu", vcu=what == "measurements")

    @precondition(lambda self: VCU_ATTACKS and len(self.hooks.recorded) == 16)
    @rule(cycles=st.integers(1, 40))
    def replay(self, cycles: int) -> None:
        # Recorded close requests in counter order while the real vehicle asks to open.
        self.close = False
        self.hooks.replaying = True
        try:
            for _ in range(cycles):
                self.cycle()
        finally:
            self.hooks.replaying = False

    @precondition(lambda self: VCU_ATTACKS)
    @rule(crc=st.integers(0, 255))
    def crc_guess(self, crc: int) -> None:
        self.close = False
        alive = (self.bench.vcu_alive + 1) & 15  # the next counter the firmware expects
        frame = bytearray(8)
        fresh = (self.bench.vcu.freshness + 1) & 0xFFFF  # the next freshness, no MAC behind it
        codec.encode_vcu_request(frame, 1, 0, 0, alive, fresh, 0, 0, crc)
        self.hooks.ahead = [(codec.VCU_REQUEST_ID, bytes(frame))]
        STATS["frames_crc_guess"] += 1
        self.cycle()

    # ---- structured frames -------------------------------------------------------------------
    def _bms_ids(self, draw: Any) -> list[Frame]:
        return draw(st.lists(st.tuples(st.sampled_from(BMS_IDS), PAYLOAD), min_size=1, max_size=8))

    def _sim_mux(self, draw: Any) -> list[Frame]:
        # A group (mux, byte 0) beyond this pack's cells and sensors: counted, never applied.
        groups = (CELLS + 3) // 4
        out = []
        for _ in range(draw(st.integers(1, 6))):
            mux = draw(st.integers(groups, 255))
            rest = draw(st.binary(min_size=7, max_size=7))
            cid = draw(st.sampled_from(SIM_MEAS_IDS[:2]))
            out.append((cid, bytes([mux]) + rest))
        return out

    def _vcu_bad(self, draw: Any) -> list[Frame]:
        # Right id and length, integrity wrong: a wrong CRC, a repeated or a jumping counter.
        bench = self.bench
        alive = bench.vcu_alive
        how = draw(st.sampled_from(["crc", "repeat", "jump"]))
        buf = bytearray(8)
        counter = {"crc": (alive + 1) & 15, "repeat": alive, "jump": (alive + 5) & 15}[how]
        fresh = (bench.vcu.freshness + 1) & 0xFFFF
        codec.encode_vcu_request(buf, 1, draw(st.integers(0, 1)), 0, counter, fresh, 0, 0, 0)
        good = vcu_crc(buf)
        buf[7] = (good + draw(st.integers(1, 255))) & 255 if how == "crc" else good
        return [(codec.VCU_REQUEST_ID, bytes(buf))]

    def _isotp(self, draw: Any) -> list[Frame]:
        # Malformed transport frames: single frames with an impossible length, consecutive
        # frames without a first frame, flow control without a transfer, unknown PCI types.
        pci = draw(
            st.sampled_from([0x00, 0x08, 0x0F])
            | st.integers(0x20, 0x2F)
            | st.integers(0x30, 0x3F)
            | st.integers(0x40, 0xFF)
        )
        rest = draw(st.binary(min_size=0, max_size=7))
        return [(draw(st.sampled_from(UDS_IDS)), bytes([pci]) + rest)]

    def _length(self, draw: Any) -> list[Frame]:
        # Ids the firmware decodes, with fewer than their 8 bytes.
        cid = draw(st.sampled_from((codec.VCU_REQUEST_ID, *SIM_MEAS_IDS)))
        return [(cid, draw(st.binary(min_size=0, max_size=7)))]

    @invariant()
    def firmware_alive(self) -> None:
        assert self.bench.dut is None or self.bench.dut.alive()


def _write_stats() -> None:
    # After every example, so that a long run stopped from outside still leaves its figures.
    path = os.environ.get("CELLGUARD_FUZZ_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(dict(STATS), f, indent=1, sort_keys=True)


@pytest.mark.unix_only
def test_hostile_and_broken_traffic_keeps_the_invariants(bench_options: dict[str, Any]) -> None:
    """The invariants of the module docstring hold over random interleavings of legitimate,
    random, structured, flooding and withheld traffic."""
    FuzzBench.options = bench_options
    name = settings.get_current_profile_name()
    profile = settings.get_profile(name if name.startswith("cellguard") else "cellguard-ci")
    profile = settings(
        profile,
        max_examples=int(os.environ.get("CELLGUARD_FUZZ_EXAMPLES", "8")),
        stateful_step_count=min(profile.stateful_step_count, 40),
    )
    seconds = os.environ.get("CELLGUARD_FUZZ_SECONDS")
    STATS.clear()
    started = time.monotonic()
    failed = True
    try:
        # The long profile: batches of examples until the time is up (hypothesis itself has
        # no time limit); each batch draws new examples.
        while True:
            run_state_machine_as_test(FuzzBench, settings=profile)
            STATS["batches"] += 1
            if not seconds or time.monotonic() - started >= float(seconds):
                break
        failed = False
    finally:
        STATS["wall_s"] = round(time.monotonic() - started)
        STATS["failing_examples"] = int(failed)  # an invariant broken (or the bench failed)
        _write_stats()
        print(f"fuzz closed loop ({name}): {dict(STATS)}")
