"""Bus load figures for a tiny DBC whose numbers can be checked by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

import cantools
import pytest

from hil.cli import busload as busload_command
from hil.toolchain.busload import bus_load, format_table, frame_bits

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
 SG_ T1 m0 : 8|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T2 m0 : 20|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T3 m0 : 32|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T4 m0 : 44|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T5 m1 : 8|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T6 m1 : 20|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T7 m1 : 32|12@1- (1,0) [-2048|2047] "" BMS
 SG_ T8 m1 : 44|12@1- (1,0) [-2048|2047] "" BMS

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
