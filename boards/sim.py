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

import sys

from boards.lockstep import LockstepBoard, Restart, SlcanPort, parse_options  # noqa: F401
from boards.slcan_tcp import SlcanServer
from firmware.compat import const

_MAX_CLIENTS = const(4)
_RX_BUF = const(512)  # per client; frames wait in the kernel's socket buffer beyond this
_TX_BUF = const(1024)


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
        self._bus = SlcanServer(port, _MAX_CLIENTS, _RX_BUF)
        mode = "real time" if realtime else "lock-step"
        print("cellguard sim board: SLCAN over TCP at socket://127.0.0.1:" + str(port), mode)

    def exit(self, code):
        sys.exit(code)

    # ---- CAN ---------------------------------------------------------------------------------
    def _send(self, data):
        self._bus.broadcast(data, None)

    def can_recv(self, buf):
        """Take the next received frame into `buf`; return its id, or -1 when none is waiting.

        SIM_Stall frames are taken on the way (`_next_frame`) and never reach the firmware."""
        clients = self._bus.clients
        for c in clients:
            cid = self._next_frame(c, buf)
            if cid >= 0:
                return cid
        self._bus.pump(0)
        for c in clients:
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
        if self._bus.has_line():
            return
        self._bus.pump(timeout_ms)
        if self.realtime:
            self._check_wdt()

    def _on_frame(self, c, start, end):
        # Other clients see the frame too: the server is a bus, not a point-to-point link.
        if len(self._bus.clients) > 1:
            self._bus.broadcast(c.view[start : end + 1], c)

    def _reply(self, c, data):
        self._bus.write(c, data)


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
