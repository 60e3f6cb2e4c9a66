"""Register-level emulator of a daisy chain of LTC6811 (12 cells) / LTC6813 (18 cells) monitors.

Owns per chip: cell and GPIO input voltages (set by the test, 100 uV codes), the cell / aux /
configuration register groups, conversion state (ADCV, ADOW with pull-up/pull-down, ADAX,
CLRCELL, PLADC polling) and the chain transport: a command (2 bytes + PEC15) reaches every
connected chip and is ignored when its PEC is wrong; a read returns module 0's group first, each
with a correct PEC; a write delivers the last 8-byte block to module 0 (the first block sent goes
to the last module), and a chip ignores a block whose PEC is wrong.

Fault injection: `corrupt(module, group, times)` flips a data bit of that module's response for
group "CVA".."CVF", "AUXA", "AUXB", "CFGA", "CFGB" (its PEC no longer matches);
`break_chain(module)`: that module and every one beyond it neither hear nor answer (0xFF);
`stuck_cell(module, cell, mv)`: a cell converts to a fixed value; `open_wire(module, pin)`: the
sense wire C(pin) (0..cells) is disconnected: it floats between its neighbours in ADCV and is
pulled to the neighbouring pin in ADOW once two conversions charged the filter (so the
pulled-up and pulled-down readings differ, as in the datasheet's open-wire procedure).
"""


def pec15_bitwise(data: bytes) -> int:
    """Reference PEC15, bit by bit (CRC-15, polynomial 0x4599, seed 16), shifted left by one."""
    crc = 16
    for byte in data:
        for bit in range(7, -1, -1):
            top = ((crc >> 14) ^ (byte >> bit)) & 1
            crc = (crc << 1) & 0x7FFF
            if top:
                crc ^= 0x4599
    return crc << 1


READS = {
    0x004: "CVA",
    0x006: "CVB",
    0x008: "CVC",
    0x00A: "CVD",
    0x009: "CVE",
    0x00B: "CVF",
    0x00C: "AUXA",
    0x00E: "AUXB",
    0x002: "CFGA",
    0x026: "CFGB",
}
_CV = ("CVA", "CVB", "CVC", "CVD", "CVE", "CVF")


class Ltc681xChip:
    """One monitor: inputs (`cell_codes`, `gpio_codes`) and registers (`cv`, `aux`, `cfga`...)."""

    def __init__(self, cells: int) -> None:
        self.n_cells = cells
        self.cell_codes = [36000] * cells  # 3.6 V in 100 uV codes
        self.gpio_codes = [15000] * 5 + [30000]  # GPIO1..5, 2nd reference (3 V)
        self.cv = [0xFFFF] * cells
        self.aux = [0xFFFF] * 6
        self.cfga = bytearray(b"\xf8\x00\x00\x00\x00\x00")
        self.cfgb = bytearray(6)
        self.stuck: dict[int, int] = {}
        self.open_pins: set[int] = set()
        self._ow = (None, 0)  # (pull-up?, conversions in a row)

    def dcc(self) -> int:
        """The balancing switches as a bit mask, bit k = cell k + 1."""
        a, b = self.cfga, self.cfgb
        return a[4] | (a[5] & 0x0F) << 8 | (b[0] & 0xF0) << 8 | (b[1] & 3) << 16

    def _pins(self, pull: int | None) -> list[int]:
        nominal = [0]
        for c in self.cell_codes:
            nominal.append(nominal[-1] + c)
        closed = [k for k in range(self.n_cells + 1) if k not in self.open_pins]
        pins = list(nominal)
        for k in self.open_pins:
            below = [p for p in closed if p < k]
            above = [p for p in closed if p > k]
            lo = nominal[below[-1]] if below else nominal[k]
            hi = nominal[above[0]] if above else nominal[k]
            if pull == 1:
                pins[k] = hi
            elif pull == 0:
                pins[k] = lo
            else:
                pins[k] = (lo + hi) // 2
        return pins

    def convert(self, pull: int | None = None) -> None:
        """ADCV (pull None) or ADOW (pull 1 up / 0 down): fill the cell registers."""
        if pull is None:
            self._ow = (None, 0)
        else:
            same = self._ow[0] == pull
            self._ow = (pull, self._ow[1] + 1 if same else 1)
            if self._ow[1] < 2:
                pull = None  # the first conversion has not charged the filter capacitors yet
        pins = self._pins(pull)
        for i in range(self.n_cells):
            v = self.stuck.get(i, pins[i + 1] - pins[i])
            self.cv[i] = min(max(v, 0), 0xFFFE)

    def group(self, name: str) -> bytes:
        """The 6 data bytes of a register group, as the chip sends them."""
        if name.startswith("CV"):
            vals = self.cv[3 * _CV.index(name) : 3 * _CV.index(name) + 3]
        elif name == "AUXA":
            vals = self.aux[0:3]
        elif name == "AUXB":
            vals = self.aux[3:6]
        else:
            return bytes(self.cfga if name == "CFGA" else self.cfgb)
        out = bytearray()
        for v in vals:
            out.append(v & 0xFF)
            out.append(v >> 8)
        return bytes(out)


class Ltc681xChain:
    """`n_modules` chips of `cells` (12 or 18) behind one chip select (through an LTC6820)."""

    def __init__(self, n_modules: int, cells: int = 12) -> None:
        self.chips = [Ltc681xChip(cells) for _ in range(n_modules)]
        self.cells = cells
        self.conv_polls = 3  # PLADC bytes reading 0x00 before a conversion reports done
        self.bad_commands = 0
        self.commands: list[int] = []
        self._cut = n_modules
        self._faults: dict[tuple[int, str], int] = {}
        self._busy = 0
        self._rx = bytearray()
        self._resp = b""
        self._cmd: int | None = None
        self._out = 0xFF

    # ---- test API ------------------------------------------------------------------------------
    def set_cells_mv(self, module: int, mv: list[int]) -> None:
        """Set a module's cell input voltages in mV."""
        self.chips[module].cell_codes = [10 * v for v in mv]

    def corrupt(self, module: int, group: str, times: int = 1) -> None:
        """Corrupt the next `times` responses of `module` for `group` (-1: forever)."""
        self._faults[(module, group)] = times

    def break_chain(self, module: int) -> None:
        """Module `module` and all beyond it drop off the chain."""
        self._cut = module

    def repair_chain(self) -> None:
        """Every module answers again."""
        self._cut = len(self.chips)

    def stuck_cell(self, module: int, cell: int, mv: int) -> None:
        """Cell `cell` (0-based) of `module` converts to `mv` whatever its input."""
        self.chips[module].stuck[cell] = 10 * mv

    def open_wire(self, module: int, pin: int) -> None:
        """Disconnect sense wire C(pin), pin 0..cells, of `module`."""
        self.chips[module].open_pins.add(pin)

    # ---- chain transport -----------------------------------------------------------------------
    def select(self) -> None:
        """Chip select fell: a new command starts."""
        self._rx = bytearray()
        self._cmd = None
        self._out = 0xFF

    def exchange(self, mosi: int) -> int:
        """One byte each way; the output was decided by the bytes before."""
        out = self._out
        self._rx.append(mosi)
        n = len(self._rx)
        if n == 4:
            self._decode()
        self._out = 0xFF
        if self._cmd is not None and n >= 4:
            if self._cmd in READS:
                i = n - 4
                self._out = self._resp[i] if i < len(self._resp) else 0xFF
            elif self._cmd == 0x714:
                self._out = 0x00 if self._busy > 0 else 0xFF
                self._busy -= 1
        return out

    def _decode(self) -> None:
        rx = self._rx
        if pec15_bitwise(bytes(rx[0:2])) != (rx[2] << 8 | rx[3]):
            self.bad_commands += 1
            return
        cmd = (rx[0] << 8 | rx[1]) & 0x7FF
        self._cmd = cmd
        self.commands.append(cmd)
        live = self.chips[: self._cut]
        if cmd in READS:
            name = READS[cmd]
            resp = bytearray()
            for m, chip in enumerate(live):
                data = bytearray(chip.group(name))
                pec = pec15_bitwise(bytes(data))
                left = self._faults.get((m, name), 0)
                if left:
                    data[1] ^= 0x40
                    self._faults[(m, name)] = left - 1 if left > 0 else left
                resp += data + bytes((pec >> 8, pec & 0xFF))
            self._resp = bytes(resp)
        elif cmd & 0x66F == 0x260:  # ADCV (all cells)
            self._convert(live, None)
        elif cmd & 0x62F == 0x228:  # ADOW
            self._convert(live, (cmd >> 6) & 1)
        elif cmd & 0x67F == 0x460:  # ADAX (all GPIOs)
            for chip in live:
                chip.aux = list(chip.gpio_codes)
            self._busy = self.conv_polls
        elif cmd == 0x711:  # CLRCELL
            for chip in live:
                chip.cv = [0xFFFF] * chip.n_cells

    def _convert(self, live: list[Ltc681xChip], pull: int | None) -> None:
        for chip in live:
            chip.convert(pull)
        self._busy = self.conv_polls

    def deselect(self) -> None:
        """Chip select rose: a write command latches its blocks (module 0 takes the last)."""
        if self._cmd in (0x001, 0x024):
            blocks = (len(self._rx) - 4) // 8
            for m in range(min(blocks, self._cut)):
                o = 4 + 8 * (blocks - 1 - m)
                data = bytes(self._rx[o : o + 6])
                if pec15_bitwise(data) != (self._rx[o + 6] << 8 | self._rx[o + 7]):
                    continue
                chip = self.chips[m]
                reg = chip.cfga if self._cmd == 0x001 else chip.cfgb
                reg[:] = data
        self._cmd = None
