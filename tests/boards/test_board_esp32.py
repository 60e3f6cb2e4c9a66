"""boards/esp32.py under CPython with a fake `machine` and stand-ins for the MCP2515 and LTC681x
drivers (their own tests cover the chips): pins and SPI buses from the profile, CAN routed to the
MCP2515 driver, cell voltages from the LTC681x, balancing on its DCC mask, watchdog."""

from __future__ import annotations

import sys
from array import array
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from board_fakes import make_machine, pin_named, profile

from firmware import config
from firmware.measurement import Measurements

PROFILE = profile("esp32")


class FakeMcp2515:
    """The documented driver API: send(id, buf, dlc) -> bool, recv_into(buf) -> id or -1, .dlc."""

    def __init__(self, spi: Any, cs: Any, osc_hz: int) -> None:
        self.spi, self.cs, self.osc_hz = spi, cs, osc_hz
        self.free = 3
        self.ready = True
        self.sent: list[tuple[int, bytes]] = []
        self.rx: list[tuple[int, bytes]] = []
        self.dlc = 0

    def send(self, can_id: int, buf: Any, dlc: int) -> bool:
        if self.free == 0:
            return False
        self.free -= 1
        self.sent.append((can_id, bytes(buf[:dlc])))
        return True

    def recv_into(self, buf: bytearray) -> int:
        if not self.rx:
            return -1
        can_id, data = self.rx.pop(0)
        buf[: len(data)] = data
        self.dlc = len(data)
        return can_id


class FakeLtc681x:
    """The documented API: read_cells(out, now) -> PEC error count, per-cell `fresh` flags."""

    def __init__(self, spi: Any, cs: Any, n_modules: int, cells: int = 12) -> None:
        self.spi, self.cs, self.n_modules, self.per_module = spi, cs, n_modules, cells
        self.cells = [3600 + i for i in range(cells * n_modules)]
        self.bad: set[int] = set()  # cells whose register group failed its PEC
        self.fresh = bytearray(cells * n_modules)
        self.dcc: list[bytes] = []
        self.n = n_modules
        self.status = bytearray(n_modules)  # per module: 0 OK, 1 PEC error, 2 missing
        self.gpio_mv = [1500] * 5  # every NTC divider at half the reference: 25.0 degC

    def read_aux(self, out: array, now: int) -> int:
        for m in range(self.n):
            for g in range(5):
                out[6 * m + g] = self.gpio_mv[g]
            out[6 * m + 5] = 3000
        return sum(1 for s in self.status if s)

    def read_cells(self, out: array, now: int) -> int:
        for i, v in enumerate(self.cells):
            self.fresh[i] = i not in self.bad
            if i not in self.bad:
                out[i] = v
        return len(self.bad)

    def set_dcc(self, mask: bytearray) -> None:
        self.dcc.append(bytes(mask))


@pytest.fixture
def esp32(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    drivers = ModuleType("firmware.drivers")
    mcp = ModuleType("firmware.drivers.mcp2515")
    mcp.Mcp2515 = FakeMcp2515  # type: ignore[attr-defined]
    ltc = ModuleType("firmware.drivers.ltc681x")
    ltc.Ltc681x = FakeLtc681x  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "firmware.drivers", drivers)
    monkeypatch.setitem(sys.modules, "firmware.drivers.mcp2515", mcp)
    monkeypatch.setitem(sys.modules, "firmware.drivers.ltc681x", ltc)
    monkeypatch.delitem(sys.modules, "boards.esp32", raising=False)
    import boards.esp32

    return boards.esp32


def _board(esp32: ModuleType, **changes: Any) -> tuple[Any, SimpleNamespace]:
    m = make_machine(with_can=False)
    prof = dict(PROFILE, **changes)
    return esp32.Board(prof, machine=m), m


def test_constructs_with_spi_buses_and_pins_from_the_profile(esp32: ModuleType) -> None:
    board, m = _board(esp32)
    pins, can, afe = PROFILE["pins"], PROFILE["can"], PROFILE["afe"]
    spi_can, spi_afe = m.made["spi"]
    assert spi_can.bus == can["spi"] and spi_can.kwargs["baudrate"] == can["spi_baudrate"]
    assert [spi_can.kwargs[k].id for k in ("sck", "mosi", "miso")] == [
        pins["can_sck"],
        pins["can_mosi"],
        pins["can_miso"],
    ]
    assert (spi_afe.kwargs["polarity"], spi_afe.kwargs["phase"]) == (1, 1)  # LTC681x: mode 3
    assert spi_afe.bus == afe["spi"]
    assert board._can.osc_hz == 8_000_000 and board._can.cs.id == pins["can_cs"]
    assert board._can.cs.history == [1]  # chip select idles high
    assert board._afe.n_modules == afe["modules"] and board._afe.cs.id == pins["afe_cs"]
    for key in ("contactor_neg", "contactor_pre", "contactor_pos", "cooling"):
        assert pin_named(m, pins[key]).history == [0], key
    assert m.made["wdt"][0].timeout == PROFILE["wdt_ms"]


def test_can_goes_through_the_mcp2515_driver(esp32: ModuleType) -> None:
    board, _ = _board(esp32)
    drv = board._can
    buf = bytearray(range(8))
    for i in range(4):
        board.can_send(0x100 + i, buf, 2 + i)
    assert drv.sent == [(0x100, bytes([0, 1])), (0x101, bytes([0, 1, 2])), (0x102, bytes(range(4)))]
    assert board.tx_pending() == 1
    drv.free = 3
    drv.rx.append((0x400, b"\x05\x06\x07"))
    out = bytearray(8)
    assert board.can_recv(out) == 0x400
    assert board.rx_dlc == 3 and out[:3] == b"\x05\x06\x07"
    assert drv.sent[-1] == (0x103, bytes(range(5)))
    assert board.can_recv(out) == -1


def test_ltc681x_cells_fill_the_measurement_groups(esp32: ModuleType) -> None:
    board, _ = _board(esp32)
    cfg = config.load({"cell_count": 22})  # 2 modules x 12 cells, 22 in use
    meas = Measurements(cfg)
    board.measure(meas, 1000)
    assert list(meas.cell_mv) == [3600 + i for i in range(22)]
    assert meas.rx_errors == 0
    # The cell groups are fresh, and the temperature groups the chain's 10 NTCs fill completely
    # (sensors 1..8; 9..12 would need two sensors the chain lacks); the pack values come from
    # the CAN shunt, the auxiliary inputs (second current sensor) from nowhere on this board.
    assert list(meas._seen) == [1] * 6 + [1, 1, 0, 0, 0, 0] + [0] + [0]
    assert list(meas.temp_dc[:8]) == [250] * 8
    board._afe.bad = {5}
    board._afe.cells[0] = 3500
    board.measure(meas, 2000)
    # The group holding the cell that failed its PEC is not refreshed; the others are.
    assert meas._rx_ms[:6] == [2000, 1000, 2000, 2000, 2000, 2000]
    assert meas.cell_mv[0] == 3500


def test_more_cells_than_the_chain_reads_are_implausible(esp32: ModuleType) -> None:
    board, _ = _board(esp32)
    cfg = config.load({"cell_count": 26})  # 24 cells on the chain
    meas = Measurements(cfg)
    board.measure(meas, 0)
    assert list(meas.cell_mv[24:]) == [0, 0]
    assert not meas.plausible()


def test_balancing_drives_the_ltc_dcc_mask(esp32: ModuleType) -> None:
    board, _ = _board(esp32)
    mask = bytearray(b"\x05\x00\x00")
    board.set_balancing(mask)
    assert board._afe.dcc == [b"\x05\x00\x00"]


def test_bench_measurement_source_has_no_afe(esp32: ModuleType) -> None:
    board, m = _board(esp32, measurement="bench")
    assert board._afe is None and len(m.made["spi"]) == 1
    meas = Measurements(config.load({"cell_count": 4}))
    board.measure(meas, 0)
    assert list(meas.cell_mv) == [0, 0, 0, 0]
    board.set_balancing(bytearray(1))  # reported on CAN only
    with pytest.raises(ValueError, match="measurement source"):
        _board(esp32, measurement="adc")
