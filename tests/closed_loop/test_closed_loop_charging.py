"""Closed loop over both CAN channels: the firmware on the micropython binary, the plant on the
vehicle bus and the simulated GB/T 27930 charger (sim/charger.py) on its charger channel.

A short session (SOC 50 % to 50.3 %) and an over-current charger: what tests/firmware/
test_charging.py checks on CPython, here on MicroPython through the sim board's second SLCAN
endpoint, with the log decoded by cantools and dbc/gbt27930.dbc.
"""

from __future__ import annotations

import cantools
import pytest

from hil import GBT_DBC_PATH
from hil.bench.charger import ChargerLink
from hil.bench.loop import Bench
from hil.toolchain.build import board_profile
from sim.charger import FINISHED, ChargerFaults, DcCharger

STEP_MS = 50


def charging_fits(bench_options: dict[str, object]) -> bool:
    """False for a bundle whose board cannot hold the charging stack (full_firmware false)."""
    profile = board_profile(str(bench_options["bundle_board"])) or {}
    return bool(profile.get("full_firmware", True))


def run_session(
    bench: Bench, link: ChargerLink, max_s: float, stop_when_open: bool = False
) -> None:
    bench.cycle_ms = STEP_MS
    closed_seen = False
    states: list[str] = []
    for k in range(int(max_s * 1000 / STEP_MS)):
        load = link.exchange(k * STEP_MS, bench.pack.link_voltage_v)
        rec = bench.step(load, vcu_close=False, charge_request=True)
        states.append(rec.status.state_name)
        if rec.status.contactor_pos and not closed_seen:
            closed_seen = True
            # Closed only in a configured session (BRO after CML) and after the precharge.
            assert [n for _, n in link.charger.history][-1] == "PARAMETERS"
            assert "PRECHARGE" in states
        if link.charger.stage == FINISHED and not rec.status.closed:
            return
        if stop_when_open and closed_seen and not rec.status.closed:
            return


@pytest.mark.unix_only
def test_a_session_on_the_second_channel(bench_factory, bench_options) -> None:  # type: ignore[no-untyped-def]
    if not charging_fits(bench_options):
        pytest.skip("this board's bundle has no heap for the charging stack (docs/charging.md)")
    bench = bench_factory(
        cells=4,
        firmware_config={"gbt_soc_target": 5030},
        pack_config={"soc_mean": 0.5},
        dut_options={"charger": True},
    )
    link = ChargerLink(bench.dut.charger_port, DcCharger(insulation_ms=1000))
    try:
        run_session(bench, link, 60)
    finally:
        link.close()
    ch = link.charger
    assert ch.stage == FINISHED and ch.bms_stop == {"BstSocReached": 1} and not ch.cem_sent
    assert not bench.status.closed and not bench.status.faults
    db = cantools.database.load_file(str(GBT_DBC_PATH))
    names = {db.get_message_by_frame_id(f.can_id).name for _, f in link.frames}
    for _, f in link.frames:
        db.decode_message(f.can_id, f.data)
    assert {"BHM", "BRO", "BCL", "BSM", "BST", "BSD", "TP_CM_BMS", "TP_DT_BMS"} <= names


@pytest.mark.unix_only
def test_an_over_current_charger_is_cut_off(bench_factory, bench_options) -> None:  # type: ignore[no-untyped-def]
    if not charging_fits(bench_options):
        pytest.skip("this board's bundle has no heap for the charging stack (docs/charging.md)")
    bench = bench_factory(cells=4, pack_config={"soc_mean": 0.5}, dut_options={"charger": True})
    charger = DcCharger(insulation_ms=1000, faults=ChargerFaults(overcurrent_at=5000))
    link = ChargerLink(bench.dut.charger_port, charger)
    try:
        run_session(bench, link, 30, stop_when_open=True)
    finally:
        link.close()
    # gbt_oc_ms 1000 to decide, then the stop (BST 4.1) and the contactors' bounded OPENING.
    assert not bench.status.closed and bench.t_s < 5 + 1 + 2 + 1
    assert "ChargerFault" in bench.status.faults
    assert charger.bms_stop.get("BstErrorCurrent") == 1
