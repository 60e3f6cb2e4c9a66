"""LTC6811 (12 cells) / LTC6813 (18 cells) multicell monitors in an isoSPI daisy chain.

Owns the chain: command framing with PEC15, cell conversions (ADCV) and reads (RDCVA..F), GPIO
reads (ADAX, RDAUXA/B), the configuration with the balancing switches (WRCFGA/B, RDCFGA/B
readback) and the per-module health: `status` (0 ok, 1 PEC error in
the last read, 2 missing), cumulative `pec_errors`, per-cell `fresh` flags.

Chain order (LTC681x datasheet, "daisy-chain communication"): module 0 is the device wired to
the host. On a read it answers first (its 6 data + 2 PEC bytes, then module 1's...). On a write
the data shifts through, so the bytes for the LAST module are sent first and module 0's last.
A module that does not answer (all 0xFF: a broken link shifts ones) is missing, and so is every
module beyond it. Cell codes have a 100 uV LSB; they become mV rounded, integers only.
The open-wire check (ADOW) lives in `ltc681x_openwire`.
"""

from array import array

from ..compat import const
from .pec15 import pec15

_WRCFGA = const(0x001)
_WRCFGB = const(0x024)
_RDCFGA = const(0x002)
_RDCFGB = const(0x026)
_RDAUXA = const(0x00C)
_RDAUXB = const(0x00E)
_ADCV = const(0x260)  # | MD << 7 | DCP << 4 | CH (0 = all cells)
_ADAX = const(0x460)  # | MD << 7 | CHG (0 = GPIO1..5 and the 2nd reference)
_PLADC = const(0x714)
_RDCV = (0x004, 0x006, 0x008, 0x00A, 0x009, 0x00B)  # RDCVA..RDCVF

MD_FAST = const(1)  # 27 kHz
MD_NORMAL = const(2)  # 7 kHz
MD_FILTERED = const(3)  # 26 Hz
OK = const(0)
PEC_ERROR = const(1)
MISSING = const(2)
_POLLS = const(200)  # PLADC bytes before giving up (each byte is 8 SPI clocks)


class Ltc681x:
    """`n_modules` chips of `cells` (12: LTC6811, 18: LTC6813) on `spi` with chip select `cs`."""

    def __init__(self, spi, cs, n_modules, cells=12, md=MD_NORMAL):
        if cells not in (12, 18):
            raise ValueError("ltc681x: 12 or 18 cells per module")
        self._spi = spi
        self._cs = cs
        self.n = n_modules
        self.cells = cells
        self.md = md
        self._groups = cells // 3
        size = 4 + 8 * n_modules
        self._tx = bytearray(size)
        self._rx = bytearray(size)
        self._cmd4 = memoryview(self._tx)[:4]
        self._b1 = bytearray(1)
        self._cfga = bytearray(6 * n_modules)
        self._cfgb = bytearray(6 * n_modules)
        self.cfga_read = bytearray(6 * n_modules)
        self.cfgb_read = bytearray(6 * n_modules)
        for m in range(n_modules):
            self._cfga[6 * m] = 0xFC  # GPIO1..5 pull-downs off, REFON (no reference restart)
            self._cfgb[6 * m] = 0x0F  # GPIO6..9 pull-downs off (LTC6813)
        self.status = bytearray(n_modules)
        self.pec_errors = array("I", [0] * n_modules)
        self.fresh = bytearray(n_modules * cells)
        self.last_ok_ms = [0] * n_modules
        self.missing = 0
        self.timeouts = 0
        self._pending = False
        cs(1)

    # ---- framing -------------------------------------------------------------------------------
    def _cmd(self, code):
        t = self._tx
        t[0] = code >> 8
        t[1] = code & 0xFF
        p = pec15(t, 0, 2)
        t[2] = p >> 8
        t[3] = p & 0xFF

    def command(self, code):
        """Send a bare command (broadcast to every module)."""
        self._cmd(code)
        self._cs(0)
        self._spi.write(self._cmd4)
        self._cs(1)

    def wait_adc(self):
        """PLADC: poll until every module finished converting; False after _POLLS bytes."""
        self._cmd(_PLADC)
        b = self._b1
        self._cs(0)
        self._spi.write(self._cmd4)
        done = False
        for _ in range(_POLLS):
            self._spi.readinto(b, 0xFF)
            if b[0]:
                done = True
                break
        self._cs(1)
        if not done:
            self.timeouts += 1
        return done

    def _read(self, code):
        self._cmd(code)
        t = self._tx
        for i in range(4, len(t)):
            t[i] = 0xFF
        self._cs(0)
        self._spi.write_readinto(t, self._rx)
        self._cs(1)

    def _block(self, m):
        # Verdict on module m's 8 bytes of the last read.
        r = self._rx
        o = 4 + 8 * m
        ff = 0xFF
        for i in range(o, o + 8):
            ff &= r[i]
        if ff == 0xFF:  # PEC words always end in a 0 bit: all ones is no answer
            return MISSING
        p = pec15(r, o, 6)
        if r[o + 6] != p >> 8 or r[o + 7] != p & 0xFF:
            return PEC_ERROR
        return OK

    def _read3(self, code, out, stride, first, fresh):
        # Read one register group from every module; module m's three values land in
        # out[m * stride + first + j] as mV. Returns the number of PEC errors.
        self._read(code)
        r = self._rx
        errors = 0
        for m in range(self.n):
            s = self._block(m)
            base = m * stride + first
            o = 4 + 8 * m
            for j in range(3):
                if s == OK:
                    v = r[o + 2 * j] | r[o + 2 * j + 1] << 8
                    ok = v != 0xFFFF  # cleared register: no conversion since
                    out[base + j] = (v + 5) // 10 if ok else 0
                elif s == MISSING:
                    ok = False
                    out[base + j] = 0
                else:
                    ok = False  # PEC error: the previous value stays, not refreshed
                if fresh is not None:
                    fresh[base + j] = 1 if ok else 0
            if s == PEC_ERROR:
                errors += 1
                self.pec_errors[m] += 1
            if s > self.status[m]:
                self.status[m] = s
        return errors

    def _begin(self):
        for m in range(self.n):
            self.status[m] = OK

    def _end(self, now):
        missing = 0
        for m in range(self.n):
            if self.status[m] == MISSING:
                missing += 1
            elif self.status[m] == OK:
                self.last_ok_ms[m] = now
        self.missing = missing

    # ---- cells ---------------------------------------------------------------------------------
    def start_cells(self, dcp=0):
        """ADCV: start converting all cells (dcp 1: keep balancing switches on meanwhile)."""
        self.command(_ADCV | self.md << 7 | dcp << 4)
        self._pending = True

    def read_cells(self, out, now):
        """Fill `out` (n_modules * cells, mV; module 0 first) from the latest conversion, then
        start the next one (pipelined: a control period is much longer than a conversion).
        The first call converts and waits. Returns the number of register groups with PEC
        errors; those cells keep their old value with fresh = 0. Missing modules' cells read 0.
        """
        if not self._pending:
            self.start_cells()
        self.wait_adc()
        self._begin()
        errors = 0
        for g in range(self._groups):
            errors += self._read3(_RDCV[g], out, self.cells, 3 * g, self.fresh)
        self._end(now)
        self.start_cells()
        return errors

    def read_aux(self, out, now):
        """ADAX, wait, RDAUXA/B: out[6 m + 0..5] = GPIO1..5 and the 2nd reference of module m,
        mV. Returns the number of PEC errors. Ends a pending cell conversion: call read_cells
        first (it restarts it)."""
        self.command(_ADAX | self.md << 7)
        self._pending = False
        self.wait_adc()
        self._begin()
        errors = self._read3(_RDAUXA, out, 6, 0, None)
        errors += self._read3(_RDAUXB, out, 6, 3, None)
        self._end(now)
        return errors

    # ---- configuration and balancing -------------------------------------------------------
    def set_dcc(self, mask):
        """Balancing switches from the board mask (bit i of mask = pack cell i, module 0's cells
        first) and write them to every module at once."""
        c = self.cells
        for m in range(self.n):
            dcc = 0
            for k in range(c):
                i = m * c + k
                if (i >> 3) < len(mask) and mask[i >> 3] >> (i & 7) & 1:
                    dcc |= 1 << k
            a = 6 * m
            self._cfga[a + 4] = dcc & 0xFF
            self._cfga[a + 5] = (self._cfga[a + 5] & 0xF0) | (dcc >> 8 & 0x0F)
            self._cfgb[a] = (self._cfgb[a] & 0x0F) | (dcc >> 8 & 0xF0)  # DCC13..16
            self._cfgb[a + 1] = (self._cfgb[a + 1] & 0xFC) | (dcc >> 16 & 3)  # DCC17..18
        self.write_config()

    def write_config(self):
        """WRCFGA (and WRCFGB on the LTC6813) to every module in one transaction each."""
        self._write(_WRCFGA, self._cfga)
        if self.cells == 18:
            self._write(_WRCFGB, self._cfgb)

    def _write(self, code, src):
        self._cmd(code)
        t = self._tx
        o = 4
        for k in range(self.n):
            s = 6 * (self.n - 1 - k)  # the last module's data goes first
            for j in range(6):
                t[o + j] = src[s + j]
            p = pec15(t, o, 6)
            t[o + 6] = p >> 8
            t[o + 7] = p & 0xFF
            o += 8
        self._cs(0)
        self._spi.write(t)
        self._cs(1)

    def verify_config(self, now):
        """Read the configuration back; the number of modules whose balancing switches differ
        from what was written or that did not answer cleanly."""
        self._begin()
        self._read_cfg(_RDCFGA, self.cfga_read)
        if self.cells == 18:
            self._read_cfg(_RDCFGB, self.cfgb_read)
        self._end(now)
        bad = 0
        for m in range(self.n):
            a = 6 * m
            same = self.cfga_read[a + 4] == self._cfga[a + 4]
            same = same and self.cfga_read[a + 5] & 0x0F == self._cfga[a + 5] & 0x0F
            if self.cells == 18:
                same = same and self.cfgb_read[a] & 0xF0 == self._cfgb[a] & 0xF0
                same = same and self.cfgb_read[a + 1] & 3 == self._cfgb[a + 1] & 3
            if not same or self.status[m] != OK:
                bad += 1
        return bad

    def _read_cfg(self, code, dst):
        self._read(code)
        for m in range(self.n):
            s = self._block(m)
            if s == OK:
                for j in range(6):
                    dst[6 * m + j] = self._rx[4 + 8 * m + j]
            elif s == PEC_ERROR:
                self.pec_errors[m] += 1
            if s > self.status[m]:
                self.status[m] = s
