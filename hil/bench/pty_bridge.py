"""Pseudo-terminals that make the unix-port firmware look like a board on USB serial ports.

The MicroPython unix port cannot open a pty itself, so this host-side bridge does: `PtyBridge`
opens a pty (raw mode) and forwards bytes both ways between its master side and the sim board's
SLCAN-over-TCP server. The bench then opens the pty's slave path with python-can's `slcan`
interface and pyserial, exactly as it opens a USB-CAN adapter (`slcan:/dev/pts/N@500000`).
With `console_log`, a second pty carries the firmware's console (the log file's new bytes), as a
board's USB serial REPL port would (`--dut board:NAME@/dev/pts/M`).

Usage:
    with UnixPortDut(config, realtime=True) as dut, PtyBridge(dut.port, dut.log_path) as bridge:
        bus = can.Bus(interface="slcan", channel=bridge.can_path, sleep_after_open=0)
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from pathlib import Path
from types import TracebackType


def open_raw_pty() -> tuple[int, int, str]:
    """A new pty in raw mode: (master fd, slave fd, slave path)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyBridge:
    """Forward a pty to the SLCAN TCP server on 127.0.0.1:`tcp_port` (and a console log to a
    second pty) from a background thread until `close()`."""

    def __init__(self, tcp_port: int, console_log: Path | None = None) -> None:
        self.tcp_port = tcp_port
        self.console_log = console_log
        self._stop = threading.Event()
        self._fds: list[int] = []
        self.can_path = ""
        self.console_path = ""
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """Open the ptys, connect to the firmware and start forwarding."""
        self._can_master, can_slave, self.can_path = open_raw_pty()
        # The bridge keeps its own slave fd open, so the master never reads EIO while no client
        # has the port open (a serial adapter that is plugged in but not opened).
        self._fds += [self._can_master, can_slave]
        self._console_master = -1
        if self.console_log is not None:
            self._console_master, console_slave, self.console_path = open_raw_pty()
            self._fds += [self._console_master, console_slave]
        self._sock = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="pty-bridge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        master = self._can_master
        console_pos = 0
        while not self._stop.is_set():
            ready, _, _ = select.select([master, sock], [], [], 0.02)
            try:
                if master in ready:
                    _send_all(sock, os.read(master, 4096))
                if sock in ready:
                    data = sock.recv(4096)
                    if not data:
                        return  # the firmware closed the connection (it stopped)
                    _write_dropping(master, data)
            except OSError:
                return
            if self._console_master >= 0 and self.console_log is not None:
                console_pos = self._forward_console(console_pos)

    def _forward_console(self, pos: int) -> int:
        assert self.console_log is not None
        try:
            with self.console_log.open("rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            return pos
        if data:
            _write_dropping(self._console_master, data.replace(b"\n", b"\r\n"))
        return pos + len(data)

    def close(self) -> None:
        """Stop forwarding and close the ptys and the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> PtyBridge:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            select.select([], [sock], [], 1.0)
            continue
        view = view[n:]


def _write_dropping(fd: int, data: bytes) -> None:
    """Write what the pty takes; with nobody reading its slave side the rest is dropped, as a USB
    serial device drops output that no host reads."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            if not select.select([], [fd], [], 0.05)[1]:
                return
            continue
        view = view[n:]
