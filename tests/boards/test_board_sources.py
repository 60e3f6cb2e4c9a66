"""Measurement sources per board (boards/hw.py `board_sources`, firmware/comm.py dispatch): a
production profile takes its cells and temperatures from the LTC681x chain and its pack values
from the E2E-protected CAN shunt, and never applies a SIM_* bench frame, whoever sends it."""

from __future__ import annotations

from typing import Any

import cantools
import pytest
from board_fakes import make_machine, profile
from vcu_frames import VcuSender

from boards import hw, stm32f4
from firmware import app, config
from firmware import can_codec as codec
from firmware.drivers.ltc681x import Ltc681x
from firmware.e2e import crc8_j1850, data_id_crc
from firmware.protection import FAULT_CELL_OV, FAULT_MEAS_STALE
from hil import DBC_PATH
from sim.emulators.ltc681x import Ltc681xChain
from sim.emulators.spi import FakeSpi

PROFILE = profile("stm32f4")
CELLS = 24  # 2 x LTC6811
TEMPS = 10  # GPIO1..5 of each


def test_a_hil_profile_takes_everything_from_the_bench() -> None:
    assert hw.board_sources(dict(PROFILE, measurement="bench")) == dict.fromkeys(
        ("cells", "temps", "pack", "aux"), "bench"
    )


@pytest.mark.parametrize("name", ["stm32f4", "esp32"])
def test_production_profiles_name_no_bench_source(name: str) -> None:
    assert hw.board_sources(profile(name)) == {
        "cells": "ltc681x",
        "temps": "ltc681x",
        "pack": "can-sensor",
        "aux": "none",
    }


def test_a_kind_the_profile_does_not_name_is_none_never_the_bench() -> None:
    p = dict(PROFILE, sources={"cells": "ltc681x"})
    assert hw.board_sources(p) == {
        "cells": "ltc681x",
        "temps": "none",
        "pack": "none",
        "aux": "none",
    }
    with pytest.raises(ValueError, match="pack bench-ish"):
        hw.board_sources(dict(PROFILE, sources={"pack": "bench-ish"}))
    with pytest.raises(ValueError, match="aux ltc681x"):
        hw.board_sources(dict(PROFILE, sources={"aux": "ltc681x"}))


def test_ntc_divider_reads_the_table_points_and_clamps() -> None:
    assert hw.ntc_dc(1500, 3000) == 250  # 10 kOhm at 25 degC against the 10 kOhm pull-up
    readings = [hw.ntc_dc(mv, 3000) for mv in range(3000, 0, -25)]
    assert readings == sorted(readings), "a lower divider voltage is a warmer NTC"
    assert hw.ntc_dc(3000, 3000) == -400 and hw.ntc_dc(0, 3000) == 1200
    assert hw.ntc_dc(1500, 0) == -400  # no reference: the cold end, never a warm guess


class Rig:
    """The stm32f4 production board on fakes: CAN in/out through machine.CAN, the real LTC681x
    driver against the chain emulator, the shunt sensor's CS_* frames, a signing VCU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
        monkeypatch.chdir(tmp_path)  # the board's storage files (cg_*) land here
        self.vcu = VcuSender.provision(tmp_path)
        self.m = make_machine()
        self.board = stm32f4.Board(PROFILE, machine=self.m)
        self.chain = Ltc681xChain(2, 12)
        spi = FakeSpi()
        self.board._afe = Ltc681x(spi, spi.attach(self.chain), 2, 12)
        cfg = config.load(dict(PROFILE["config"], cell_count=CELLS, temp_count=TEMPS))
        self.bms = app.build(self.board, cfg)
        self.can = self.m.made["can"][0]
        self.now = 0
        self.cs_counter = 0
        self.set_cells([3700] * CELLS)

    def set_cells(self, mv: list[int]) -> None:
        for m in range(2):
            self.chain.set_cells_mv(m, mv[12 * m : 12 * m + 12])

    def rx(self, can_id: int, data: bytes | bytearray) -> None:
        self.can.rx.append((can_id, bytes(data), 0))

    def sensor_frames(self) -> None:
        buf = bytearray(8)
        k = self.bms.data.contactors
        pack_mv = sum(self.bms.meas.cell_raw_mv) or CELLS * 3700
        link_mv = pack_mv if (k.pre or k.pos) else 0
        self.cs_counter = (self.cs_counter + 1) & 15
        codec.encode_cs_current(buf, 0, self.cs_counter, 0)
        buf[7] = crc8_j1850(buf, 7, data_id_crc(codec.CS_CURRENT_ID))
        self.rx(codec.CS_CURRENT_ID, buf)
        codec.encode_cs_voltage(buf, pack_mv, link_mv, self.cs_counter, 0)
        buf[7] = crc8_j1850(buf, 7, data_id_crc(codec.CS_VOLTAGE_ID))
        self.rx(codec.CS_VOLTAGE_ID, buf)

    def bench_frames(self, mv: int) -> None:
        """What another node sends to fake a healthy pack: every SIM_* frame."""
        buf = bytearray(8)
        for g in range(CELLS // 4):
            codec.encode_sim_cell_voltages(buf, g, mv, mv, mv, mv)
            self.rx(codec.SIM_CELL_VOLTAGES_ID, buf)
        for g in range(3):
            codec.encode_sim_cell_temps(buf, g, 250, 250, 250, 250)
            self.rx(codec.SIM_CELL_TEMPS_ID, buf)
        codec.encode_sim_pack_measurements(buf, 0, CELLS * mv // 100, CELLS * mv // 100, 0)
        self.rx(codec.SIM_PACK_MEASUREMENTS_ID, buf)
        codec.encode_sim_aux(buf, 0, 0, 0, 0)
        self.rx(codec.SIM_AUX_ID, buf)

    def step(self, close: bool = True, forged_mv: int | None = None) -> None:
        self.sensor_frames()
        if forged_mv is not None:
            self.bench_frames(forged_mv)
        self.rx(codec.VCU_REQUEST_ID, self.vcu.frame(close))
        self.bms.comm.poll(self.now)
        assert self.bms.guarded_cycle(self.now)
        self.board.wdt_feed()
        self.can.transmit_all()
        self.now += 100

    def active(self, bit: int) -> bool:
        return bool(self.bms.data.faults.active >> bit & 1)

    def state(self) -> dict[str, Any]:
        """The last BMS_State the board sent, decoded with cantools."""
        db = cantools.database.load_file(str(DBC_PATH))
        data = [d for cid, d, _ in self.can.sent if cid == codec.BMS_STATE_ID][-1]
        return dict(db.decode_message(codec.BMS_STATE_ID, data, decode_choices=False))


def test_production_board_closes_on_its_own_sources(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    rig = Rig(monkeypatch, tmp_path)
    for _ in range(20):
        rig.step()
    k = rig.bms.data.contactors
    assert (k.neg, k.pos) == (1, 1), rig.bms.data.faults.active
    assert rig.bms.meas.temp_dc[0] == 250 and list(rig.bms.meas.cell_mv) == [3700] * CELLS
    assert rig.state()["RejectedFrames"] == 0 and rig.state()["InputRejected"] == 0


def test_healthy_bench_frames_from_another_node_never_mask_a_real_over_voltage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    rig = Rig(monkeypatch, tmp_path)
    for _ in range(20):
        rig.step()
    assert rig.bms.data.contactors.pos == 1
    cells = [3700] * CELLS
    cells[5] = 4400
    rig.set_cells(cells)
    for _ in range(30):  # the forger sends a healthy pack every cycle, after the chain's reading
        rig.step(forged_mv=3700)
    k = rig.bms.data.contactors
    assert rig.active(FAULT_CELL_OV), "the cell the chain reads at 4.4 V opens"
    assert (k.neg, k.pre, k.pos) == (0, 0, 0)
    assert rig.bms.meas.cell_mv[5] == 4400
    # Every SIM_* frame was counted, and the warning flag is up (BMS_State, outside BMS_Faults).
    assert rig.bms.comm.rejected == 30 * (CELLS // 4 + 3 + 1 + 1)
    state = rig.state()
    assert state["InputRejected"] == 1
    assert 0 < state["RejectedFrames"] <= rig.bms.comm.rejected  # a BMS_State sent on the way


def test_a_failing_chain_is_not_masked_by_bench_frames(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    rig = Rig(monkeypatch, tmp_path)
    for _ in range(20):
        rig.step()
    rig.chain.corrupt(1, "CVA", -1)  # module 1's first cell group fails its PEC from now on
    for _ in range(10):
        rig.step(forged_mv=3700)
    assert rig.active(FAULT_MEAS_STALE)
    assert rig.bms.data.contactors.pos == 0
