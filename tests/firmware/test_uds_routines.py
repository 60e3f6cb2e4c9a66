"""CPython only: the routines of the UDS server (0x31) driven by udsoncan, as a workshop tester
runs them: the contactor test (through precharge, interlocked with current, fault tiers, the
vehicle's request and security access), the balancing test of one cell, the SOC re-anchor at
rest, each with its start, stop and results (0x31 01/02/03) and negative responses.
"""

from __future__ import annotations

import time

import pytest
from uds_rig import Rig
from udsoncan.exceptions import NegativeResponseException

from firmware import contactors as k
from firmware import uds_table as table
from firmware.data import TEST_ABORTED, TEST_FAILED, TEST_PASSED, TEST_REFUSED, TEST_RUNNING
from hil.bench.diag import DiagClient

CT = table.RID_CONTACTOR_TEST
BT = table.RID_BALANCE_TEST
RA = table.RID_SOC_REANCHOR
BALANCE_MV = 3900  # above balance_min_mv (3800)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path / "storage", {"cell_count": 16, "balance_rest_ms": 2000})
    yield r
    r.close()


@pytest.fixture
def diag(rig) -> DiagClient:
    rig.cycles(5, vcu=0)  # the vehicle present, asking for nothing: no fault
    d = rig.tester()
    d.unlock("extended")
    return d


def wait_for(cond, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def nrc(fn, *args) -> int:
    with pytest.raises(NegativeResponseException) as e:
        fn(*args)
    return int(e.value.response.code)


def start(diag: DiagClient, rid: int, data: bytes = b"") -> bytes:
    return bytes(diag.client.start_routine(rid, data or None).service_data.routine_status_record)


def result(diag: DiagClient, rid: int) -> bytes:
    return bytes(diag.client.get_routine_result(rid).service_data.routine_status_record)


def run(rig: Rig, n: int, vcu: int = 0, **kw) -> list[tuple[int, int, int]]:
    """`n` cycles with the vehicle present; the contactor outputs after each."""
    seen = []
    for _ in range(n):
        rig.cycles(1, vcu=vcu, **kw)
        seen.append(rig.board.contactors)
    return seen


# ---- contactor test ---------------------------------------------------------------------------
def test_contactor_test_closes_through_precharge_holds_and_opens(rig, diag):
    assert start(diag, CT, bytes([5])) == bytes([TEST_RUNNING])  # hold 0.5 s
    seen = run(rig, 12)
    closed = seen.index((1, 0, 1))
    assert seen[:closed] and all(s == (1, 1, 0) for s in seen[:closed])  # precharge first
    assert seen[-1] == (0, 0, 0)
    assert seen.count((1, 0, 1)) == 1 + 5  # the cycle that closed, then the hold
    assert result(diag, CT) == bytes([TEST_PASSED, k.STANDBY])
    # Passed: a new start is a new run.
    assert start(diag, CT) == bytes([TEST_RUNNING])
    run(rig, 3)
    assert result(diag, CT) == bytes([TEST_RUNNING, k.CLOSED])


def test_contactor_test_fails_when_precharge_does_not_end(rig, diag):
    start(diag, CT)
    seen = run(rig, 40, link_mv=100)  # the link never charges
    assert (1, 0, 1) not in seen and seen[-1] == (0, 0, 0)
    assert result(diag, CT)[0] == TEST_FAILED


def test_contactor_test_interlocks(rig, diag):
    assert nrc(diag.client.get_routine_result, CT) == 0x24  # nothing run yet
    assert nrc(diag.client.stop_routine, CT) == 0x24
    assert nrc(diag.client.start_routine, CT, bytes([0])) == 0x31  # hold 0
    assert nrc(diag.client.start_routine, CT, bytes([101])) == 0x31
    assert nrc(diag.client.start_routine, CT, bytes([1, 2])) == 0x13
    rig.cycles(1, vcu=0, current_ma=5000)
    assert nrc(diag.client.start_routine, CT) == 0x22  # current flowing
    rig.cycles(1, vcu=1)
    assert nrc(diag.client.start_routine, CT) == 0x22  # the vehicle wants them closed
    rig.cycles(10, vcu=0)
    rig.cycles(8)  # no VCU frames: VcuRequestStale, open tier
    assert rig.bms.data.faults.tier == 3
    assert nrc(diag.client.start_routine, CT) == 0x22


def test_contactor_test_needs_security_and_the_extended_session(rig):
    rig.cycles(5, vcu=0)
    diag = rig.tester()
    assert nrc(diag.client.start_routine, CT) == 0x7F
    diag.session("extended")
    assert nrc(diag.client.start_routine, CT) == 0x33
    assert rig.board.contactors == (0, 0, 0)


def test_contactor_test_stopped_by_the_tester_or_ended_by_load(rig, diag):
    start(diag, CT, bytes([100]))
    run(rig, 6)
    assert rig.board.contactors == (1, 0, 1)
    assert nrc(diag.client.start_routine, CT) == 0x24  # already running
    diag.client.stop_routine(CT)
    assert run(rig, 1)[-1] == (0, 0, 0)
    assert result(diag, CT)[0] == TEST_ABORTED
    start(diag, CT, bytes([100]))
    run(rig, 6)
    assert rig.board.contactors == (1, 0, 1)
    seen = run(rig, 30, current_ma=60_000)  # a load appears: the test gives up its request
    assert result(diag, CT)[0] == TEST_ABORTED
    assert seen[-1] == (0, 0, 0)  # opened by the contactor module (after open_wait_ms)


def test_contactor_test_ends_with_its_session(rig, diag):
    start(diag, CT, bytes([100]))
    run(rig, 6)
    rig.advance(5100)  # S3 without tester present: back to the default session
    wait_for(lambda: rig.bms.diag.server.session == 1)
    seen = run(rig, 2)
    assert seen[-1] == (0, 0, 0)
    assert result_in_default(diag) == TEST_ABORTED


def result_in_default(diag: DiagClient) -> int:
    diag.unlock("extended")
    return result(diag, CT)[0]


def test_a_vehicle_close_request_takes_over_from_the_test(rig, diag):
    start(diag, CT, bytes([100]))
    run(rig, 6)
    seen = run(rig, 3, vcu=1)
    assert result(diag, CT)[0] == TEST_ABORTED
    assert seen[-1] == (1, 0, 1)  # the vehicle's close, no longer the test's


# ---- balancing test ---------------------------------------------------------------------------
def bleeding(rig: Rig) -> list[int]:
    mask = rig.bms.data.balancing.mask
    return [i for i in range(16) if mask[i >> 3] >> (i & 7) & 1]


def test_balancing_test_bleeds_one_cell_for_its_time(rig, diag):
    rig.cycles(3, vcu=0, mv=BALANCE_MV)
    assert start(diag, BT, bytes([5, 2])) == bytes([TEST_RUNNING])  # cell 5, 2 s
    seen = []
    for _ in range(25):
        rig.cycles(1, vcu=0, mv=BALANCE_MV)
        seen.append(bleeding(rig))
    assert seen.count([4]) in (19, 20) and all(s in ([4], []) for s in seen)
    assert seen[-1] == []
    assert result(diag, BT) == bytes([TEST_PASSED, rig.bms.data.balancing.reason, 5])


def test_balancing_test_negative_paths_and_abort(rig, diag):
    rig.cycles(3, vcu=0, mv=BALANCE_MV)
    assert nrc(diag.client.get_routine_result, BT) == 0x24
    assert nrc(diag.client.start_routine, BT, bytes([0])) == 0x31  # cells are 1..16
    assert nrc(diag.client.start_routine, BT, bytes([17])) == 0x31
    assert nrc(diag.client.start_routine, BT, bytes([3, 61])) == 0x31  # at most 60 s
    assert nrc(diag.client.start_routine, BT) == 0x13  # no cell
    rig.cycles(1, vcu=0, mv=3700)
    assert nrc(diag.client.start_routine, BT, bytes([3])) == 0x22  # below balance_min_mv
    rig.cycles(1, vcu=0, mv=BALANCE_MV, current_ma=5000)
    assert nrc(diag.client.start_routine, BT, bytes([3])) == 0x22  # discharging
    rig.cycles(1, vcu=0, mv=BALANCE_MV)
    start(diag, BT, bytes([3, 30]))
    rig.cycles(2, vcu=0, mv=BALANCE_MV)
    assert bleeding(rig) == [2]
    assert nrc(diag.client.start_routine, BT, bytes([4])) == 0x24
    rig.cycles(1, vcu=0, mv=BALANCE_MV, dc=700)  # above balance_max_temp_dc
    assert bleeding(rig) == [] and result(diag, BT)[0] == TEST_ABORTED
    rig.cycles(1, vcu=0, mv=BALANCE_MV)
    start(diag, BT, bytes([3, 30]))
    rig.cycles(1, vcu=0, mv=BALANCE_MV)
    diag.client.stop_routine(BT)
    rig.cycles(1, vcu=0, mv=BALANCE_MV)
    assert bleeding(rig) == [] and result(diag, BT)[0] == TEST_ABORTED


def test_balancing_test_refused_by_its_module(rig, diag):
    # What the server could not see yet: the cell drops below balance_min_mv before the
    # balancer takes the request up.
    rig.cycles(1, vcu=0, mv=BALANCE_MV)
    start(diag, BT, bytes([3]))
    rig.cycles(1, vcu=0, mv=3700)
    assert bleeding(rig) == [] and result(diag, BT)[0] == TEST_REFUSED


# ---- SOC re-anchor ----------------------------------------------------------------------------
def test_soc_reanchor_only_at_rest(rig, diag):
    assert nrc(diag.client.start_routine, RA) == 0x22  # rested 0.5 s of the 2 s
    assert nrc(diag.client.stop_routine, RA) == 0x24
    rig.cycles(20, vcu=0, mv=4000)
    assert start(diag, RA) == bytes([TEST_RUNNING])
    rig.cycles(1, vcu=0, mv=4000)
    r = result(diag, RA)
    assert r[0] == TEST_PASSED
    soc = rig.bms.data.soc
    assert r[1:] == soc.soc.to_bytes(2, "little") + soc.soc_bound.to_bytes(2, "little")
    rig.cycles(1, vcu=0, mv=4000, current_ma=5000)
    assert nrc(diag.client.start_routine, RA) == 0x22


def test_soc_reanchor_refused_by_the_estimator_after_the_rest_ended(rig, diag):
    rig.cycles(20, vcu=0, mv=4000)
    start(diag, RA)
    rig.cycles(1, vcu=0, mv=4000, current_ma=-5000)  # charging before the estimator saw it
    assert result(diag, RA)[0] == TEST_REFUSED


# ---- check of a downloaded image (programming server) ------------------------------------------
@pytest.mark.parametrize("corrupt", [False, True])
def test_check_image_result_is_readable_again(rig, corrupt):
    import udsoncan
    from test_uds import _image

    img = _image(rig, corrupt=corrupt)
    diag = rig.tester()
    diag.unlock("programming")
    loc = udsoncan.MemoryLocation(0, len(img), address_format=32, memorysize_format=32)
    block = diag.client.request_download(loc).service_data.max_length - 2
    for seq, pos in enumerate(range(0, len(img), block), 1):
        diag.client.transfer_data(seq & 0xFF, img[pos : pos + block])
    assert nrc(diag.client.get_routine_result, table.RID_CHECK_IMAGE) == 0x24  # not run yet
    assert nrc(diag.client.start_routine, table.RID_CHECK_IMAGE) == 0x24  # transfer not exited
    diag.client.request_transfer_exit()
    assert nrc(diag.client.stop_routine, table.RID_CHECK_IMAGE) == 0x12
    want = bytes([1 if corrupt else 0])
    rig.board.uds_frames.clear()
    assert start(diag, table.RID_CHECK_IMAGE) == want  # hash and MAC
    assert rig.board.uds_frames[0][:4] == b"\x03\x7f\x31\x78"  # response pending first
    assert result(diag, table.RID_CHECK_IMAGE) == want
    diag.session("default")


def test_the_tester_waits_for_the_result_beyond_s3(rig, diag):
    import threading

    stop = threading.Event()

    def cycles() -> None:
        while not stop.is_set():
            rig.cycles(1, vcu=0)
            rig.advance(400)  # half a second of board time per cycle: S3 passes meanwhile
            time.sleep(0.02)

    t = threading.Thread(target=cycles)
    t.start()
    try:
        record = diag.routine("contactor_test", bytes([100]), wait_s=30)  # hold 10 s
    finally:
        stop.set()
        t.join()
    assert record[0] == TEST_PASSED  # without tester present S3 would have aborted it
    assert run(rig, 1)[-1] == (0, 0, 0)
