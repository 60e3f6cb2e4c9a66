"""CPython only: the diagnostic timing in lock-step (the board clock moves only when the test
moves it, as on the bench's simulated time): the ISO-TP timeouts N_Cr, N_Bs (with FC Wait) and
N_As judged to the millisecond, the tester's STmin honoured in board milliseconds against
can-isotp's stack, and P2 / P2* of the UDS server: every request answered before the board
clock moves, slow work (a flash write) answered 0x78 at once and again within P2* until done.
"""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import can
import pytest
import udsoncan
from uds_rig import Rig

from firmware import slots
from firmware.can_codec import UDS_PHYSICAL_REQUEST_ID, UDS_RESPONSE_ID
from firmware.isotp import IsoTp
from firmware.protection import FAULT_BITS
from hil.bench.provision import build_image

P2_MS = 50
P2X_MS = 5000
N_MS = 1000  # N_Cr, N_Bs and N_As of the BMS (firmware/isotp.py defaults)
# 0x22 with four DIDs: 9 bytes, a first frame and one consecutive frame
READ4 = bytes.fromhex("22f195f18cf187f190")
SUPPORTED = 3 + 4 * FAULT_BITS  # bytes of the response to 0x19 0A


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path / "storage", lockstep=True)
    yield r
    r.close()


def send(rig: Rig, data: bytes) -> None:
    """One frame to the BMS, taken before the clock moves again (as the bench orders them)."""
    rig.tester_bus.send(
        can.Message(
            arbitration_id=UDS_PHYSICAL_REQUEST_ID,
            data=data.ljust(8, b"\xcc"),
            is_extended_id=False,
        )
    )
    time.sleep(0.03)


def recv(rig: Rig, timeout: float = 0.3) -> bytes | None:
    """The next frame on the response id (None: nothing within `timeout` s of wall time)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = rig.tester_bus.recv(left)
        if msg is not None and msg.arbitration_id == UDS_RESPONSE_ID:
            return bytes(msg.data)
    return None


def move(rig: Rig, ms: int) -> None:
    """Move the board clock and let the BMS's services see the new time."""
    rig.advance(ms)
    time.sleep(0.03)


# ---- ISO-TP timeouts --------------------------------------------------------------------------
@pytest.mark.parametrize("gap", [N_MS, N_MS + 1])
def test_n_cr_the_next_consecutive_frame_within_1000_ms(rig, gap):
    send(rig, b"\x10\x09" + READ4[:6])
    assert recv(rig) == bytes((0x30, 8, 0)) + b"\xcc" * 5  # CTS, BS 8, STmin 0
    move(rig, gap)
    send(rig, b"\x21" + READ4[6:])
    first = recv(rig)
    if gap <= N_MS:
        assert first is not None and first[0] >> 4 == 1 and first[2] == 0x62  # an FF: 62 ...
    else:
        assert first is None  # the reception was dropped: no request, no response
        send(rig, b"\x02\x3e\x00")  # and the next request is served as usual
        assert recv(rig)[:3] == b"\x02\x7e\x00"


@pytest.mark.parametrize("gap", [N_MS, N_MS + 1])
def test_n_bs_the_testers_flow_control_within_1000_ms(rig, gap):
    send(rig, b"\x02\x19\x0a")  # supported DTCs
    ff = recv(rig)
    assert ff is not None and ff[:4] == bytes((0x10, SUPPORTED, 0x59, 0x0A))
    move(rig, gap)
    send(rig, b"\x30\x00\x00")
    cf = recv(rig)
    if gap <= N_MS:
        assert cf is not None and cf[0] == 0x21
    else:
        assert cf is None  # the transmission was given up


@pytest.mark.parametrize("waits,served", [(8, True), (9, False)])
def test_fc_wait_restarts_n_bs_at_most_wft_max_times(rig, waits, served):
    send(rig, b"\x02\x19\x0a")
    assert recv(rig)[0] == 0x10
    for _ in range(waits):
        move(rig, N_MS - 100)
        send(rig, b"\x31\x00\x00")  # FC Wait
    move(rig, N_MS - 100)  # 8.1 s after the FF and more: only the waits kept it alive
    send(rig, b"\x30\x00\x00")
    cf = recv(rig)
    assert (cf is not None and cf[0] == 0x21) == served


@pytest.mark.parametrize("gap,sent", [(N_MS, True), (N_MS + 1, False)])
def test_n_as_a_frame_the_bus_does_not_take_is_retried_for_1000_ms(rig, gap, sent):
    rig.board.refuse_tx = True  # the transmit queue is full
    send(rig, b"\x02\x3e\x00")
    move(rig, gap)
    rig.board.refuse_tx = False
    assert (recv(rig) == b"\x02\x7e\x00" + b"\xcc" * 5) == sent


def test_the_testers_stmin_in_board_milliseconds_against_can_isotp(rig):
    # can-isotp receives the supported DTCs in consecutive frames, asking for STmin 20 ms; the
    # board clock moves 5 ms at a time while it waits.
    diag = rig.tester(isotp_params={"stmin": 20, "blocksize": 0})
    stop = threading.Event()

    def clock() -> None:
        while not stop.is_set():
            rig.advance(5)
            time.sleep(0.002)

    t = threading.Thread(target=clock)
    t.start()
    try:
        rig.board.uds_frames.clear()
        rig.board.uds_times.clear()
        assert len(diag.supported_dtcs()) == FAULT_BITS
    finally:
        stop.set()
        t.join()
    frames = zip(rig.board.uds_frames, rig.board.uds_times, strict=True)
    times = [t for f, t in frames if f[0] >> 4 == 2]
    assert len(times) == -(-(SUPPORTED - 6) // 7)
    assert min(b - a for a, b in pairwise(times)) >= 20


def test_stmin_codes_are_read_as_iso_15765_says():
    # 0xF1..0xF9 (100..900 us) as 1 ms, the reserved codes as the longest, 127 ms.
    tp = IsoTp(None, 1, 2, 3, bytearray(64))
    for code, ms in ((0x00, 0), (0x7F, 127), (0xF1, 1), (0xF9, 1), (0x80, 127), (0xFA, 127)):
        tp.state = 3  # TX_FC
        tp._t = 0
        tp._flow_control(bytes((0x30, 0, code)), 3, 10)
        assert tp._tx_stmin == ms, hex(code)


# ---- P2 and P2* -------------------------------------------------------------------------------
def test_every_request_is_answered_before_the_board_clock_moves(rig):
    diag = rig.tester()
    t0 = rig.board.now()
    diag.client.tester_present()
    diag.read("version")
    diag.supported_dtcs()
    diag.client.change_session(3)
    assert rig.board.now() == t0  # nothing moved the clock
    assert all(t - t0 <= P2_MS for t in rig.board.uds_times)


def test_a_slow_flash_write_answers_0x78_within_p2_and_again_within_p2_star(rig, monkeypatch):
    # A slow flash: each 512-byte write step takes 400 ms of board time, a 4093-byte block
    # 8 steps (3.2 s), longer than the 2 s between response-pending renewals.
    write = slots.Download.write

    def slow_write(self, data, start, end):  # type: ignore[no-untyped-def]
        rig.board.offset_ms += 400
        return write(self, data, start, end)

    monkeypatch.setattr(slots.Download, "write", slow_write)
    files = {"firmware/__init__.mpy": b"M\x06" + bytes(300), "firmware/app.mpy": bytes(9000)}
    image = build_image(files, rig.secret)
    diag = rig.tester()
    diag.unlock("programming")
    loc = udsoncan.MemoryLocation(0, len(image), address_format=32, memorysize_format=32)
    assert diag.client.request_download(loc).service_data.max_length == 4095
    rig.board.uds_frames.clear()
    rig.board.uds_times.clear()
    t0 = rig.board.now()
    diag.client.transfer_data(1, image[:4093])  # udsoncan accepts the pending responses
    frames = list(zip(rig.board.uds_frames, rig.board.uds_times, strict=True))
    answers = [(f, t) for f, t in frames if f[0] >> 4 in (0, 1)]  # SF or FF, not FC
    pending = [t for f, t in answers if f[1:4] == b"\x7f\x36\x78"]
    final = [t for f, t in answers if f[1] == 0x76]
    assert pending[0] - t0 <= P2_MS  # 0x78 at once
    assert len(pending) == 2 and 2000 <= pending[1] - pending[0] < P2X_MS  # renewed
    assert len(final) == 1 and 0 < final[0] - pending[-1] < P2X_MS
    assert final[0] - t0 >= 3200  # it really took the flash's time
    diag.session("default")
