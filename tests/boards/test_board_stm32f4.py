"""boards/stm32f4.py under CPython with fake `machine`/`pyb`: construction from the profile, CAN
through machine.CAN or the pyb.CAN fallback, contactor pins, watchdog, config and storage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from board_fakes import (
    SOFT_RESET,
    WDT_RESET,
    MachineCAN,
    make_machine,
    make_pyb,
    pin_named,
    profile,
)
from vcu_frames import VcuSender

from boards import stm32f4
from firmware import app
from firmware import can_codec as codec

PROFILE = profile("stm32f4")


def test_constructs_from_profile_with_outputs_low_and_watchdog_started() -> None:
    m = make_machine()
    board = stm32f4.Board(PROFILE, machine=m)
    pins = PROFILE["pins"]
    for key in ("contactor_neg", "contactor_pre", "contactor_pos", "cooling"):
        assert pin_named(m, pins[key]).history == [0], key
    (can,) = m.made["can"]
    assert (can.id, can.bitrate) == (1, 500_000)
    assert can.kwargs == {"tseg1": 13, "tseg2": 2, "sjw": 1}
    assert can.filters is None  # receive everything
    # NUCLEO-F413ZH: APB1 24 MHz / prescaler 3 / (1 + tseg1 + tseg2) time quanta = 500 kbit/s
    c = PROFILE["can"]
    assert (c["clock_hz"], c["prescaler"]) == (24_000_000, 3)
    assert can.kwargs == {"tseg1": c["tseg1"], "tseg2": c["tseg2"], "sjw": c["sjw"]}
    quanta = 1 + c["tseg1"] + c["tseg2"]
    assert c["clock_hz"] % (c["prescaler"] * quanta) == 0
    assert c["clock_hz"] // c["prescaler"] // quanta == c["bitrate"]
    assert 100 * (1 + c["tseg1"]) / quanta == c["sample_point_pct"]
    assert (pins["can_rx"], pins["can_tx"]) == ("G0", "G1")  # CAN1 on PG0 / PG1
    (wdt,) = m.made["wdt"]
    assert wdt.timeout == PROFILE["wdt_ms"]
    assert board.can_api == "machine.CAN" and board.realtime
    assert board.reset_cause() == 0
    assert board.advance(100) is False  # SIM_Tick does not move a real board's clock


@pytest.mark.parametrize(("cause", "expected"), [(WDT_RESET, 1), (SOFT_RESET, 2)])
def test_reset_cause(cause: int, expected: int) -> None:
    assert stm32f4.Board(PROFILE, machine=make_machine(reset=cause)).reset_cause() == expected


def test_contactors_drive_the_profile_pins_and_watchdog_is_fed() -> None:
    m = make_machine()
    board = stm32f4.Board(PROFILE, machine=m)
    board.set_contactors(1, 1, 0)
    board.set_contactors(1, 0, 1)
    pins = PROFILE["pins"]
    assert pin_named(m, pins["contactor_neg"]).history == [0, 1, 1]
    assert pin_named(m, pins["contactor_pre"]).history == [0, 1, 0]
    assert pin_named(m, pins["contactor_pos"]).history == [0, 0, 1]
    board.set_cooling(True)
    assert pin_named(m, pins["cooling"]).history == [0, 1]
    board.wdt_feed()
    board.wdt_feed()
    assert m.made["wdt"][0].feeds == 2


def test_machine_can_send_queues_while_mailboxes_are_busy() -> None:
    m = make_machine()
    board = stm32f4.Board(PROFILE, machine=m)
    can = m.made["can"][0]
    buf = bytearray(8)
    for i in range(5):
        buf[0] = i
        board.can_send(0x100 + i, buf, 1 + i)
    # Three hardware slots, two frames wait in the board's queue, in order.
    assert [f[0] for f in can.queued] == [0x100, 0x101, 0x102]
    assert [len(f[1]) for f in can.queued] == [1, 2, 3]  # exactly dlc bytes go out
    assert all(f[2] == MachineCAN.FLAG_UNORDERED for f in can.queued)
    assert board.tx_pending() == 2
    can.transmit_all()
    assert board.can_recv(bytearray(8)) == -1  # receiving also drains the transmit queue
    assert [f[0] for f in can.queued] == [0x103, 0x104]
    assert can.queued[1][1] == bytes([4, 0, 0, 0, 0])
    assert board.tx_pending() == 0


def test_machine_can_receive_skips_extended_and_remote_frames() -> None:
    m = make_machine()
    board = stm32f4.Board(PROFILE, machine=m)
    can = m.made["can"][0]
    can.rx.extend(
        [
            (0x1ABCDEF, b"\x01", MachineCAN.FLAG_EXT_ID),
            (0x300, b"", MachineCAN.FLAG_RTR),
            (0x301, b"\x11\x22\x33", 0),
        ]
    )
    buf = bytearray(8)
    assert board.can_recv(buf) == 0x301
    assert board.rx_dlc == 3 and buf[:3] == b"\x11\x22\x33"
    assert board.can_recv(buf) == -1


def test_wait_keeps_a_frame_it_saw_for_can_recv() -> None:
    m = make_machine()
    board = stm32f4.Board(PROFILE, machine=m)
    can = m.made["can"][0]
    board.wait(0)
    can.rx.append((0x123, b"\xaa\xbb", 0))
    board.wait(1000)  # returns at once: a frame is waiting
    can.rx.append((0x124, b"\xcc", 0))
    buf = bytearray(8)
    assert board.can_recv(buf) == 0x123 and board.rx_dlc == 2 and buf[:2] == b"\xaa\xbb"
    assert board.can_recv(buf) == 0x124 and board.rx_dlc == 1 and buf[0] == 0xCC


def test_falls_back_to_pyb_can_without_machine_can() -> None:
    m = make_machine(with_can=False)
    pyb = make_pyb()
    board = stm32f4.Board(PROFILE, machine=m, pyb=pyb)
    (can,) = pyb.made
    assert board.can_api == "pyb.CAN"
    assert can.bus == 1 and can.mode == can.NORMAL
    assert can.kwargs == {"prescaler": 3, "sjw": 1, "bs1": 13, "bs2": 2, "auto_restart": True}
    c = PROFILE["can"]
    assert (can.kwargs["prescaler"], can.kwargs["bs1"], can.kwargs["bs2"], can.kwargs["sjw"]) == (
        c["prescaler"],
        c["tseg1"],
        c["tseg2"],
        c["sjw"],
    )
    assert can.filter == (0, can.MASK16, 0, (0, 0, 0, 0))
    buf = bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    for i in range(4):
        board.can_send(0x200 + i, buf, 8)
    assert [f[0] for f in can.mailboxes] == [0x200, 0x201, 0x202]
    assert board.tx_pending() == 1
    can.transmit_all()
    can.rx.extend([(0x7FF, True, b""), (0x010, False, b"\x09\x08")])
    out = bytearray(8)
    assert board.can_recv(out) == 0x010 and board.rx_dlc == 2 and out[:2] == b"\x09\x08"
    assert [f[0] for f in can.mailboxes] == [0x203]


def test_from_args_reads_board_json_and_config_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "board.json").write_text(json.dumps(PROFILE))
    (tmp_path / "config.json").write_text(json.dumps({"cell_count": 8}))
    monkeypatch.chdir(tmp_path)
    m = make_machine()
    monkeypatch.setitem(sys.modules, "machine", m)
    board = stm32f4.from_args([])
    assert board.config_overrides() == {"cell_count": 8}
    assert board.storage_read("soc") is None
    board.storage_write("soc", b"1234")
    board.storage_write("soc", b"5678")
    assert board.storage_read("soc") == b"5678"
    with pytest.raises(ValueError):
        stm32f4.from_args(["--port", "1"])


def test_the_bms_runs_on_the_board_and_closes_the_contactor_pins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The firmware's own loop pieces on a HIL board (profile measurement "bench"): injected
    frames in, contactor pins out."""
    monkeypatch.chdir(tmp_path)  # the board's storage (cg_* files): the VCU key lands here
    vcu = VcuSender.provision(tmp_path)
    m = make_machine()
    board = stm32f4.Board(dict(PROFILE, measurement="bench"), machine=m)
    bms = app.build(board)
    can = m.made["can"][0]
    pins = PROFILE["pins"]
    buf = bytearray(8)
    now = 0
    for _ in range(10):
        for g in range(4):
            codec.encode_sim_cell_voltages(buf, g, 3700, 3700, 3700, 3700)
            can.rx.append((codec.SIM_CELL_VOLTAGES_ID, bytes(buf), 0))
            codec.encode_sim_cell_temps(buf, g, 250, 250, 250, 250)
            can.rx.append((codec.SIM_CELL_TEMPS_ID, bytes(buf), 0))
        link = 16 * 3700 // 100 if bms.data.contactors.pre else 0
        codec.encode_sim_pack_measurements(buf, 0, 16 * 3700 // 100, link, 0)
        can.rx.append((codec.SIM_PACK_MEASUREMENTS_ID, bytes(buf), 0))
        k = bms.data.contactors  # the bench reports the contactors as the pins left them
        codec.encode_sim_aux(buf, k.neg, k.pre, k.pos, 0)
        can.rx.append((codec.SIM_AUX_ID, bytes(buf), 0))
        can.rx.append((codec.VCU_REQUEST_ID, vcu.frame(close=True), 0))
        bms.comm.poll(now)
        assert bms.guarded_cycle(now)
        board.wdt_feed()
        can.transmit_all()
        board.can_recv(bytearray(8))
        can.transmit_all()
        now += 100
    assert pin_named(m, pins["contactor_neg"]).value() == 1
    assert pin_named(m, pins["contactor_pos"]).value() == 1
    assert pin_named(m, pins["contactor_pre"]).value() == 0
    assert 1 in pin_named(m, pins["contactor_pre"]).history  # it precharged first
    assert codec.BMS_STATE_ID in {f[0] for f in can.sent}
    assert m.made["wdt"][0].feeds == 10
