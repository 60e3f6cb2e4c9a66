"""The `sim` board: cellguard on the MicroPython unix port, wired to the HIL bench.

Owns the simulated hardware: a CAN controller served as SLCAN over TCP (python-can reaches it with
`interface="slcan", channel="socket://127.0.0.1:PORT"` exactly as it reaches a USB-CAN adapter), a
clock that the bench advances with SIM_Tick frames (lock-step) or the wall clock (real time),
contactor, balancing and thermal outputs (reported on CAN by the firmware), a watchdog on the board
clock and file-backed persistent storage. The TCP server is a small virtual bus: every frame a
client sends is seen by the firmware and by every other open client, and every frame the firmware
sends reaches every open client.

Run: micropython -X heapsize=168K firmware/main.py sim --port PORT [--realtime] [--config F]
     [--storage DIR] [--wdt-ms N] [--preload MOD,MOD]

Fault injection (this board only, never a hardware one): a SIM_Stall frame makes the board
busy-wait StallDuration ms inside each of the next StallCycles control cycles (in `measure`, which
the cycle calls first), so the bench can make the loop overrun its period.

`--preload` imports modules before the BMS starts (e.g. a hardware board module and its drivers)
so their code occupies the heap as on that board: CI runs a board's bundle under its heap budget.
"""

import select
import socket
import sys
import time

from firmware.compat import const, ticks_add, ticks_diff, ticks_ms, ticks_us

_MAX_CLIENTS = const(4)
_RX_BUF = const(1024)  # per client; frames wait in the kernel's socket buffer beyond this
_TX_BUF = const(1024)
_CR = const(13)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)
_WDT_EXIT = const(75)  # process exit code for "reset by watchdog": the host restarts us
# SIM_Stall (dbc/cellguard.dbc), decoded here: importing the codec would count it in the sim
# board's I/O cost, which the bench adds on top of a hardware board's heap budget.
_SIM_STALL_ID = const(0x20E)

_HEX = bytearray(256)
for _i in range(10):
    _HEX[48 + _i] = _i
for _i in range(6):
    _HEX[65 + _i] = 10 + _i
    _HEX[97 + _i] = 10 + _i


class Restart(BaseException):
    """A requested reset (Board.reset); main.py catches it and starts the firmware again."""


class _Client:
    def __init__(self, sock):
        self.sock = sock
        self.open = False
        self.buf = bytearray(_RX_BUF)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.pos = 0


class Board:
    """Unix-port board. `port` is the TCP port of the SLCAN server on 127.0.0.1."""

    name = "sim"

    def __init__(self, port, realtime=False, config_path=None, storage_dir=None, wdt_ms=2000):
        self.realtime = realtime
        self._config_path = config_path
        self._storage = storage_dir
        self._wdt_ms = wdt_ms
        self._clock = 0
        self._wall0 = ticks_ms()
        self._last_feed = 0
        self.contactors = bytearray(3)
        self.thermal = bytearray(2)  # cooling, heating
        self.balancing = None
        self.rx_dlc = 0
        self._stall = [0, 0]  # SIM_Stall: cycles left, ms per cycle
        self._tx = bytearray(_TX_BUF)
        self._txview = memoryview(self._tx)
        self._tx_fill = 0
        self._clients = []
        self._poll = select.poll()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        srv.listen(_MAX_CLIENTS)
        srv.setblocking(False)
        self._srv = srv
        self._poll.register(srv, select.POLLIN)
        self._cause = self._read_reset_cause()
        mode = "real time" if realtime else "lock-step"
        print("cellguard sim board: SLCAN over TCP at socket://127.0.0.1:" + str(port), mode)

    # ---- clock -------------------------------------------------------------------------------
    def ticks_ms(self):
        if self.realtime:
            return ticks_diff(ticks_ms(), self._wall0) & 0x3FFFFFFF
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
        self._last_feed = self.ticks_ms()

    def _check_wdt(self):
        if ticks_diff(self.ticks_ms(), self._last_feed) > self._wdt_ms:
            self.set_contactors(0, 0, 0)
            self.storage_write("reset_cause", b"1")
            print("cellguard sim board: watchdog expired, resetting")
            sys.exit(_WDT_EXIT)

    def reset_cause(self):
        return self._cause

    def _read_reset_cause(self):
        data = self.storage_read("reset_cause")
        if data:
            self.storage_write("reset_cause", b"0")
            return int(data)
        return 0

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
                pass

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
        print("cellguard sim board: reset (" + ("hard" if hard else "soft") + ")")
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
        sys.exit(2)

    # ---- CAN ---------------------------------------------------------------------------------
    def can_send(self, can_id, buf, dlc):
        # Frames are queued and written in one go when the firmware idles: one TCP segment per
        # cycle instead of one per frame.
        if self._tx_fill > _TX_BUF - 22:
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
        """Write the queued frames to every open client."""
        if self._tx_fill:
            self._broadcast(self._txview[: self._tx_fill], None)
            self._tx_fill = 0

    def can_recv(self, buf):
        """Take the next received frame into `buf`; return its id, or -1 when none is waiting.

        SIM_Stall frames are taken on the way (`_next_frame`) and never reach the firmware."""
        for c in self._clients:
            cid = self._next_frame(c, buf)
            if cid >= 0:
                return cid
        self._pump(0)
        for c in self._clients:
            cid = self._next_frame(c, buf)
            if cid >= 0:
                return cid
        return -1

    def wait(self, timeout_ms):
        """Idle until a frame arrives or `timeout_ms` passes."""
        self.flush()
        for c in self._clients:
            if c.buf.find(b"\r", c.pos, c.fill) >= 0:
                return
        self._pump(timeout_ms)
        if self.realtime:
            self._check_wdt()

    def _broadcast(self, data, origin):
        for c in self._clients:
            if c is not origin and c.open:
                self._write_all(c, data)

    def _write_all(self, c, data):
        # Non-blocking sockets may take part of a write; a client that takes nothing for a
        # second is dropped rather than stalling the control loop.
        sent = 0
        stalled = 0
        while sent < len(data):
            try:
                n = c.sock.write(data[sent:] if sent else data)
            except OSError:
                n = -1
            if n is None or n == 0:
                stalled += 1
                if stalled > 1000:
                    n = -1
                else:
                    time.sleep_ms(1)
                    continue
            if n < 0:
                self._drop(c)
                return
            sent += n

    def _pump(self, timeout_ms):
        for obj, ev in self._poll.ipoll(timeout_ms):
            if obj is self._srv:
                self._accept()
                continue
            client = self._client_for(obj)
            if client is None:
                continue
            if ev & (select.POLLHUP | select.POLLERR):
                self._drop(client)
                continue
            self._read(client)

    def _client_for(self, sock):
        for c in self._clients:
            if c.sock is sock:
                return c
        return None

    def _accept(self):
        try:
            sock, _ = self._srv.accept()
        except OSError:
            return
        if len(self._clients) >= _MAX_CLIENTS:
            sock.close()
            return
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        sock.setblocking(False)
        self._clients.append(_Client(sock))
        self._poll.register(sock, select.POLLIN)

    def _drop(self, client):
        try:
            self._poll.unregister(client.sock)
        except (OSError, ValueError):
            pass
        client.sock.close()
        if client in self._clients:
            self._clients.remove(client)

    def _read(self, c):
        if c.pos:
            rest = c.fill - c.pos
            c.buf[:rest] = c.buf[c.pos : c.fill]
            c.fill = rest
            c.pos = 0
        if c.fill == _RX_BUF:
            c.fill = 0  # a full buffer without a line end is garbage: drop it
        try:
            n = c.sock.readinto(c.view[c.fill :])
        except OSError:
            n = None
        if n is None:
            return
        if n == 0:
            self._drop(c)
            return
        c.fill += n

    def _next_frame(self, c, out):
        """Handle lines of client `c` until a data frame lands in `out`; its id, or -1."""
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
            # Other clients see the frame too: the server is a bus, not a point-to-point link.
            if len(self._clients) > 1:
                self._broadcast(c.view[start : end + 1], c)
            cid = (h[buf[start + 1]] << 8) | (h[buf[start + 2]] << 4) | h[buf[start + 3]]
            if cid != _SIM_STALL_ID:
                return cid
            self._stall[0] = out[0] | out[1] << 8  # StallCycles
            self._stall[1] = out[2] | out[3] << 8  # StallDuration, ms

    def _command(self, c, cmd):
        if cmd == 79 or cmd == 76:  # 'O' open, 'L' listen-only
            c.open = True
        elif cmd == 67:  # 'C' close
            c.open = False
        elif cmd == 86:  # 'V' version
            self._reply(c, b"V1013\r")
            return
        elif cmd == 78:  # 'N' serial number
            self._reply(c, b"NCGSM\r")
            return
        elif cmd == 70:  # 'F' status flags
            self._reply(c, b"F00\r")
            return
        elif cmd not in b"SsZMmX":  # bit rate, timestamps, filters: accepted, meaningless here
            self._reply(c, b"\x07")
            return
        self._reply(c, b"\r")

    def _reply(self, c, data):
        self._write_all(c, data)


def _hexdigit(v):
    v &= 15
    return 48 + v if v < 10 else 55 + v


def from_args(args):
    """Build the board from command-line arguments (see the module docstring)."""
    port = 0
    realtime = False
    config_path = None
    storage = None
    wdt_ms = 2000
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--realtime":
            realtime = True
        elif a in ("--port", "--config", "--storage", "--wdt-ms", "--preload") and i + 1 < len(
            args
        ):
            v = args[i + 1]
            i += 1
            if a == "--preload":
                for name in v.split(","):
                    __import__(name)
            elif a == "--port":
                port = int(v)
            elif a == "--config":
                config_path = v
            elif a == "--storage":
                storage = v
            else:
                wdt_ms = int(v)
        else:
            raise ValueError("sim board: unknown argument " + a)
        i += 1
    if not 0 < port < 65536:
        raise ValueError("sim board: --port 1..65535 is required")
    return Board(port, realtime, config_path, storage, wdt_ms)
