"""MCP2515 stand-alone CAN controller on SPI (the ESP32 board's CAN: mainline MicroPython has no
TWAI driver).

Owns the chip: reset, 500 kbit/s bit timing, operating mode, the three TX buffers, the two RX
buffers (filters open, rollover from RXB0 to RXB1), the error flags and an overflow count.
Standard 11-bit data frames only: extended and remote frames received are dropped and counted.
`send` / `recv_into` have the shape of the board's `can_send` / `can_recv`; neither allocates.

Bit timing (CNF1..3): TQ = 2 * (BRP + 1) / Fosc; a bit is SyncSeg (1 TQ) + PropSeg + PS1 + PS2.
- 16 MHz: BRP 0 -> TQ 125 ns, 16 TQ = 2 us = 500 kbit/s; 1 + 5 + 8 + 2, sample point 87.5 %.
- 8 MHz: BRP 0 -> TQ 250 ns, 8 TQ = 2 us; 1 + 2 + 3 + 2, sample point 75 % (PS2 >= 2 TQ
  forbids 87.5 % with 8 TQ). SJW 1 TQ, one sample, PS2 set by CNF3 (BTLMODE 1).
CNF1 = (SJW-1) << 6 | BRP; CNF2 = 0x80 | (PS1-1) << 3 | (PropSeg-1); CNF3 = PS2-1.
"""

from ..compat import const

_RESET = const(0xC0)
_READ = const(0x03)
_WRITE = const(0x02)
_READ_RX0 = const(0x90)  # READ RX BUFFER from RXB0SIDH; clears RX0IF when CS rises
_READ_RX1 = const(0x94)
_LOAD_TX = const(0x40)  # | 2 * n: LOAD TX BUFFER n from TXBnSIDH
_RTS = const(0x80)  # | 1 << n
_READ_STATUS = const(0xA0)
_BIT_MODIFY = const(0x05)

_CANSTAT = const(0x0E)
_CANCTRL = const(0x0F)
_CNF3 = const(0x28)  # CNF3, CNF2, CNF1, CANINTE follow in address order
_CANINTF = const(0x2C)
_EFLG = const(0x2D)
_RXB0CTRL = const(0x60)
_RXB1CTRL = const(0x70)

_RX0IF = const(0x01)
_RX1IF = const(0x02)
_ERRIF = const(0x20)
_RX0OVR = const(0x40)
_RX1OVR = const(0x80)
_RXM_ANY = const(0x60)  # RXBnCTRL.RXM = 11: filters off, receive every frame
_BUKT = const(0x04)  # RXB0CTRL: roll over into RXB1 when RXB0 is full

MODE_NORMAL = const(0x00)
MODE_SLEEP = const(0x20)
MODE_LOOPBACK = const(0x40)
MODE_LISTEN = const(0x60)
MODE_CONFIG = const(0x80)


def timing_500k(osc_hz):
    """(CNF1, CNF2, CNF3) for 500 kbit/s from an 8 or 16 MHz crystal (see the module docstring)."""
    if osc_hz == 16_000_000:
        return (0x00, 0x80 | (8 - 1) << 3 | (5 - 1), 2 - 1)
    if osc_hz == 8_000_000:
        return (0x00, 0x80 | (3 - 1) << 3 | (2 - 1), 2 - 1)
    raise ValueError("mcp2515: 500 kbit/s needs an 8 or 16 MHz oscillator")


class Mcp2515:
    """One MCP2515 on `spi` (machine.SPI-like) with chip select `cs` (machine.Pin-like).

    The constructor runs `init(mode)`; `ready` tells whether the chip answered."""

    def __init__(self, spi, cs, osc_hz=16_000_000, mode=MODE_NORMAL):
        self._spi = spi
        self._cs = cs
        self.osc_hz = osc_hz
        self.mode = MODE_CONFIG
        self.dlc = 0
        self.overflows = 0  # RX0OVR/RX1OVR flags seen (each one: at least one frame lost)
        self.tx_full = 0  # send() refused: all three TX buffers still pending
        self.rx_dropped = 0  # extended or remote frames thrown away
        self.eflg = 0  # last error flags read (EWARN..TXBO, overflow bits cleared)
        self._rx1_next = False
        self._w1 = bytearray(1)
        self._w2 = bytearray(2)
        self._r2 = bytearray(2)
        self._w3 = bytearray(3)
        self._w4 = bytearray(4)
        self._r4 = bytearray(4)
        self._w6 = bytearray(6)
        self._tx = bytearray(14)  # LOAD TX BUFFER + SIDH SIDL EID8 EID0 DLC D0..D7
        self._rxw = bytearray(14)  # READ RX BUFFER + 13 dummy bytes
        self._rxr = bytearray(14)
        cs(1)
        self.ready = self.init(mode)

    # ---- bus primitives --------------------------------------------------------------------
    def _write(self, buf):
        self._cs(0)
        self._spi.write(buf)
        self._cs(1)

    def _xfer(self, w, r):
        self._cs(0)
        self._spi.write_readinto(w, r)
        self._cs(1)

    def read_register(self, addr):
        w = self._w4
        w[0] = _READ
        w[1] = addr
        w[2] = 0
        w[3] = 0
        self._xfer(w, self._r4)
        return self._r4[2]

    def write_register(self, addr, value):
        w = self._w3
        w[0] = _WRITE
        w[1] = addr
        w[2] = value
        self._write(w)

    def bit_modify(self, addr, mask, value):
        w = self._w4
        w[0] = _BIT_MODIFY
        w[1] = addr
        w[2] = mask
        w[3] = value
        self._write(w)

    def status(self):
        """READ STATUS: RX0IF, RX1IF, TXREQ0, TX0IF, TXREQ1, TX1IF, TXREQ2, TX2IF (bit 0..7)."""
        self._w2[0] = _READ_STATUS
        self._w2[1] = 0
        self._xfer(self._w2, self._r2)
        return self._r2[1]

    # ---- set-up ------------------------------------------------------------------------------
    def reset(self):
        """RESET instruction; True once the chip reports configuration mode."""
        self._w1[0] = _RESET
        self._write(self._w1)
        self.mode = MODE_CONFIG
        return self._wait_mode(MODE_CONFIG)

    def _wait_mode(self, mode):
        # The chip needs 128 oscillator cycles after reset and finishes a frame in progress
        # before it changes mode: poll CANSTAT.OPMOD a bounded number of times.
        for _ in range(100):
            if self.read_register(_CANSTAT) & 0xE0 == mode:
                return True
        return False

    def set_mode(self, mode):
        """Request MODE_NORMAL / MODE_LOOPBACK / MODE_LISTEN / MODE_SLEEP / MODE_CONFIG."""
        self.bit_modify(_CANCTRL, 0xE0, mode)
        ok = self._wait_mode(mode)
        if ok:
            self.mode = mode
        return ok

    def init(self, mode=MODE_NORMAL):
        """Reset, 500 kbit/s timing, filters open with rollover, interrupts off, then `mode`.
        False if the chip does not answer (no chip, no clock, wrong wiring)."""
        self.ready = False
        if not self.reset():
            return False
        cnf1, cnf2, cnf3 = timing_500k(self.osc_hz)
        w = self._w6
        w[0] = _WRITE
        w[1] = _CNF3
        w[2] = cnf3
        w[3] = cnf2
        w[4] = cnf1
        w[5] = 0  # CANINTE: polled, no interrupt pin
        self._write(w)
        self.bit_modify(_RXB0CTRL, 0x64, _RXM_ANY | _BUKT)
        self.bit_modify(_RXB1CTRL, 0x60, _RXM_ANY)
        self.bit_modify(_CANINTF, 0xFF, 0)
        self.bit_modify(_EFLG, 0xC0, 0)
        self._rx1_next = False
        if self.read_register(_CNF3 + 2) != cnf1:
            return False
        self.ready = self.set_mode(mode)
        return self.ready

    # ---- frames ------------------------------------------------------------------------------
    def send(self, can_id, buf, dlc):
        """Queue a standard data frame in a free TX buffer; False if all three are pending.
        Frames in different buffers may leave out of order (the chip picks by TXP, then by
        the highest buffer number)."""
        st = self.status()
        if not st & 0x04:
            n = 0
        elif not st & 0x10:
            n = 1
        elif not st & 0x40:
            n = 2
        else:
            self.tx_full += 1
            return False
        if dlc > 8:
            dlc = 8
        t = self._tx
        t[0] = _LOAD_TX | (n << 1)
        t[1] = (can_id >> 3) & 0xFF
        t[2] = (can_id & 7) << 5
        t[3] = 0
        t[4] = 0
        t[5] = dlc
        for i in range(dlc):
            t[6 + i] = buf[i]
        self._write(t)
        self._w1[0] = _RTS | (1 << n)
        self._write(self._w1)
        return True

    def recv_into(self, buf):
        """Take the oldest received frame into `buf` (8 bytes); its id, or -1 if none is waiting.
        Sets `dlc`. Counts and clears receive overflows on the way."""
        w = self._w4
        r = self._r4
        while True:
            w[0] = _READ
            w[1] = _CANINTF
            w[2] = 0
            w[3] = 0
            self._xfer(w, r)  # CANINTF and EFLG in one read
            intf = r[2]
            eflg = r[3]
            if eflg & (_RX0OVR | _RX1OVR):
                if eflg & _RX0OVR:
                    self.overflows += 1
                if eflg & _RX1OVR:
                    self.overflows += 1
                self.bit_modify(_EFLG, _RX0OVR | _RX1OVR, 0)
                self.bit_modify(_CANINTF, _ERRIF, 0)
            self.eflg = eflg & 0x3F
            if intf & _RX1IF and (self._rx1_next or not intf & _RX0IF):
                instr = _READ_RX1
                self._rx1_next = False
            elif intf & _RX0IF:
                instr = _READ_RX0
                # Both full: RXB1 rolled over from RXB0, so it holds the next-oldest frame.
                self._rx1_next = bool(intf & _RX1IF)
            else:
                return -1
            rw = self._rxw
            rw[0] = instr
            rr = self._rxr
            self._xfer(rw, rr)
            sidl = rr[2]
            if sidl & 0x18:  # IDE (extended) or SRR (standard remote frame)
                self.rx_dropped += 1
                continue
            dlc = rr[5] & 0x0F
            if dlc > 8:
                dlc = 8
            for i in range(dlc):
                buf[i] = rr[6 + i]
            self.dlc = dlc
            return (rr[1] << 3) | (sidl >> 5)
