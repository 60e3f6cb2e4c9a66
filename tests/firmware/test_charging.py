"""CPython only: the BMS's GB/T 27930 session (firmware/charging.py, inside the whole firmware)
against the simulated charger (sim/charger.py), the normal session and each charger fault case;
the session's CAN log decodes completely with cantools and dbc/gbt27930.dbc."""

from __future__ import annotations

from pathlib import Path

import can
import cantools
import pytest
from charging_rig import Rig, soc_pct

from firmware import charging as fwc
from firmware.protection import FAULT_CHARGER
from hil import GBT_DBC_PATH
from sim.charger import FINISHED, OFF, ChargerFaults, DcCharger
from sim.j1939tp import Frame, Transport

DB = cantools.database.load_file(str(GBT_DBC_PATH))


def ended(rig: Rig) -> bool:
    return rig.chg.state in (fwc.DONE, fwc.IDLE) and rig.now > 3000


def charger_fault_active(rig: Rig) -> bool:
    return bool(rig.bms.data.faults.active >> FAULT_CHARGER & 1)


def test_a_session_charges_to_the_soc_target_and_ends_cleanly() -> None:
    rig = Rig(soc=0.5, overrides={"gbt_soc_target": 5100})
    rig.run(120_000, ended)
    assert rig.violations == []
    assert rig.chg.state == fwc.DONE and rig.chg.completed == 1
    assert rig.chg.stop_reason == fwc.STOP_SOC and rig.charger.bms_stop == {"BstSocReached": 1}
    assert rig.charger.stage == FINISHED and rig.charger.cem_sent == []
    assert 50.9 < soc_pct(rig) < 51.3
    assert rig.board.contactors == (0, 0, 0) and len(rig.closed_at) == 1
    # The BMS steered the current: the charger delivered its 1 C limit, no more.
    assert max(ma for _, ma in rig.bcl_history) == rig.bms.cfg.max_charge_ma
    assert not charger_fault_active(rig)


def test_the_cv_end_stops_on_the_cell_voltage() -> None:
    rig = Rig(soc=0.9, overrides={"gbt_end_ma": 1500})  # the end of CV, not all of it: CI time
    rig.run(600_000, ended)
    cfg = rig.bms.cfg
    assert rig.violations == []
    assert rig.chg.stop_reason == fwc.STOP_CELL_VOLTAGE
    assert cfg.charge_taper_mv / 1000 < max(rig.pack.cell_voltage_v) < cfg.cell_ov_mv / 1000
    demand = [ma for _, ma in rig.bcl_history]
    assert demand[-1] < 1500 < max(demand)  # the BMS tapered its demand, the charger followed
    ccs = [
        DB.decode_message("CCS", f.data, decode_choices=False)["CcsCurrent"]
        for _, f in rig.log
        if f.can_id == fwc.c.CCS_ID
    ]
    assert -1.6 < ccs[-1] < 0  # amperes, negative = charging


def test_lost_ccs_ends_the_session_logs_charger_fault_and_retries_three_times() -> None:
    rig = Rig(charger=DcCharger(insulation_ms=1000, faults=ChargerFaults(ccs_stops_at=5000)))
    rig.run(200_000, lambda r: r.chg.state == fwc.DONE)
    assert rig.violations == []
    assert rig.chg.bem & 1 << fwc.BEM_CCS
    assert rig.chg.reconnects == 3 and rig.charger.attempts == 3
    assert len(rig.closed_at) == 4  # each reconnection closed again: no fault before the last
    rig.run(500)  # the next control cycles take the fault in
    assert charger_fault_active(rig)  # the last attempt lost CCS too: latched, open tier
    assert rig.bms.fault_memory.stored >> FAULT_CHARGER & 1
    assert rig.board.contactors == (0, 0, 0)
    bems = [f for _, f in rig.log if f.can_id == fwc.c.BEM_ID]
    assert bems
    assert all(
        DB.decode_message("BEM", f.data, decode_choices=False)["BemCcsTimeout"] == 1 for f in bems
    )


def test_an_over_current_charger_is_cut_off() -> None:
    faults = ChargerFaults(overcurrent_at=6000, overcurrent_pct=150)
    rig = Rig(charger=DcCharger(insulation_ms=1000, faults=faults))
    rig.run(60_000, lambda r: r.board.contactors == (0, 0, 0) and r.now > 6000)
    cfg = rig.bms.cfg
    assert rig.now <= 6000 + cfg.gbt_oc_ms + cfg.open_wait_ms + 500
    assert rig.chg.stop_reason & fwc.STOP_CURRENT and charger_fault_active(rig)
    rig.run(20_000, ended)
    assert rig.charger.bms_stop.get("BstErrorCurrent") == 1
    assert rig.bms.errors == 0


@pytest.mark.parametrize(
    ("faults", "cst_field"),
    [
        (ChargerFaults(emergency_stop_at=8000), "CstFaultEmergencyStop"),
        (ChargerFaults(insulation_at=8000), "CstFaultOther"),
    ],
    ids=["emergency-stop", "insulation-while-charging"],
)
def test_a_charger_stop_is_answered_and_reported(faults: ChargerFaults, cst_field: str) -> None:
    rig = Rig(charger=DcCharger(insulation_ms=1000, faults=faults))
    rig.run(60_000, ended)
    assert rig.violations == []
    assert rig.chg.stop_reason == fwc.STOP_CHARGER
    assert rig.chg.charger_stop & 1 << 2  # CST 1.5: fault
    assert rig.charger.bms_stop == {"BstChargerStopped": 1}
    assert rig.board.contactors == (0, 0, 0)
    csts = [
        DB.decode_message("CST", f.data, decode_choices=False)
        for _, f in rig.log
        if f.can_id == fwc.c.CST_ID
    ]
    assert csts and csts[0][cst_field] == 1


def test_insulation_fault_at_the_check_never_closes() -> None:
    faults = ChargerFaults(insulation_at_check=True)
    rig = Rig(charger=DcCharger(insulation_ms=1000, faults=faults))
    rig.run(80_000, lambda r: r.chg.state == fwc.DONE)
    assert rig.charger.stage == OFF and rig.closed_at == []
    assert rig.chg.bem == 1 << fwc.BEM_CRM00  # no CRM within 30 s of CHM
    assert rig.violations == []


def test_a_stuck_relay_still_ends_with_the_pack_disconnected() -> None:
    rig = Rig(
        soc=0.5,
        overrides={"gbt_soc_target": 5050},
        charger=DcCharger(insulation_ms=1000, faults=ChargerFaults(stuck_relay=True)),
    )
    rig.run(60_000, ended)
    assert rig.charger.relay_closed  # the charger's relay never opened
    assert rig.board.contactors == (0, 0, 0) and rig.chg.state == fwc.DONE
    assert rig.violations == []


def test_no_brm_acknowledge_times_out_and_reconnects() -> None:
    rig = Rig(charger=DcCharger(insulation_ms=1000, faults=ChargerFaults(no_crm_aa=True)))
    rig.run(120_000, lambda r: r.chg.state == fwc.DONE)
    assert rig.chg.bem & 1 << fwc.BEM_CRMAA
    assert rig.closed_at == [] and rig.violations == []


@pytest.mark.parametrize("edition_2015", [0, 1])
def test_a_charger_without_chm_is_a_2015_edition_case(edition_2015: int) -> None:
    rig = Rig(
        soc=0.5,
        overrides={"gbt_soc_target": 5030, "gbt_2015": edition_2015},
        charger=DcCharger(insulation_ms=1000, send_chm=False),
    )
    rig.run(40_000, ended)
    if edition_2015:
        assert rig.chg.completed == 1 and rig.violations == []
    else:  # 2023 Category A: the handshake with its version comes first
        assert rig.chg.sessions == 0 and rig.closed_at == []


def _reassemble(frames: list[Frame]) -> list[tuple[int, bytes]]:
    """Every transport message of the BMS in `frames`, by the desktop transport (a listener)."""
    listener = Transport(0x56, 0xF4)
    for f in frames:
        listener.feed(f, 0)
    return listener.received


@pytest.mark.parametrize("suffix", [".asc", ".blf"])
def test_the_session_log_decodes_completely(tmp_path: Path, suffix: str) -> None:
    rig = Rig(soc=0.5, overrides={"gbt_soc_target": 5020})
    rig.run(60_000, ended)
    path = tmp_path / f"charging{suffix}"
    with can.Logger(str(path)) as log:
        for t, f in rig.log:
            log.on_message_received(
                can.Message(
                    timestamp=t / 1000, arbitration_id=f.can_id, data=f.data, is_extended_id=True
                )
            )
    names = set()
    frames = []
    for msg in can.LogReader(str(path)):
        if msg.is_error_frame or not msg.is_extended_id:
            continue
        m = DB.get_message_by_frame_id(msg.arbitration_id)  # KeyError: not in the DBC
        DB.decode_message(msg.arbitration_id, bytes(msg.data), decode_choices=False)
        names.add(m.name)
        frames.append(Frame(msg.arbitration_id, bytes(msg.data)))
    assert len(frames) == len(rig.log)
    long_names = set()
    for pgn, payload in _reassemble(frames):
        m = next(x for x in DB.messages if (x.frame_id >> 8) & 0xFF00 == pgn and x.length > 8)
        m.decode(payload)
        long_names.add(m.name)
    expected = {"CHM", "BHM", "CRM", "CTS", "CML", "BRO", "CRO", "BCL", "CCS", "BSM", "BST"}
    assert expected | {"CST", "BSD", "CSD", "TP_CM_BMS", "TP_DT_BMS", "TP_CM_CHARGER"} <= names
    assert long_names == {"BRM", "BCP", "BCS"}


def test_a_board_without_heap_for_charging_runs_without_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_heap(bms: object) -> None:
        raise MemoryError("memory allocation failed")

    monkeypatch.setattr(fwc, "Charging", no_heap)
    from charging_rig import OVERRIDES, ChargerBoard

    from firmware import app

    bms = app.build(ChargerBoard(dict(OVERRIDES)))
    assert bms.charging is None and bms.services == [bms.diag]
    assert "DC charging unavailable" in capsys.readouterr().out
