"""The `qemu` board: cellguard frozen into MicroPython's qemu port on an emulated Cortex-M (MPS2).

The machine is QEMU's `mps2-an385` (Cortex-M3) or `mps2-an500` (Cortex-M7); both put the CMSDK
UARTs at the same addresses. UART0 is MicroPython's console (the REPL the host starts the
firmware through, and everything the firmware prints); UART1 carries CAN as SLCAN, the sim board's
protocol (`boards/lockstep.py`), in lock-step with the bench: the host connects QEMU's second
serial port to a TCP socket, so the bench reaches it as it reaches the sim board. Storage and the
configuration are host files through semihosting (`boards/semihost.py`, mounted at "/"):
`--storage DIR` and `--config F` name them relative to the folder QEMU runs in, so the records
survive a restart of the emulator as the sim board's files do. The watchdog counts board time
(lock-step) as on the sim board; on expiry the board stores the reset cause and ends the emulator
with exit status 75.

The UART holds one received byte; the emulator hands over the next one only after it was read,
so `wait` polls the status register until whole lines are in and the sender pauses (the bench
sends a tick's frames in one burst, so `Comm.poll` takes many at once, as a board takes them from
its controller's queue), and `can_recv` takes what is there without waiting. The byte moves are
viper code; the SLCAN text parsing that only this emulated link needs is the sim board's Python
(`boards/lockstep.py`), and `io_us` counts the microseconds spent in it (`can_recv` and
`can_send`; wrapping at 2**30 like the tick counters, so read it with ticks_diff), so a benchmark
can report it beside the control cycle.

Run (the host's `hil.bench.qemu.QemuDut` does this through the raw REPL):
    import sys; sys.argv[:] = ["main.py", "qemu", "--config", "/config.json", "--storage",
                                "/storage", "--wdt-ms", "2000"]; import main
"""

import micropython

import boards.semihost as semihost
from boards.lockstep import LockstepBoard, Restart, SlcanPort, parse_options  # noqa: F401
from firmware.compat import const, ticks_diff, ticks_ms, ticks_us

_UART1_DATA = const(0x40005000)
_UART1_STATE = const(0x40005004)
_UART1_CTRL = const(0x40005008)
_UART1_BAUDDIV = const(0x40005010)
_RX_BUF = const(1024)
_TX_BUF = const(1024)
_TICKS_MASK = const(0x3FFFFFFF)
# Empty status polls that end a burst (about 60 k instructions; the emulator hands over a byte
# every 100-200 polls while the host sends).
_IDLE_POLLS = const(2000)


@micropython.viper
def _uart_read(buf, fill: int, size: int, polls: int) -> int:
    """Move received UART1 bytes into buf[fill:size]; returns the new fill. Stops at a full
    buffer or once `polls` polls in a row found nothing (the sender paused)."""
    state = ptr32(_UART1_STATE)  # noqa: F821 - viper built-in
    data = ptr32(_UART1_DATA)  # noqa: F821
    b = ptr8(buf)  # noqa: F821
    idle = 0
    while fill < size:
        if state[0] & 2:  # RXFULL
            b[fill] = data[0]
            fill += 1
            idle = 0
        else:
            idle += 1
            if idle >= polls:
                break
    return fill


@micropython.viper
def _uart_write(buf, n: int):
    state = ptr32(_UART1_STATE)  # noqa: F821
    data = ptr32(_UART1_DATA)  # noqa: F821
    b = ptr8(buf)  # noqa: F821
    i = 0
    while i < n:
        if not (state[0] & 1):  # TXFULL clear
            data[0] = b[i]
            i += 1


class Board(LockstepBoard):
    """Emulated MPS2 board, lock-step only (see the module docstring)."""

    name = "qemu"

    def __init__(self, config_path=None, storage_dir=None, wdt_ms=2000):
        semihost.mount()
        super().__init__(False, config_path, storage_dir, wdt_ms, _TX_BUF)
        import machine

        machine.mem32[_UART1_BAUDDIV] = 16
        machine.mem32[_UART1_CTRL] = 3  # TX and RX enabled
        self._port = SlcanPort(_RX_BUF)
        self.io_us = 0
        print("cellguard qemu board: SLCAN on UART1, lock-step")

    def exit(self, code):
        semihost.exit(code)

    def _pump(self, polls):
        p = self._port
        if p.pos == p.fill or p.fill > _RX_BUF - 64:  # moving a partial line copies it
            p.compact()
        p.fill = _uart_read(p.buf, p.fill, len(p.buf), polls)

    def can_recv(self, buf):
        t0 = ticks_us()
        p = self._port
        cid = self._next_frame(p, buf)
        if cid < 0:
            self._pump(1)
            cid = self._next_frame(p, buf)
        self.io_us = (self.io_us + ticks_diff(ticks_us(), t0)) & _TICKS_MASK
        return cid

    def can_send(self, can_id, buf, dlc):
        t0 = ticks_us()
        super().can_send(can_id, buf, dlc)
        self.io_us = (self.io_us + ticks_diff(ticks_us(), t0)) & _TICKS_MASK

    def wait(self, timeout_ms):
        """Idle until whole lines are in or `timeout_ms` (emulated time) passes."""
        self.flush()
        p = self._port
        t0 = ticks_ms()
        while not p.has_line():
            self._pump(_IDLE_POLLS)
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return

    def urandom(self, n):
        """The seeds of security access (firmware/security.py): the MPS2 has no random number
        generator and the port no os.urandom, so the bytes come from the host."""
        return semihost.host_random(n)

    def _send(self, data):
        _uart_write(data, len(data))

    def _reply(self, c, data):
        _uart_write(data, len(data))


def from_args(args):
    """Build the board from command-line arguments (see the module docstring)."""
    o = parse_options(args, ("--config", "--storage", "--wdt-ms"))
    return Board(o["config"], o["storage"], o["wdt_ms"])
