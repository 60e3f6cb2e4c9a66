"""What the boards driven by the HIL bench share: `sim` (unix port) and `qemu` (emulated Cortex-M).

Owns the lock-step clock (advanced by SIM_Tick; the wall clock in real-time mode), the watchdog on
that clock (fed by the firmware after each completed cycle; on expiry the outputs open, the reset
cause is stored and the board exits with code 75 so the host restarts it), contactor, balancing
and thermal outputs (reported on CAN by the firmware), file storage (atomic: written to a
temporary file, then renamed), the configuration file, SIM_Stall fault injection, and CAN as
SLCAN (Lawicel ASCII) lines: `t<id:3><dlc><data>\\r` frames, and the commands python-can's slcan
interface sends. A board subclass supplies the byte transport: `_send(data)` writes the queued
frames, `_reply(port, data)` answers a command, `exit(code)` ends the process, and it fills
`SlcanPort` buffers from its link.

SIM_Stall (this board family only, never a hardware one): the board busy-waits StallDuration ms
inside each of the next StallCycles control cycles (in `measure`, which the cycle calls first),
so the bench can make the loop overrun its period.
"""

from firmware.compat import const, ticks_add, ticks_diff, ticks_ms, ticks_us

_CR = const(13)
_WDT_EXIT = const(75)  # exit code for "reset by watchdog": the host restarts the board
# SIM_Stall (dbc/cellguard.dbc), decoded here: importing the codec would count it in the board's
# I/O cost, which the bench adds on top of a hardware board's heap budget.
_SIM_STALL_ID = const(0x20E)

_HEX = bytearray(256)
for _i in range(10):
    _HEX[48 + _i] = _i
for _i in range(6):
    _HEX[65 + _i] = 10 + _i
    _HEX[97 + _i] = 10 + _i


class Restart(BaseException):
    """A requested reset (`reset`); main.py catches it (as the board module's `Restart`) and
    starts the firmware again."""


class SlcanPort:
    """One SLCAN byte stream: its receive buffer (lines from `pos` to `fill`) and open state."""

    def __init__(self, size):
        self.open = False
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.pos = 0

    def compact(self):
        """Move the unread bytes to the front; a full buffer without a line end is dropped."""
        if self.pos == self.fill:
            self.pos = self.fill = 0  # all consumed: nothing to move
        elif self.pos:
            rest = self.fill - self.pos
            self.buf[:rest] = self.view[self.pos : self.fill]  # a view: no copy of the bytes
            self.fill = rest
            self.pos = 0
        if self.fill == len(self.buf):
            self.fill = 0

    def has_line(self):
        return self.buf.find(b"\r", self.pos, self.fill) >= 0


class LockstepBoard:
    """The shared part of the bench-driven boards (see the module docstring)."""

    def __init__(self, realtime, config_path, storage_dir, wdt_ms, tx_size):
        self.realtime = realtime
        self._config_path = config_path
        self._storage = storage_dir
        self._wdt_ms = wdt_ms
        self._clock = 0
        self._wall0 = ticks_ms()
        self._last_feed = None  # armed by the first feed, as firmware starts a hardware WDT
        self.contactors = bytearray(3)
        self.thermal = bytearray(2)  # cooling, heating
        self.balancing = None
        self.rx_dlc = 0
        self._stall = [0, 0]  # SIM_Stall: cycles left, ms per cycle
        self._tx = bytearray(tx_size)
        self._txview = memoryview(self._tx)
        self._tx_fill = 0
        self._cause = self._read_reset_cause()

    # ---- clock -------------------------------------------------------------------------------
    def ticks_ms(self):
        if self.realtime:
            now = ticks_diff(ticks_ms(), self._wall0) & 0x3FFFFFFF
            self._check_wdt_at(now)
            return now
        return self._clock

    def advance(self, ms):
        """Advance the lock-step clock (SIM_Tick). Returns False in real-time mode."""
        if self.realtime:
            return False
        self._clock = ticks_add(self._clock, ms) & 0x3FFFFFFF
        self._check_wdt()
        return True

    # ---- watchdog ----------------------------------------------------------------------------
    def wdt_feed(self):
        # A hardware watchdog counts while the firmware is busy: a cycle that ran past the
        # timeout has reset the MCU before its feed, so a late feed resets instead of feeding.
        now = self.ticks_ms()
        self._check_wdt_at(now)
        self._last_feed = now

    def _check_wdt(self):
        self._check_wdt_at(self.ticks_ms())

    def _check_wdt_at(self, now):
        # Called from every board-time read in real time and from the SIM_Stall busy-wait, so a
        # stalled cycle is reset at the timeout, not only once it ends (a pure-Python loop that
        # calls no board method is beyond a unix process without a hardware timer).
        last = self._last_feed
        if last is not None and ticks_diff(now, last) > self._wdt_ms:
            self._last_feed = None
            self.set_contactors(0, 0, 0)
            self.storage_write("reset_cause", b"1")
            print("cellguard " + self.name + " board: watchdog expired, resetting")
            self.exit(_WDT_EXIT)

    def reset_cause(self):
        return self._cause

    def _read_reset_cause(self):
        # One digit 0..2; anything else (a damaged or foreign file) reads as a power-on reset
        # rather than stopping the board before its outputs are ever commanded.
        data = self.storage_read("reset_cause")
        if not data:
            return 0
        try:
            self.storage_write("reset_cause", b"0")
        except OSError:
            pass
        return data[0] - 48 if len(data) == 1 and 48 <= data[0] <= 50 else 0

    # ---- outputs -----------------------------------------------------------------------------
    def set_contactors(self, neg, pre, pos):
        self.contactors[0] = neg
        self.contactors[1] = pre
        self.contactors[2] = pos

    def set_balancing(self, mask):
        self.balancing = mask

    def set_thermal(self, cooling, heating):
        self.thermal[0] = cooling
        self.thermal[1] = heating

    def measure(self, meas, now_ms):
        """Measurement source `bench`: the bench injects measurements as CAN frames.

        Runs first in every control cycle, so a pending SIM_Stall busy-waits here."""
        stall = self._stall
        if stall[0]:
            stall[0] -= 1
            t0 = ticks_us()
            while ticks_diff(ticks_us(), t0) < stall[1] * 1000:
                if self.realtime:
                    self._check_wdt()

    # ---- storage -----------------------------------------------------------------------------
    def storage_read(self, name):
        if not self._storage:
            return None
        try:
            with open(self._storage + "/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def storage_write(self, name, data):
        if not self._storage:
            return
        tmp = self._storage + "/" + name + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        # POSIX rename is atomic: a reader sees the old or the new record, never half of one.
        import os

        os.rename(tmp, self._storage + "/" + name)

    def storage_path(self, name):
        """Filesystem path of storage `name` (firmware update slots), None without storage."""
        return self._storage + "/" + name if self._storage else None

    def reset(self, hard):
        """ECU reset (UDS 0x11, or into the programming session): outputs open, then Restart,
        on which main.py starts the firmware again in this process; the bus and its clients
        stay connected, as a CAN bus stays when an ECU resets."""
        self.set_contactors(0, 0, 0)
        self.flush()
        self._cause = 0 if hard else 2
        self._last_feed = self.ticks_ms()
        print("cellguard " + self.name + " board: reset (" + ("hard" if hard else "soft") + ")")
        raise Restart()

    def config_overrides(self):
        if not self._config_path:
            return None
        import json

        with open(self._config_path) as f:
            return json.load(f)

    def halt(self, message):
        self.set_contactors(0, 0, 0)
        print("cellguard: halted:", message)
        self.exit(2)

    # ---- CAN as SLCAN ------------------------------------------------------------------------
    def can_send(self, can_id, buf, dlc):
        # Frames are queued and written in one go when the firmware idles: one write per cycle
        # instead of one per frame.
        if self._tx_fill > len(self._tx) - 22:
            self.flush()
        tx = self._tx
        p = self._tx_fill
        tx[p] = 116  # 't'
        tx[p + 1] = _hexdigit(can_id >> 8)
        tx[p + 2] = _hexdigit(can_id >> 4)
        tx[p + 3] = _hexdigit(can_id)
        tx[p + 4] = 48 + dlc
        p += 5
        for i in range(dlc):
            b = buf[i]
            tx[p] = _hexdigit(b >> 4)
            tx[p + 1] = _hexdigit(b)
            p += 2
        tx[p] = _CR
        self._tx_fill = p + 1

    def flush(self):
        """Write the queued frames."""
        if self._tx_fill:
            self._send(self._txview[: self._tx_fill])
            self._tx_fill = 0

    def _on_frame(self, port, start, end):
        """A data frame (line buf[start:end]) arrived on `port` (the sim board's bus echoes it)."""

    def _next_frame(self, c, out):
        """Handle lines of port `c` until a data frame lands in `out`; its id, or -1."""
        buf = c.buf
        while True:
            end = buf.find(b"\r", c.pos, c.fill)
            if end < 0:
                return -1
            start = c.pos
            c.pos = end + 1
            if end == start:
                continue
            if buf[start] != 116:  # not 't': an SLCAN command
                self._command(c, buf[start])
                continue
            dlc = buf[start + 4] - 48 if end - start >= 5 else -1
            if dlc < 0 or dlc > 8 or end - start != 5 + 2 * dlc:
                self._reply(c, b"\x07")
                continue
            if not c.open:
                continue
            h = _HEX
            p = start + 5
            for i in range(dlc):
                out[i] = (h[buf[p]] << 4) | h[buf[p + 1]]
                p += 2
            self.rx_dlc = dlc
            self._on_frame(c, start, end)
            cid = (h[buf[start + 1]] << 8) | (h[buf[start + 2]] << 4) | h[buf[start + 3]]
            if cid != _SIM_STALL_ID:
                return cid
            self._stall[0] = out[0] | out[1] << 8  # StallCycles
            self._stall[1] = out[2] | out[3] << 8  # StallDuration, ms

    def _command(self, c, cmd):
        self._reply(c, command_reply(c, cmd, b"NCGSM\r"))


def command_reply(c, cmd, serial):
    """Apply the SLCAN command `cmd` (its first byte) to port `c` and return the reply: `serial`
    (b"N....\\r") answers 'N'; bit rate, timestamps and filters are accepted and meaningless on a
    virtual bus; anything else is refused with BEL."""
    if cmd == 79 or cmd == 76:  # 'O' open, 'L' listen-only
        c.open = True
    elif cmd == 67:  # 'C' close
        c.open = False
    elif cmd == 86:  # 'V' version
        return b"V1013\r"
    elif cmd == 78:  # 'N' serial number
        return serial
    elif cmd == 70:  # 'F' status flags
        return b"F00\r"
    elif cmd not in b"SsZMmX":
        return b"\x07"
    return b"\r"


def _hexdigit(v):
    v &= 15
    return 48 + v if v < 10 else 55 + v


def parse_options(args, allowed):
    """Command-line options of a bench-driven board as a dict: --realtime, --port N, --config F,
    --storage DIR, --wdt-ms N, --preload MOD,MOD (imported at once, so their code takes the heap
    it takes on a board). `allowed` names the options this board takes."""
    opts = {
        "port": 0,
        "realtime": False,
        "config": None,
        "storage": None,
        "wdt_ms": 2000,
        "charger_port": 0,
    }
    i = 0
    while i < len(args):
        a = args[i]
        if a not in allowed:
            raise ValueError("board: unknown argument " + a)
        if a == "--realtime":
            opts["realtime"] = True
        elif i + 1 < len(args):
            v = args[i + 1]
            i += 1
            if a == "--preload":
                for name in v.split(","):
                    __import__(name)
            elif a == "--port":
                opts["port"] = int(v)
            elif a == "--charger-port":
                opts["charger_port"] = int(v)
            elif a == "--config":
                opts["config"] = v
            elif a == "--storage":
                opts["storage"] = v
            else:
                opts["wdt_ms"] = int(v)
        else:
            raise ValueError("board: " + a + " needs a value")
        i += 1
    return opts
