"""Register-level emulator of the Microchip MCP2515 stand-alone CAN controller.

Owns a 128-byte register file (CANSTAT/CANCTRL mirrored at every xE/xF address), the SPI
instruction decoder (RESET, READ, WRITE, READ RX BUFFER, LOAD TX BUFFER, RTS, READ STATUS,
BIT MODIFY), the operating modes, transmission (normal mode: frames go to `bus` and the
`on_tx` callback; loopback: back into the receive path) and reception (`inject`: RXB0, rolling
over into RXB1 when RXB0CTRL.BUKT is set; a frame finding no free buffer sets RX0OVR/RX1OVR and
ERRIF). CNF1..3, filters and masks accept writes in configuration mode only, as on the chip.
Frames are `(can_id, data)`; extended ids carry `EXT_FLAG` (like Linux CAN_EFF_FLAG).

Fault injection: `ack = False` (no other node acknowledges: TX requests stay pending, TXERR set).
"""

try:
    from collections.abc import Callable
except ImportError:  # MicroPython: annotations are never evaluated there
    Callable = None

EXT_FLAG = 0x80000000

RESET, READ, WRITE, BIT_MODIFY, READ_STATUS = 0xC0, 0x03, 0x02, 0x05, 0xA0
CANSTAT, CANCTRL, CNF3, CNF2, CNF1 = 0x0E, 0x0F, 0x28, 0x29, 0x2A
CANINTF, EFLG, TEC = 0x2C, 0x2D, 0x1C
TXB_CTRL = (0x30, 0x40, 0x50)
RXB_CTRL = (0x60, 0x70)
MODE_NORMAL, MODE_SLEEP, MODE_LOOPBACK, MODE_LISTEN, MODE_CONFIG = 0x00, 0x20, 0x40, 0x60, 0x80

# BFPCTRL, TXRTSCTRL, CANCTRL, CNF1..3, CANINTE, CANINTF, EFLG, TXBnCTRL, RXBnCTRL
_BIT_MODIFIABLE = bytes(
    (0x0C, 0x0D, 0x0F, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x30, 0x40, 0x50, 0x60)
)
_BIT_MODIFIABLE += bytes((0x70,))


def _config_only(addr: int) -> bool:
    return (
        addr in (CNF1, CNF2, CNF3)
        or 0x00 <= addr <= 0x0B
        or 0x10 <= addr <= 0x1B
        or (0x20 <= addr <= 0x27)
    )


def _read_only(addr: int) -> bool:
    return (
        addr & 0x0F == 0x0E
        or addr in (TEC, TEC + 1)
        or 0x61 <= addr <= 0x6D
        or (0x71 <= addr <= 0x7D)
    )


class Mcp2515Emulator:
    """One MCP2515 behind an SPI chip select (attach it to a `FakeSpi`)."""

    def __init__(self, osc_hz: int = 16_000_000, on_tx: Callable | None = None) -> None:
        self.osc_hz = osc_hz
        self.on_tx = on_tx
        self.ack = True
        self.bus: list[tuple[int, bytes]] = []
        self.rx_lost = 0
        self.reg = bytearray(128)
        self._rx: list[int] = []
        self._out = 0xFF
        self.reset()

    # ---- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on / RESET: registers to their defaults, configuration mode."""
        for i in range(128):
            self.reg[i] = 0
        self.reg[CANSTAT] = MODE_CONFIG
        self.reg[CANCTRL] = 0x87

    @property
    def mode(self) -> int:
        """The operating mode (CANSTAT.OPMOD)."""
        return self.reg[CANSTAT] & 0xE0

    def read(self, addr: int) -> int:
        """A register as the chip reads it out."""
        addr &= 0x7F
        if addr & 0x0F == 0x0E:
            return self.reg[CANSTAT]
        if addr & 0x0F == 0x0F:
            return self.reg[CANCTRL]
        return self.reg[addr]

    def write(self, addr: int, value: int) -> None:
        """A register write as the chip applies it (read-only and locked registers ignored)."""
        addr &= 0x7F
        if addr & 0x0F == 0x0F:
            self.reg[CANCTRL] = value
            self._set_mode(value & 0xE0)
            return
        if _read_only(addr) or (_config_only(addr) and self.mode != MODE_CONFIG):
            return
        if addr == EFLG:  # only the overflow bits are writable, and only to clear them
            value = self.reg[EFLG] & (value | 0x3F)
        self.reg[addr] = value & 0xFF
        if addr in TXB_CTRL:
            self._transmit()

    def _set_mode(self, mode: int) -> None:
        if mode > MODE_CONFIG:
            mode = MODE_CONFIG  # 101..111 are invalid and select configuration mode
        self.reg[CANSTAT] = (self.reg[CANSTAT] & 0x1F) | mode
        self._transmit()

    def bit_timing(self) -> tuple[int, int, bool]:
        """(bit rate in bit/s, sample point in permille, valid per the datasheet constraints)."""
        c1, c2, c3 = self.reg[CNF1], self.reg[CNF2], self.reg[CNF3]
        brp, sjw = (c1 & 0x3F) + 1, (c1 >> 6) + 1
        prop, ps1 = (c2 & 7) + 1, ((c2 >> 3) & 7) + 1
        ps2 = (c3 & 7) + 1 if c2 & 0x80 else max(ps1, 2)
        ntq = 1 + prop + ps1 + ps2
        valid = 8 <= ntq <= 25 and prop + ps1 >= ps2 and ps2 > sjw and ps2 >= 2
        return self.osc_hz // (2 * brp * ntq), 1000 * (1 + prop + ps1) // ntq, valid

    # ---- frames ------------------------------------------------------------------------------
    def inject(self, can_id: int, data: bytes, extended: bool = False) -> bool:
        """A frame from another node on the bus; False if it was not stored (mode or overflow)."""
        if self.mode not in (MODE_NORMAL, MODE_LISTEN):
            return False
        return self._receive(can_id, data, extended)

    def _accepts(self, buf: int, can_id: int, extended: bool) -> bool:
        rxm = self.reg[RXB_CTRL[buf]] & 0x60
        if rxm == 0x60:
            return True
        if extended:
            return False  # filters compare standard ids only in this emulator
        mask = self.reg[0x20 + 4 * buf] << 3 | self.reg[0x21 + 4 * buf] >> 5
        filters = (0x00, 0x04) if buf == 0 else (0x08, 0x10, 0x14, 0x18)
        for f in filters:
            fid = self.reg[f] << 3 | self.reg[f + 1] >> 5
            if (can_id ^ fid) & mask == 0:
                return True
        return False

    def _receive(self, can_id: int, data: bytes, extended: bool) -> bool:
        intf = self.reg[CANINTF]
        if self._accepts(0, can_id, extended):
            if not intf & 0x01:
                self._load_rx(0, can_id, data, extended)
                return True
            if not self.reg[RXB_CTRL[0]] & 0x04:  # no rollover
                return self._overflow(0x40)
            if not intf & 0x02:
                self._load_rx(1, can_id, data, extended)
                return True
            return self._overflow(0x80)
        if self._accepts(1, can_id, extended):
            if not intf & 0x02:
                self._load_rx(1, can_id, data, extended)
                return True
            return self._overflow(0x80)
        return False

    def _overflow(self, bit: int) -> bool:
        self.reg[EFLG] |= bit
        self.reg[CANINTF] |= 0x20
        self.rx_lost += 1
        return False

    def _load_rx(self, buf: int, can_id: int, data: bytes, extended: bool) -> None:
        base = RXB_CTRL[buf] + 1
        r = self.reg
        if extended:
            sid = (can_id >> 18) & 0x7FF
            r[base] = sid >> 3
            r[base + 1] = (sid & 7) << 5 | 0x08 | (can_id >> 16) & 3
            r[base + 2] = (can_id >> 8) & 0xFF
            r[base + 3] = can_id & 0xFF
        else:
            r[base] = (can_id >> 3) & 0xFF
            r[base + 1] = (can_id & 7) << 5
            r[base + 2] = 0
            r[base + 3] = 0
        r[base + 4] = len(data)
        for i in range(8):
            r[base + 5 + i] = data[i] if i < len(data) else 0
        r[CANINTF] |= 1 << buf

    def _frame(self, n: int) -> tuple[int, bytes]:
        base = TXB_CTRL[n] + 1
        r = self.reg
        can_id = r[base] << 3 | r[base + 1] >> 5
        if r[base + 1] & 0x08:
            can_id = EXT_FLAG | can_id << 18 | (r[base + 1] & 3) << 16 | r[base + 2] << 8
            can_id |= r[base + 3]
        dlc = min(r[base + 4] & 0x0F, 8)
        return can_id, bytes(r[base + 5 : base + 5 + dlc])

    def _transmit(self) -> None:
        mode = self.mode
        if mode not in (MODE_NORMAL, MODE_LOOPBACK):
            return
        # Highest TXP first, then the highest buffer number, as the chip arbitrates internally.
        order = sorted(range(3), key=lambda n: (self.reg[TXB_CTRL[n]] & 3, n), reverse=True)
        for n in order:
            ctrl = TXB_CTRL[n]
            if not self.reg[ctrl] & 0x08:
                continue
            can_id, data = self._frame(n)
            if mode == MODE_NORMAL and not self.ack:
                self.reg[ctrl] |= 0x10  # TXERR; TXREQ stays set, the chip retries
                self.reg[TEC] = min(255, self.reg[TEC] + 8)
                continue
            if mode == MODE_LOOPBACK:
                ext = bool(can_id & EXT_FLAG)
                self._receive(can_id & 0x1FFFFFFF, data, ext)
            else:
                self.bus.append((can_id, data))
                if self.on_tx is not None:
                    self.on_tx(can_id, data)
            self.reg[ctrl] &= ~0x18 & 0xFF
            self.reg[CANINTF] |= 0x04 << n

    def _status(self) -> int:
        intf = self.reg[CANINTF]
        s = intf & 0x03
        for n in range(3):
            if self.reg[TXB_CTRL[n]] & 0x08:
                s |= 0x04 << (2 * n)
            if intf & (0x04 << n):
                s |= 0x08 << (2 * n)
        return s

    # ---- SPI device --------------------------------------------------------------------------
    def select(self) -> None:
        """Chip select fell: a new instruction starts."""
        self._rx = []
        self._out = 0xFF

    def exchange(self, mosi: int) -> int:
        """One byte in, one byte out (the output was decided by the bytes before)."""
        out = self._out
        self._rx.append(mosi)
        self._out = self._step(self._rx)
        return out

    def _step(self, rx: list[int]) -> int:
        instr, n = rx[0], len(rx)
        if instr == READ:
            return self.read(rx[1] + n - 2) if n >= 2 else 0xFF
        if instr == WRITE:
            if n >= 3:
                self.write(rx[1] + n - 3, rx[-1])
            return 0xFF
        if instr == READ_STATUS:
            return self._status()
        if instr & 0xF9 == 0x90:  # READ RX BUFFER: 0x90 / 0x92 / 0x94 / 0x96
            base = 0x61 if instr & 0x04 == 0 else 0x71
            start = base + (5 if instr & 0x02 else 0)
            return self.read(start + n - 1)
        if instr & 0xF8 == 0x40 and instr & 7 < 6:  # LOAD TX BUFFER
            base = TXB_CTRL[(instr & 7) >> 1] + 1 + (5 if instr & 1 else 0)
            if n >= 2:
                self.reg[(base + n - 2) & 0x7F] = rx[-1]
            return 0xFF
        if instr == BIT_MODIFY and n == 4:
            addr, mask, data = rx[1] & 0x7F, rx[2], rx[3]
            if addr not in _BIT_MODIFIABLE:
                mask = 0xFF
            self.write(addr, (self.read(addr) & ~mask | data & mask) & 0xFF)
        if instr == RESET and n == 1:
            self.reset()
        if instr & 0xF8 == 0x80 and n == 1:  # RTS
            for b in range(3):
                if instr & (1 << b):
                    self.reg[TXB_CTRL[b]] |= 0x08
            self._transmit()
        return 0xFF

    def deselect(self) -> None:
        """Chip select rose: READ RX BUFFER releases its buffer (clears RXnIF)."""
        if self._rx and self._rx[0] & 0xF9 == 0x90:
            self.reg[CANINTF] &= ~(0x02 if self._rx[0] & 0x04 else 0x01) & 0xFF
        self._rx = []
