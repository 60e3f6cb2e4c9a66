"""Run by `micropython` (see test_drv_micropython.py): the drivers against the emulators on the
unix port, then the per-cycle driver methods measured for heap allocation against a replaying
fake bus (the emulators allocate; the replay does not). Prints one line per check, then "ok"."""

import gc
import sys

sys.path.insert(0, sys.path[0].rsplit("/", 2)[0] if sys.path[0].count("/") >= 2 else "../..")

from array import array  # noqa: E402

from firmware.drivers import mcp2515, pec15  # noqa: E402
from firmware.drivers.ltc681x import Ltc681x  # noqa: E402
from firmware.drivers.ltc681x_openwire import check_open_wire  # noqa: E402
from sim.emulators.ltc681x import Ltc681xChain  # noqa: E402
from sim.emulators.mcp2515 import Mcp2515Emulator  # noqa: E402
from sim.emulators.spi import FakeSpi  # noqa: E402


class RecordingSpi(FakeSpi):
    """FakeSpi that remembers the last answer to every command (first two bytes)."""

    def __init__(self):
        super().__init__()
        self.rec = {}

    def write_readinto(self, wbuf, rbuf):
        super().write_readinto(wbuf, rbuf)
        self.rec[wbuf[0] << 8 | wbuf[1]] = bytes(rbuf)


class ReplaySpi:
    """Answers every transfer from a recording; allocates nothing."""

    def __init__(self, rec):
        self.rec = rec

    def write(self, buf):
        pass

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = 0xFF

    def write_readinto(self, wbuf, rbuf):
        src = self.rec[wbuf[0] << 8 | wbuf[1]]
        for i in range(len(rbuf)):
            rbuf[i] = src[i]


class Pin:
    def __init__(self):
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v

    def __call__(self, v=None):
        return self.value(v)


def allocated(fn):
    fn()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn()
    used = gc.mem_alloc() - before
    gc.enable()
    return used


def check(name, cond):
    print(("PASS " if cond else "FAIL ") + name)
    if not cond:
        raise SystemExit(1)


def mcp():
    chip = Mcp2515Emulator(8_000_000)
    spi = RecordingSpi()
    can = mcp2515.Mcp2515(spi, spi.attach(chip), 8_000_000)
    check("mcp2515 init and 500k timing", can.ready and chip.bit_timing()[:2] == (500_000, 750))
    buf = bytearray(8)
    check("mcp2515 send", can.send(0x123, b"\x01\x02\x03", 3))
    check("mcp2515 on the bus", chip.bus == [(0x123, b"\x01\x02\x03")])
    chip.inject(0x55, b"\x0a\x0b")
    chip.inject(0x56, b"\x0c")
    cid = can.recv_into(buf)
    check("mcp2515 receive", cid == 0x55 and can.dlc == 2 and buf[:2] == b"\x0a\x0b")
    check("mcp2515 RXB1", can.recv_into(buf) == 0x56 and can.recv_into(buf) == -1)
    chip.inject(0x57, b"\x0d")
    can.recv_into(buf)  # recording now holds CANINTF with RX0IF set and RXB0's frame
    can2 = mcp2515.Mcp2515(ReplaySpi(spi.rec), Pin(), 8_000_000)
    check("mcp2515 replay returns the frame", can2.recv_into(buf) == 0x57)
    check("mcp2515 send allocates 0", allocated(lambda: can2.send(0x7FF, buf, 8)) == 0)
    check("mcp2515 recv_into allocates 0", allocated(lambda: can2.recv_into(buf)) == 0)


def ltc(cells):
    n = 3
    chain = Ltc681xChain(n, cells)
    spi = RecordingSpi()
    afe = Ltc681x(spi, spi.attach(chain), n, cells)
    for m in range(n):
        chain.set_cells_mv(m, [3000 + 10 * k + m for k in range(cells)])
    out = array("H", [0] * (n * cells))
    check("ltc681x read_cells", afe.read_cells(out, 0) == 0 and out[cells + 2] == 3021)
    chain.corrupt(2, "CVA")
    check("ltc681x PEC error", afe.read_cells(out, 1) == 1 and afe.status[2] == 1)
    chain.break_chain(1)
    afe.read_cells(out, 2)
    check("ltc681x missing", afe.missing == 2 and out[cells] == 0)
    chain.repair_chain()
    chain.open_wire(0, 3)
    res = bytearray(n * (cells + 1))
    check("ltc681x open wire", check_open_wire(afe, res, 3) == 1 and res[3] == 1)
    mask = bytearray((n * cells + 7) // 8)
    mask[0] = 0x81
    afe.set_dcc(mask)
    check("ltc681x DCC", chain.chips[0].dcc() == 0x81 and afe.verify_config(4) == 0)
    aux = array("H", [0] * (6 * n))
    afe.read_aux(aux, 5)
    afe.read_cells(out, 6)
    afe2 = Ltc681x(ReplaySpi(spi.rec), Pin(), n, cells)
    check("ltc681x read_cells allocates 0", allocated(lambda: afe2.read_cells(out, 7)) == 0)
    check("ltc681x set_dcc allocates 0", allocated(lambda: afe2.set_dcc(mask)) == 0)
    check("ltc681x verify_config allocates 0", allocated(lambda: afe2.verify_config(8)) == 0)
    check("ltc681x read_aux allocates 0", allocated(lambda: afe2.read_aux(aux, 9)) == 0)
    check("ltc681x reads the replay", out[1] == 3010 and afe2.status[0] == 0)


check("the measurement sees an allocation", allocated(lambda: bytearray(8)) > 0)
check("pec15 WRCFGA", pec15.pec15(b"\x00\x01", 0, 2) == 0x3D6E)
mcp()
ltc(12)
ltc(18)
print("ok")
