"""The application loop's rules, on a fake board (runs under CPython and MicroPython).

- No exception escapes a cycle: it opens the contactors and raises InternalError (latched).
- Stale or missing measurements keep the contactors open.
- With fresh frames and a vehicle request the BMS precharges, then closes.
"""

import gc

from vcu_signer import key_record, request

from firmware import app, can_codec
from firmware.protection import (
    FAULT_BITS,
    FAULT_INTERNAL_ERROR,
    FAULT_LOOP_OVERRUN,
    FAULT_MEAS_STALE,
    FAULT_STORAGE,
)


class FakeBoard:
    """Just enough board: a frame queue in, a frame list out, recorded outputs."""

    realtime = False

    def __init__(self, overrides=None, fail_balancing_at=-1):
        self.overrides = overrides or {"cell_count": 4, "temp_count": 4}
        self.rx = []
        self.sent = []
        self.rx_dlc = 8
        self.contactors = (0, 0, 0)
        self.fail_balancing_at = fail_balancing_at
        self.balancing_calls = 0
        self.storage = {"vcu_key": key_record()}  # name -> bytes, the board's flash files

    def config_overrides(self):
        return self.overrides

    def reset_cause(self):
        return 0

    def measure(self, meas, now_ms):
        pass

    def set_contactors(self, neg, pre, pos):
        self.contactors = (neg, pre, pos)

    def set_thermal(self, cooling, heating):
        self.thermal = (cooling, heating)

    def set_balancing(self, mask):
        self.balancing_calls += 1
        if self.balancing_calls == self.fail_balancing_at:
            raise RuntimeError("balancing driver fault")

    def can_send(self, can_id, buf, dlc):
        self.sent.append(can_id)

    def can_recv(self, buf):
        if not self.rx:
            return -1
        can_id, data = self.rx.pop(0)
        for i in range(8):
            buf[i] = data[i]
        return can_id

    def advance(self, ms):
        return True

    def storage_read(self, name):
        return self.storage.get(name)

    def storage_write(self, name, data):
        self.storage[name] = bytes(data)

    def halt(self, message):
        raise AssertionError(message)


# The frames the bench would send, packed by hand as dbc/cellguard.dbc lays them out: the peer
# codec (can_codec_peer) does not fit next to a whole BMS in the smallest board heap. The firmware
# decodes them with its generated decoders, so a wrong layout here fails the tests below.


def vcu_request(close, alive, reset=0, charge=0):
    """VCU_Request from the test VCU (tests/firmware/vcu_signer.py): counter `alive`, and a
    freshness value that grows with it (the callers count `alive` up from 0)."""
    return request(close, alive, alive + 1, reset, charge)


def inject(board, mv=3700, link_mv=None, alive=1):
    buf = bytearray(8)
    # SIM_ cell frames share their layout with the BMS_ ones the firmware encodes.
    can_codec.encode_bms_cell_voltages(buf, 0, mv, mv, mv, mv)
    board.rx.append((can_codec.SIM_CELL_VOLTAGES_ID, bytes(buf)))
    can_codec.encode_bms_cell_temps(buf, 0, 250, 250, 250, 250)
    board.rx.append((can_codec.SIM_CELL_TEMPS_ID, bytes(buf)))
    pack = 4 * mv // 100  # SIM_PackMeasurements: current 24 bit at 0, pack and link 0.1 V at 24, 40
    link = pack if link_mv is None else link_mv // 100
    frame = bytes((0, 0, 0, pack & 255, pack >> 8, link & 255, link >> 8, 0))
    board.rx.append((can_codec.SIM_PACK_MEASUREMENTS_ID, frame))
    # SIM_Aux: the feedback bits follow what the board was last told, as healthy contactors do;
    # the second current sensor (bytes 1..3) agrees with the first (0 A).
    neg, pre, pos = board.contactors
    board.rx.append((can_codec.SIM_AUX_ID, bytes((neg | pre << 1 | pos << 2, 0, 0, 0, 0, 0, 0, 0))))
    board.rx.append((can_codec.VCU_REQUEST_ID, vcu_request(1, alive)))


def run_cycles(bms, board, n, t0=0, link_mv=None):
    now = t0
    for i in range(n):
        inject(board, link_mv=link_mv, alive=i + t0 // 100)
        bms.comm.poll(now)
        now += 100
        bms.guarded_cycle(now)
    return now


def test_fresh_frames_and_request_precharge_then_close():
    board = FakeBoard()
    bms = app.build(board)
    run_cycles(bms, board, 3, link_mv=0)
    assert board.contactors == (1, 1, 0), "precharging: negative and precharge closed"
    run_cycles(bms, board, 3, t0=300)
    assert board.contactors == (1, 0, 1)
    assert can_codec.BMS_STATE_ID in board.sent and can_codec.BMS_FAULTS_ID in board.sent


def test_missing_measurements_keep_contactors_open():
    board = FakeBoard()
    bms = app.build(board)
    for i in range(20):
        board.rx.append((can_codec.VCU_REQUEST_ID, vcu_request(1, i)))
        bms.comm.poll(i * 100)
        bms.guarded_cycle(i * 100 + 100)
        assert board.contactors[2] == 0
    assert bms.data.faults.active & (1 << FAULT_MEAS_STALE)


def test_exception_in_cycle_opens_contactors_and_latches_internal_error():
    board = FakeBoard(fail_balancing_at=8)
    bms = app.build(board)
    now = run_cycles(bms, board, 7)
    assert board.contactors == (1, 0, 1)
    inject(board, alive=7)
    bms.comm.poll(now)
    assert not bms.guarded_cycle(now + 100), "the failed cycle reports it did not complete"
    assert board.contactors == (0, 0, 0)
    assert bms.data.faults.active & (1 << FAULT_INTERNAL_ERROR)
    now = run_cycles(bms, board, 5, t0=now + 100)
    assert board.contactors[2] == 0, "latched: no re-close without a reset request"
    assert bms.data.faults.active & (1 << FAULT_INTERNAL_ERROR)


class _Stop(BaseException):
    """Ends the otherwise endless main loop in a test (not an Exception: the loop lets it out)."""


class FlakyBoard(FakeBoard):
    """The receive path raises once; the board clock moves 100 ms per idle; stops after 5 idles."""

    def __init__(self):
        FakeBoard.__init__(self)
        self.now = 0
        self.waits = 0
        self.raised = False
        self.faults = []

    def ticks_ms(self):
        return self.now

    def can_recv(self, buf):
        if not self.raised:
            self.raised = True
            raise OSError("CAN controller bus-off")
        return FakeBoard.can_recv(self, buf)

    def can_send(self, can_id, buf, dlc):
        FakeBoard.can_send(self, can_id, buf, dlc)
        if can_id == can_codec.BMS_FAULTS_ID:
            self.faults.append(bytes(buf))

    def wait(self, timeout_ms):
        self.waits += 1
        if self.waits > 5:
            raise _Stop()
        self.now += 100

    def wdt_feed(self):
        pass


def test_exception_outside_the_cycle_does_not_end_the_loop():
    board = FlakyBoard()
    try:
        app.run(board)
    except _Stop:
        pass
    assert board.raised and board.waits > 5, "the loop went on after the receive path raised"
    assert board.faults, "cycles ran and reported faults after the exception"
    frame = board.faults[-1]  # BMS_Faults: bit b of the little-endian payload = fault bit b
    bits = frame[0] | frame[1] << 8 | frame[2] << 16 | frame[3] << 24
    assert bits >> FAULT_INTERNAL_ERROR & 1 and bits < 1 << FAULT_BITS
    assert board.contactors == (0, 0, 0)


class _RaisingService:
    """A between-cycle service (diagnostics, charging) whose handler breaks."""

    def __init__(self):
        self.calls = 0

    def service(self, now_ms):
        self.calls += 1
        raise ValueError("malformed request")


def test_a_failing_service_opens_contactors_and_the_cycles_go_on():
    board = FakeBoard()
    bms = app.build(board)
    now = run_cycles(bms, board, 7)
    assert board.contactors == (1, 0, 1)
    broken = _RaisingService()
    bms.services.append(broken)
    bms.run_services(now)
    assert broken.calls == 1
    assert board.contactors == (0, 0, 0), "a service fault leaves the pack disconnected"
    assert bms.data.faults.active & (1 << FAULT_INTERNAL_ERROR)
    run_cycles(bms, board, 3, t0=now)
    assert bms.alive, "control cycles still run after the service fault"


def _one_cycle(bms, board, mv):
    inject(board, mv=mv)
    bms.comm.poll(0)
    bms.guarded_cycle(100)


def test_soc_and_fault_memory_survive_a_reset_and_damage_is_a_warning():
    # Nothing lost across a reset: the next start restores the estimator and the fault memory
    # from the A/B records; a damaged record starts from defaults and says so (StorageFault).
    board = FakeBoard()
    bms = app.build(board)
    now = run_cycles(bms, board, 30)
    bms.fault_memory.update(1, bms.meas, bms.data.soc.soc, 100)  # a CellOverVoltage record
    bms.persist.flush(now)
    # The key record was there from the start; the last vehicle-request freshness is kept too.
    assert set(board.storage) == {"vcu_key", "est.a", "faults.a", "secoc.a", "records"}
    soc = bms.data.soc.soc
    del bms  # one BMS at a time on a board-sized heap, as after a real reset
    gc.collect()
    again = app.build(board)
    # The first readings say 3900 mV (75 % SOC by OCV) after only a moment at rest: a restored
    # estimator keeps its stored SOC, one that lost it would start from that OCV.
    _one_cycle(again, board, 3900)
    assert abs(again.data.soc.soc - soc) < 100
    assert again.fault_memory.stored & 1
    assert not again.data.faults.active & (1 << FAULT_STORAGE)
    damaged = bytearray(board.storage["est.a"])
    damaged[10] ^= 0xFF
    board.storage["est.a"] = bytes(damaged)
    del again
    gc.collect()
    third = app.build(board)
    assert third.data.faults.active & (1 << FAULT_STORAGE)
    _one_cycle(third, board, 3900)
    assert third.data.soc.soc > soc + 2000  # defaults: started from OCV
    assert third.fault_memory.stored & 1  # the other record is whole


def test_the_receive_loop_takes_a_bounded_number_of_frames_per_pass():
    # Bounded I/O: a flood queued ahead of the cycle is taken rx_budget_frames at a time, the
    # rest left waiting; a cycle after passes that never found the queue empty reports the
    # backlog (LoopOverrun, latched), and once a pass drained it a fault reset clears it.
    board = FakeBoard()
    bms = app.build(board)
    now = run_cycles(bms, board, 3)
    budget = bms.cfg.rx_budget_frames
    board.rx.extend([(0x000, bytes(8))] * (3 * budget))
    assert bms.comm.poll(now) is True
    assert len(board.rx) == 2 * budget
    bms.guarded_cycle(now + 100)
    assert bms.data.faults.active & (1 << FAULT_LOOP_OVERRUN)
    while bms.comm.poll(now):
        pass
    assert not board.rx
    bms.guarded_cycle(now + 200)  # the queue ran empty: the condition is gone
    bms.protection.request_reset()  # LoopOverrun is latched (docs/faults.md)
    run_cycles(bms, board, 2, now + 200)
    assert not bms.data.faults.active & (1 << FAULT_LOOP_OVERRUN)


def test_an_unclean_record_widens_the_bound_and_erased_storage_is_a_storage_fault():
    # Nothing lost across short power cycles: a record the periodic policy wrote may be older
    # than the state at the power loss, so the restored bound grows by what can have moved
    # unrecorded (app.unrecorded_soc); a shutdown record is restored as it is. Storage that
    # held records and lost both slots is a StorageFault; a first start is not.
    board = FakeBoard()
    bms = app.build(board)
    assert not bms.data.faults.active & (1 << FAULT_STORAGE)
    now = run_cycles(bms, board, 20)
    bms.persist.service(now)
    bms._est_rec.due = True
    bms.persist.service(now + 2000)  # a periodic record
    assert "est.a" in board.storage
    saved = bms.data.soc.soc_bound
    widen = app.unrecorded_soc(bms.cfg)
    assert widen > bms.cfg.persist_soc_step
    del bms
    gc.collect()
    again = app.build(board)
    assert again.data.soc.soc_bound == saved + widen
    again.persist.flush(0)  # a shutdown record of the same state
    del again
    gc.collect()
    third = app.build(board)
    assert third.data.soc.soc_bound == saved + widen  # not widened twice
    assert not third.data.faults.active & (1 << FAULT_STORAGE)
    for name in ("est.a", "est.b", "faults.a", "faults.b"):
        board.storage.pop(name, None)
    del third
    gc.collect()
    erased = app.build(board)
    assert erased.data.faults.active & (1 << FAULT_STORAGE)
