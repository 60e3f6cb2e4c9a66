"""CPython only: the UDS server (firmware/uds.py) against udsoncan over can-isotp, as a workshop
tester drives it: every service with its positive and negative paths, sessions and S3, security
access with its attempt counter and delay, DTCs with status, freeze frame and occurrences,
configuration writes checked by the firmware's own rules, segmented transfers with flow control
both ways, functional addressing, and the firmware download into a slot.
"""

from __future__ import annotations

import struct

import pytest
import udsoncan
from uds_rig import Rig
from udsoncan.exceptions import NegativeResponseException

from firmware import bootrec, config
from firmware import uds_table as table
from firmware.protection import FAULT_BITS
from hil.bench.diag import DiagClient, dtc_id
from hil.bench.provision import build_image, seed_key

OV = 0  # CellOverVoltage
STALE = 8  # MeasurementStale


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path / "storage")
    yield r
    r.close()


@pytest.fixture
def diag(rig) -> DiagClient:
    return rig.tester()


def wait_for(cond, timeout=2.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def nrc(fn, *args, **kwargs) -> int:
    with pytest.raises(NegativeResponseException) as e:
        fn(*args, **kwargs)
    return int(e.value.response.code)


def raw(diag: DiagClient, payload: bytes, timeout: float = 2.0) -> bytes | None:
    """Send raw request bytes, return the raw response (None: nothing within the timeout)."""
    diag.conn.empty_rxqueue()
    diag.conn.send(payload)
    try:
        return diag.conn.wait_frame(timeout=timeout, exception=True)
    except udsoncan.exceptions.TimeoutException:
        return None


# ---- sessions, tester present, reset --------------------------------------------------------
def test_sessions_report_p2_and_p2_star(rig, diag):
    resp = diag.client.change_session(3)
    assert resp.service_data.session_echo == 3
    assert resp.service_data.p2_server_max == pytest.approx(0.05)
    assert resp.service_data.p2_star_server_max == pytest.approx(5.0)
    diag.session("programming")  # a restart into the programming server
    assert rig.prog is not None and rig.board.resets == [False]
    assert raw(diag, b"\x19\x0a") == b"\x7f\x19\x7f"  # DTCs are the application's
    assert diag.read("version")  # identification works there too
    diag.session("default")  # and back into the application
    assert rig.prog is None and raw(diag, b"\x19\x01\xff")[:2] == b"\x59\x01"


def test_no_programming_session_while_closed(rig, diag):
    rig.bms.data.contactors.neg = rig.bms.data.contactors.pos = 1
    assert raw(diag, b"\x10\x02") == b"\x7f\x10\x22"
    assert rig.board.resets == []


def test_session_negative_responses(diag):
    assert raw(diag, b"\x10\x04") == b"\x7f\x10\x12"  # no such session
    assert raw(diag, b"\x10") == b"\x7f\x10\x13"  # wrong length
    assert raw(diag, b"\x10\x03\x00") == b"\x7f\x10\x13"
    assert raw(diag, b"\x99\x00") == b"\x7f\x99\x11"  # service not supported


def test_s3_timeout_falls_back_to_default(rig, diag):
    diag.unlock("extended")
    diag.client.control_dtc_setting(2)  # off: reverts with the session
    assert rig.bms.fault_memory.frozen
    rig.advance(4000)
    diag.client.tester_present()  # within S3: still extended
    rig.advance(4000)
    assert raw(diag, b"\x85\x01") == b"\xc5\x01"
    rig.advance(5100)
    rig.cycles(1)
    assert raw(diag, b"\x85\x01") == b"\x7f\x85\x7f"  # default session now
    assert not rig.bms.fault_memory.frozen


def test_tester_present_and_its_suppress_bit(diag):
    diag.client.tester_present()
    assert raw(diag, b"\x3e\x80", timeout=0.3) is None  # suppressed positive response
    assert raw(diag, b"\x3e\x01") == b"\x7f\x3e\x12"
    assert raw(diag, b"\x3e\x00\x00") == b"\x7f\x3e\x13"


def test_functional_requests(rig, diag):
    diag.conn.empty_rxqueue()
    diag.functional(b"\x3e\x00")
    assert diag.conn.wait_frame(timeout=2) == b"\x7e\x00"
    # No 0x31 (or 0x11, 0x12, 0x7E, 0x7F) answers a functional request.
    diag.functional(b"\x22\x12\x34")
    with pytest.raises(udsoncan.exceptions.TimeoutException):
        diag.conn.wait_frame(timeout=0.3, exception=True)
    diag.functional(b"\x22\xf1\x95")
    assert diag.conn.wait_frame(timeout=2)[:3] == b"\x62\xf1\x95"


def test_ecu_reset_after_the_response_and_never_while_closed(rig, diag):
    rig.bms.data.contactors.neg = rig.bms.data.contactors.pos = 1
    assert nrc(diag.reset, True) == 0x22
    rig.bms.data.contactors.neg = rig.bms.data.contactors.pos = 0
    assert raw(diag, b"\x11\x02") == b"\x7f\x11\x12"
    diag.reset(hard=False)
    wait_for(lambda: rig.board.resets == [False])
    diag.reset(hard=True)
    wait_for(lambda: rig.board.resets == [False, True])


# ---- security access ------------------------------------------------------------------------
def test_security_needs_a_non_default_session(diag):
    assert nrc(diag.client.request_seed, 1) == 0x7F


def test_seed_key_unlocks_and_zero_seed_when_unlocked(rig, diag):
    diag.unlock("extended")
    assert rig.bms.diag.server.sec.unlocked
    assert diag.client.request_seed(1).service_data.seed == bytes(8)


def test_seeds_differ_and_a_key_is_for_its_seed_only(rig, diag):
    diag.session("extended")
    a = diag.client.request_seed(1).service_data.seed
    b = diag.client.request_seed(1).service_data.seed
    assert a != b
    assert nrc(diag.client.send_key, 1, seed_key(rig.secret, a)) == 0x35


def test_attempts_are_counted_delayed_and_survive_a_reset(rig, diag):
    diag.session("extended")
    for expected in (0x35, 0x35, 0x36):
        diag.client.request_seed(1)
        assert nrc(diag.client.send_key, 1, bytes(8)) == expected
    assert nrc(diag.client.request_seed, 1) == 0x37
    rig.rebuild()  # a reset does not give fresh attempts
    diag2 = rig.tester()
    diag2.session("extended")
    assert nrc(diag2.client.request_seed, 1) == 0x37
    rig.advance(10_500)
    diag2.session("extended")
    diag2.client.unlock_security_access(1)  # after the delay, the right key works
    assert rig.bms.diag.server.sec.attempts == 0


def test_key_without_seed_and_bad_lengths(diag):
    diag.session("extended")
    assert nrc(diag.client.send_key, 1, bytes(8)) == 0x24
    assert raw(diag, b"\x27\x03") == b"\x7f\x27\x12"
    assert raw(diag, b"\x27\x01\x00") == b"\x7f\x27\x13"


def test_no_provisioning_no_security_access(tmp_path):
    rig = Rig(tmp_path / "s", provision=False)
    try:
        diag = rig.tester(secret=b"\0" * 32)
        diag.session("extended")
        assert nrc(diag.client.request_seed, 1) == 0x22
    finally:
        rig.close()


# ---- DTCs -----------------------------------------------------------------------------------
def _overvoltage(rig):
    rig.cycles(3)
    rig.cycles(6, mv=4400)  # above cell_ov_mv for longer than v_qualify_ms


def test_dtc_with_status_freeze_frame_and_occurrences(rig, diag):
    _overvoltage(rig)
    entries = {d.bit: d for d in diag.dtcs(mask=0x01)}  # testFailed
    ov = entries[OV]
    assert ov.name == "CellOverVoltage" and ov.code == "P1A00"
    assert ov.status & 0x2F == 0x2F and ov.status & 0x80  # open tier: warning indicator
    assert ov.freeze["cell_max_mv"] == 4400 and ov.freeze["pack_mv"] == 16 * 4400
    assert ov.count == 1 and ov.first_s == ov.last_s
    n = diag.client.get_number_of_dtc_by_status_mask(0x01).service_data.dtc_count
    assert n == len(entries)
    rig.cycles(2, mv=3700)
    d = {d.bit: d for d in diag.dtcs()}[OV]
    assert d.status & 0x01  # latched until a fault reset finds the condition gone


def test_supported_dtcs_are_the_fault_catalogue(diag):
    sup = diag.supported_dtcs()
    assert [d.bit for d in sup] == list(range(FAULT_BITS))
    assert all(d.status == 0x50 for d in sup)  # nothing tested yet


def test_dtc_requests_out_of_range(diag):
    assert nrc(diag.client.get_dtc_snapshot_by_dtc_number, 0x123456, 1) == 0x31
    assert nrc(diag.client.get_dtc_snapshot_by_dtc_number, dtc_id(0), 2) == 0x31
    assert raw(diag, b"\x19\x42\xff") == b"\x7f\x19\x12"
    assert raw(diag, b"\x19\x02") == b"\x7f\x19\x13"


def test_clear_needs_security_keeps_active_faults_and_not_while_closed(rig, diag):
    rig.cycles(3)
    rig.cycles(8, fresh=False)  # MeasurementStale (self-clearing)
    _overvoltage(rig)  # overvoltage active (latched), stale data stored, gone
    stored = {d.bit: d for d in diag.dtcs(mask=0x08, details=False)}
    assert stored[OV].active and not stored[STALE].active
    assert raw(diag, b"\x14\xff\xff\xff") == b"\x7f\x14\x7f"  # default session
    diag.session("extended")
    assert raw(diag, b"\x14\xff\xff\xff") == b"\x7f\x14\x33"  # locked
    diag.client.unlock_security_access(1)
    rig.bms.data.contactors.pre = 1
    assert raw(diag, b"\x14\xff\xff\xff") == b"\x7f\x14\x22"
    rig.bms.data.contactors.pre = 0
    diag.client.clear_dtc()
    left = {d.bit: d for d in diag.dtcs(mask=0x28)}
    assert OV in left and STALE not in left  # still active: never dropped
    assert left[OV].freeze["cell_max_mv"] == 4400
    assert rig.board.storage_read("faults.a") or rig.board.storage_read("faults.b")


def test_dtc_setting_off_stops_recording(rig, diag):
    assert nrc(diag.client.control_dtc_setting, 2) == 0x7F
    diag.session("extended")
    assert nrc(diag.client.control_dtc_setting, 2) == 0x33
    diag.client.unlock_security_access(1)
    diag.client.control_dtc_setting(2)
    _overvoltage(rig)
    assert OV not in {d.bit for d in diag.dtcs(mask=0x08, details=False)}
    diag.client.control_dtc_setting(1)
    rig.cycles(1, mv=4400)
    assert OV in {d.bit for d in diag.dtcs(mask=0x08, details=False)}


# ---- data identifiers -----------------------------------------------------------------------
def test_identification_dids(rig, diag):
    assert diag.read("serial") == "RIG-0001"
    assert diag.read("version") == __import__("firmware").__version__
    assert diag.read("part") == "cellguard-rig"
    assert diag.read("vin") == ""


def test_live_data_and_cell_blocks(rig, diag):
    rig.cycles(3, mv=3650, dc=231, current_ma=-2500)
    live = diag.live()
    assert live["pack_mv"] == 16 * 3650 and live["current_ma"] == -2500
    assert live["vmin_mv"] == 3650 and live["tmax_dc"] == 231
    assert live["state"] == rig.bms.data.contactors.state
    assert diag.read("cell_mv[0]") == [3650] * 16
    assert raw(diag, b"\x22\x02\x01") == b"\x7f\x22\x31"  # 16 cells: one block only


def test_several_dids_in_one_segmented_response(rig, diag):
    values = diag.read_many([0xF190, 0xF18C, 0xF195, 0xF187, 0x0100, 0x0200])
    assert values[0xF18C] == "RIG-0001" and len(values) == 6


def test_unknown_did_and_bad_lengths(diag):
    assert raw(diag, b"\x22\x12\x34") == b"\x7f\x22\x31"
    assert raw(diag, b"\x22\xf1") == b"\x7f\x22\x13"
    assert raw(diag, b"\x22" + b"\xf1\x90" * 9) == b"\x7f\x22\x13"


def test_configuration_read(rig, diag):
    i = [r[0] for r in config.rows()].index("cell_ov_mv")
    assert diag.read(table.CONFIG_BASE + i) == rig.bms.cfg.cell_ov_mv == diag.read("cell_ov_mv")


def test_configuration_write_rules(rig, diag):
    assert nrc(diag.client.write_data_by_identifier, diag.resolve("cell_ov_mv").did, 4300) == 0x7F
    diag.session("extended")
    did = diag.resolve("cell_ov_mv").did
    assert nrc(diag.client.write_data_by_identifier, did, 4300) == 0x33
    diag.client.unlock_security_access(1)
    assert nrc(diag.client.write_data_by_identifier, did, 9000) == 0x31  # out of its range
    assert nrc(diag.client.write_data_by_identifier, did, 4100) == 0x31  # below cell_charge_max
    assert raw(diag, b"\x2e" + struct.pack(">H", did) + b"\x01\x02") == b"\x7f\x2e\x13"
    assert nrc(diag.client.write_data_by_identifier, 0xF18C, "X") == 0x31  # read-only
    rig.bms.data.contactors.neg = 1
    assert nrc(diag.client.write_data_by_identifier, did, 4300) == 0x22
    rig.bms.data.contactors.neg = 0
    diag.client.write_data_by_identifier(did, 4300)
    assert diag.read("config_pending") if "config_pending" in diag.by_name else True
    assert diag.read("counters")["config_pending"] == 1
    assert rig.bms.cfg.cell_ov_mv == 4250  # applied at the next start, not now
    assert config.from_board(rig.board).cell_ov_mv == 4300


def test_vin_write_survives_a_reset(rig, diag):
    diag.write("vin", "WCG0123456789ABCD")
    rig.rebuild()
    assert rig.tester().read("vin") == "WCG0123456789ABCD"


# ---- communication control -------------------------------------------------------------------
def test_communication_control_silences_the_bms(rig, diag):
    from firmware import can_codec

    diag.unlock("extended")
    diag.client.communication_control(1, 1)  # enable rx, disable tx of normal messages
    rig.board.sent.clear()
    rig.cycles(2)
    assert can_codec.BMS_STATE_ID not in rig.board.sent
    diag.client.communication_control(0, 1)
    rig.cycles(2)
    assert can_codec.BMS_STATE_ID in rig.board.sent
    assert raw(diag, b"\x28\x00\x00") == b"\x7f\x28\x31"
    rig.bms.data.contactors.pos = 1
    assert raw(diag, b"\x28\x01\x01") == b"\x7f\x28\x22"


# ---- ISO-TP segmentation and flow control, both ways -----------------------------------------
@pytest.mark.parametrize("blocksize,stmin", [(0, 0), (1, 0), (3, 2), (8, 0)])
def test_segmented_responses_honour_the_testers_flow_control(rig, blocksize, stmin):
    diag = rig.tester(isotp_params={"blocksize": blocksize, "stmin": stmin})
    rig.cycles(2)
    sup = diag.supported_dtcs()  # 3 + 4 bytes per DTC: 17 consecutive frames and more
    assert len(sup) == FAULT_BITS


def test_segmented_requests_get_flow_control_and_padding(rig, diag):
    diag.unlock("extended")
    rig.board.uds_frames.clear()
    diag.write("vin", "WCG0123456789ABCD")  # 20 bytes: a first and 2 consecutive frames
    fcs = [f for f in rig.board.uds_frames if f[0] >> 4 == 3]
    # The key (10 bytes) and the VIN write (20 bytes) each got a CTS with BS 8, STmin 0.
    assert fcs == [bytes((0x30, 8, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC))] * 2
    assert all(len(f) == 8 for f in rig.board.uds_frames)  # every frame padded
    assert diag.read("vin") == "WCG0123456789ABCD"


# ---- routines and download --------------------------------------------------------------------
def test_routines_negative_paths(rig, diag):
    assert nrc(diag.client.start_routine, 0x0202) == 0x7F  # programming session only
    diag.unlock("programming")
    assert nrc(diag.client.start_routine, 0x4242) == 0x31
    assert nrc(diag.client.start_routine, 0x0202) == 0x24  # nothing downloaded
    assert raw(diag, b"\x31\x05\x02\x02") == b"\x7f\x31\x12"


def _image(rig, secret=None, corrupt=False):
    files = {"firmware/__init__.mpy": b"M\x06" + bytes(300), "firmware/app.mpy": bytes(9000)}
    img = bytearray(build_image(files, secret or rig.secret))
    if corrupt:
        img[100] ^= 1
    return bytes(img)


def test_download_check_and_switch(rig, diag):
    img = _image(rig)
    progress = []
    assert diag.flash(img, lambda done, total: progress.append(done))
    assert progress[-1] == len(img)
    assert bootrec.read(rig.board) == [1, 0, 1, 0]  # slot a on trial, factory still good
    wait_for(lambda: rig.board.resets == [False, True])  # into programming, then the switch
    assert (rig.storage / "slot_a" / "firmware" / "app.mpy").read_bytes() == bytes(9000)


@pytest.mark.parametrize("kind", ["other key", "corrupted"])
def test_a_forged_or_damaged_image_never_switches(rig, diag, kind):
    img = _image(rig, secret=b"\x55" * 32) if kind == "other key" else _image(rig, corrupt=True)
    assert not diag.flash(img)
    assert bootrec.read(rig.board) == [0, 0, 0, 0]
    assert rig.board.resets == [False]  # into programming only: no reset into a new image


def test_download_sequence_errors(rig, diag):
    assert nrc(diag.client.transfer_data, 1, b"x") == 0x7F
    diag.unlock("programming")
    assert nrc(diag.client.transfer_data, 1, b"x") == 0x24
    loc = udsoncan.MemoryLocation(0, 5000, address_format=32, memorysize_format=32)
    diag.client.request_download(loc)
    assert nrc(diag.client.transfer_data, 2, b"x") == 0x73  # wrong block sequence counter
    assert nrc(diag.client.request_transfer_exit) == 0x24  # incomplete
    bad = udsoncan.MemoryLocation(4, 5000, address_format=32, memorysize_format=32)
    assert nrc(diag.client.request_download, bad) == 0x31


def test_download_needs_security(rig, diag):
    diag.session("extended")
    diag.session("programming")
    loc = udsoncan.MemoryLocation(0, 5000, address_format=32, memorysize_format=32)
    assert nrc(diag.client.request_download, loc) == 0x33
