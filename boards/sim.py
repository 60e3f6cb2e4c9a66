"""The `sim` board: cellguard on the MicroPython unix port, wired to the HIL bench.

Owns the simulated hardware: a CAN controller served as SLCAN over TCP (python-can reaches it with
`interface="slcan", channel="socket://127.0.0.1:PORT"` exactly as it reaches a USB-CAN adapter), a
clock that the bench advances with SIM_Tick frames (lock-step) or the wall clock (real time),
contactor, balancing and thermal outputs (reported on CAN by the firmware), a watchdog on the board
clock and file-backed persistent storage. The TCP server is a small virtual bus: every frame a
client sends is seen by the firmware and by every other open client, and every frame the firmware
sends reaches every open client.

Run: micropython -X heapsize=168K firmware/main.py sim --port PORT [--realtime] [--config F]
     [--storage DIR] [--wdt-ms N] [--preload MOD,MOD] [--charger-port PORT2]

`--charger-port` adds the second CAN channel, the DC charger's (boards/charger_slcan.py): its
own SLCAN endpoint with 29-bit frames, where the charging service (firmware/charging.py) runs.

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

from boards.lockstep import LockstepBoard, Restart, SlcanPort, parse_options  # noqa: F401
from firmware.compat import const

_MAX_CLIENTS = const(4)
_RX_BUF = const(512)  # per client; frames wait in the kernel's socket buffer beyond this
_TX_BUF = const(1024)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)


class _Client(SlcanPort):
    def __init__(self, sock):
        super().__init__(_RX_BUF)
        self.sock = sock


class Board(LockstepBoard):
    """Unix-port board. `port` is the TCP port of the SLCAN server on 127.0.0.1."""

    name = "sim"

    def __init__(
        self, port, realtime=False, config_path=None, storage_dir=None, wdt_ms=2000, charger=0
    ):
        super().__init__(realtime, config_path, storage_dir, wdt_ms, _TX_BUF)
        self._charger = None
        if charger:
            from boards.charger_slcan import ChargerBus

            self._charger = bus = ChargerBus(charger)
            self.charger_send = bus.send
            self.charger_recv = bus.recv
        self._clients = []
        self._poll = select.poll()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        srv.listen(_MAX_CLIENTS)
        srv.setblocking(False)
        self._srv = srv
        self._poll.register(srv, select.POLLIN)
        mode = "real time" if realtime else "lock-step"
        print("cellguard sim board: SLCAN over TCP at socket://127.0.0.1:" + str(port), mode)

    def exit(self, code):
        sys.exit(code)

    # ---- CAN ---------------------------------------------------------------------------------
    def _send(self, data):
        self._broadcast(data, None)

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

    @property
    def charger_dlc(self):
        return self._charger.dlc

    def wait(self, timeout_ms):
        """Idle until a frame arrives or `timeout_ms` passes."""
        ch = self._charger
        if ch is not None:
            ch.flush()  # before the vehicle bus: the bench finds them once the tick is answered
        self.flush()
        if ch is not None:
            ch.pump(0)
            if ch.has_line():
                return
        for c in self._clients:
            if c.has_line():
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
        c.compact()
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

    def _on_frame(self, c, start, end):
        # Other clients see the frame too: the server is a bus, not a point-to-point link.
        if len(self._clients) > 1:
            self._broadcast(c.view[start : end + 1], c)

    def _reply(self, c, data):
        self._write_all(c, data)


def from_args(args):
    """Build the board from command-line arguments (see the module docstring)."""
    o = parse_options(
        args,
        ("--realtime", "--port", "--config", "--storage", "--wdt-ms", "--preload")
        + ("--charger-port",),
    )
    if not 0 < o["port"] < 65536:
        raise ValueError("sim board: --port 1..65535 is required")
    return Board(
        o["port"], o["realtime"], o["config"], o["storage"], o["wdt_ms"], o["charger_port"]
    )
