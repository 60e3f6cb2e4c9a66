"""Bus load: figures for a tiny DBC whose numbers can be checked by hand, and the real DBC's
figures against what a closed-loop run's CAN log measures."""

from __future__ import annotations

import argparse
from pathlib import Path

import cantools
import pytest

from firmware import config as fw_config
from hil import DBC_PATH
from hil.bench.runner import open_bench
from hil.cli import busload as busload_command
from hil.toolchain.busload import bus_load, format_table, frame_bits, frames_per_period, log_rates

TINY_DBC = """VERSION ""
NS_ :
BS_:
BU_: BMS BENCH

BO_ 256 Status: 8 BMS
 SG_ A : 0|8@1+ (1,0) [0|255] "" BENCH

BO_ 257 Empty: 0 BMS

BO_ 258 Cells: 8 BMS
 SG_ CellGroup M : 0|8@1+ (1,0) [0|1] "" BENCH
 SG_ Cell1 m0 : 8|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell2 m0 : 21|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell3 m0 : 34|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell4 m0 : 47|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell5 m1 : 8|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell6 m1 : 21|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell7 m1 : 34|13@1+ (1,0) [0|8191] "" BENCH
 SG_ Cell8 m1 : 47|13@1+ (1,0) [0|8191] "" BENCH

BO_ 259 Balancing: 4 BMS
 SG_ BalancingGroup M : 0|8@1+ (1,0) [0|1] "" BENCH
 SG_ Mask0 m0 : 8|24@1+ (1,0) [0|16777215] "" BENCH
 SG_ Mask1 m1 : 8|24@1+ (1,0) [0|16777215] "" BENCH

BO_ 260 Temps: 7 BENCH
 SG_ TempGroup M : 0|8@1+ (1,0) [0|1] "" BMS
 SG_ Temp1 m0 : 8|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp2 m0 : 20|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp3 m0 : 32|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp4 m0 : 44|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp5 m1 : 8|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp6 m1 : 20|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp7 m1 : 32|12@1- (1,0) [-2048|2047] "" BMS
 SG_ Temp8 m1 : 44|12@1- (1,0) [-2048|2047] "" BMS

BO_ 2147484672 Tick: 8 BENCH
 SG_ Seq : 0|16@1+ (1,0) [0|65535] "" BMS

BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_DEF_ "GenMsgCycleTime" 0;
BA_ "GenMsgCycleTime" BO_ 256 100;
BA_ "GenMsgCycleTime" BO_ 257 10;
BA_ "GenMsgCycleTime" BO_ 258 1000;
BA_ "GenMsgCycleTime" BO_ 259 500;
BA_ "GenMsgCycleTime" BO_ 260 250;
"""


@pytest.fixture
def db() -> cantools.database.Database:
    return cantools.database.load_string(TINY_DBC, database_format="dbc")


def test_worst_case_frame_lengths() -> None:
    # 11-bit: 47 + 8n + floor((34 + 8n - 1) / 4); 29-bit: 67 + 8n + floor((54 + 8n - 1) / 4)
    assert [frame_bits(n) for n in (0, 1, 2, 8)] == [55, 65, 75, 135]
    assert [frame_bits(n, extended=True) for n in (0, 8)] == [80, 160]


def test_bus_load_of_tiny_dbc(db: cantools.database.Database) -> None:
    rows = bus_load(db, cells=5, temps=3, bitrate=100_000, control_period_ms=50)
    got = {r.name: (r.sender, r.frame_bits, r.frames_per_s, r.bits_per_s) for r in rows}
    assert got == {
        "Status": ("BMS", 135, 10.0, 1350.0),  # every 100 ms
        "Empty": ("BMS", 55, 100.0, 5500.0),  # every 10 ms
        "Cells": ("BMS", 135, 2.0, 270.0),  # 5 cells, 4 per group: 2 groups per 1000 ms
        "Balancing": ("BMS", 95, 2.0, 190.0),  # 5 cells, 24 per group: 1 group per 500 ms
        "Temps": ("BENCH", 125, 4.0, 500.0),  # 3 sensors, 4 per group: 1 group per 250 ms
        "Tick": ("BENCH", 160, 20.0, 3200.0),  # 29-bit id, no cycle time: once per 50 ms
    }
    assert sum(r.load for r in rows) == pytest.approx(11010 / 100_000)


def test_more_items_than_the_dbc_carries(db: cantools.database.Database) -> None:
    with pytest.raises(ValueError, match="Cells carries at most 8 cells, not 9"):
        bus_load(db, cells=9, temps=1, bitrate=100_000)


def test_table_and_command(
    db: cantools.database.Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = format_table(bus_load(db, cells=5, temps=3, bitrate=100_000, control_period_ms=50))
    assert "BMS traffic (BMS)" in table and "bench injection (BENCH)" in table
    assert table.splitlines()[-1].split() == ["total", "138.0", "11010", "11.01%"]

    dbc = tmp_path / "tiny.dbc"
    dbc.write_text(TINY_DBC)
    parser = argparse.ArgumentParser()
    busload_command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--dbc",
            str(dbc),
            "--cells",
            "5",
            "--temps",
            "3",
            "--bitrate",
            "100000",
            "--control-period",
            "50",
        ]
    )
    assert busload_command.run(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == table.splitlines()[-1]


@pytest.fixture(scope="module")
def dbc() -> cantools.database.Database:
    return cantools.database.load_file(DBC_PATH)


def test_every_per_cell_message_counts_only_the_groups_the_pack_needs(
    dbc: cantools.database.Database,
) -> None:
    """16 cells: 4 groups of 4 cells (voltages, temperatures, SOC), 1 balancing group of 24;
    the fault memory read-out sends all 8 parts of an entry whatever the pack."""
    got = {m.name: frames_per_period(m, 16, 16) for m in dbc.messages if m.is_multiplexed()}
    assert got["BMS_CellSoc"] == got["BMS_CellVoltages"] == got["BMS_CellTemps"] == 4
    assert got["SIM_CellVoltages"] == got["SIM_CellTemps"] == 4 and got["BMS_Balancing"] == 1
    assert frames_per_period(dbc.get_message_by_name("BMS_Balancing"), 192, 192) == 8


def test_dbc_periods_are_the_firmware_schedule(dbc: cantools.database.Database) -> None:
    """GenMsgCycleTime of every BMS message is the firmware's default period for it
    (firmware/config.py tx_*_ms): the DBC states what the firmware does."""
    c = fw_config.load({})
    periods = {
        "BMS_Balancing": c.tx_balancing_ms,
        "BMS_CellVoltages": c.tx_cells_ms,
        "BMS_CellTemps": c.tx_cells_ms,
        "BMS_CellSoc": c.tx_cells_ms,
        "BMS_Estimation": c.tx_cells_ms,
    }
    for m in dbc.messages:
        if m.senders == ["BMS"] and m.send_type != "spontaneous":
            assert m.cycle_time == periods.get(m.name, c.tx_status_ms), m.name
    assert dbc.get_message_by_name("BMS_Balancing").send_type == "cyclicAndSpontaneous"


def test_24_bit_signals_take_all_ones(dbc: cantools.database.Database) -> None:
    """A full 24-cell balancing mask and a 24-bit cycle time are legal values cantools encodes
    (the maxima were 1.67772e+07, below 2**24 - 1)."""
    bal = dbc.get_message_by_name("BMS_Balancing")
    for g in range(8):
        values = {"BalancingGroup": g, f"BalancingMask_G{g}": 0xFFFFFF}
        values |= {"BalancingCellCount": 24, "BalancingReason": 0, "BalancingStrategy": 0}
        assert bal.encode(values)[1:4] == b"\xff\xff\xff"
    diag = dbc.get_message_by_name("BMS_CycleDiag")
    frame = diag.encode({"TickSeq": 1, "CycleTime": 0xFFFFFF, "HeapUsed": 0xFFFFFF})
    assert diag.decode(frame)["CycleTime"] == 0xFFFFFF


def test_enumerations_have_value_tables(dbc: cantools.database.Database) -> None:
    state = dbc.get_message_by_name("BMS_State")
    frame = state.encode({s.name: 0 for s in state.signals} | {"ContactorNeg": 1, "BmsState": 3})
    decoded = state.decode(frame)
    assert decoded["ContactorNeg"] == "CLOSED" and decoded["ContactorPos"] == "OPEN"
    request = dbc.get_message_by_name("VCU_Request").get_signal_by_name("ContactorRequest")
    assert request.choices == {0: "OPEN", 1: "CLOSE"}


@pytest.mark.parametrize("cells", [16, 96, 192])
def test_busload_agrees_with_a_run_log(
    cells: int, dbc: cantools.database.Database, tmp_path: Path
) -> None:
    """A 60 s closed-loop run's CAN log measures every cyclic message's frame rate, each sender's
    and the total within 5 % of `bus_load`; BMS_Balancing (cyclic and on change) at least its
    cyclic part; no frame the DBC does not define."""
    log = tmp_path / "run.blf"
    with open_bench(cells=cells, log_path=log) as bench:
        for _ in range(600):
            bench.step(0.0)
    measured = log_rates(log)
    rows = bus_load(dbc, cells, cells, 500_000)
    assert set(measured.frames_per_s) <= {r.frame_id for r in rows}
    for r in rows:
        got = measured.frames_per_s.get(r.frame_id, 0.0)
        if r.send_type == "cyclic":
            assert got == pytest.approx(r.frames_per_s, rel=0.05), r.name
        elif r.send_type == "cyclicAndSpontaneous":
            assert r.frames_per_s * 0.95 <= got <= r.frames_per_s * 1.05 + 0.5, r.name
    steady = [r for r in rows if r.steady]
    for sender in {r.sender for r in steady}:
        want = sum(r.bits_per_s for r in steady if r.sender == sender)
        got = sum(
            measured.frames_per_s.get(r.frame_id, 0.0) * r.frame_bits
            for r in steady
            if r.sender == sender
        )
        assert got == pytest.approx(want, rel=0.05), sender
    total = sum(measured.frames_per_s.get(r.frame_id, 0.0) * r.frame_bits for r in rows)
    assert total == pytest.approx(sum(r.bits_per_s for r in steady), rel=0.05)
