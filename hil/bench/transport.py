"""CAN links between the bench and a device under test.

Two implementations of one small interface (`send_many`, `recv`, `close`):
- `PythonCanTransport` wraps any python-can bus (a USB adapter, socketcan, or `slcan` over TCP to
  the sim board): the path for real hardware and the compatibility proof for the virtual one.
- `SlcanSocketTransport` speaks SLCAN directly over one TCP socket and batches a whole control
  cycle of frames into one write. python-can's slcan backend reads one byte per call through
  pyserial's socket:// handler, which caps lock-step runs at a few hundred cycles per second;
  benchmarks/closed_loop_speed.py measures both side by side.

`open_transport(description)` builds one from a bench `--can` description such as
`slcan:socket://127.0.0.1:29536`, `socketcan:can0@500000` or `raw-slcan:127.0.0.1:29536`.
"""

from __future__ import annotations

import select
import socket
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import can

Frame = tuple[int, bytes]


class Transport(Protocol):
    """What the bench needs from a CAN link."""

    def send_many(self, frames: Sequence[Frame]) -> None:
        """Send frames in order."""

    def recv(self, timeout: float) -> Frame | None:
        """Return the next received frame, or None after `timeout` seconds."""

    def close(self) -> None:
        """Release the link."""


class PythonCanTransport:
    """A python-can bus as a bench transport."""

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        _disable_nagle(bus)

    def send_many(self, frames: Sequence[Frame]) -> None:
        """Send frames one by one through python-can."""
        for can_id, data in frames:
            self.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))

    def recv(self, timeout: float) -> Frame | None:
        """Next data frame from the bus (error and remote frames are skipped)."""
        msg = self.bus.recv(timeout)
        while msg is not None and (msg.is_error_frame or msg.is_remote_frame):
            msg = self.bus.recv(0)
        if msg is None:
            return None
        return msg.arbitration_id, bytes(msg.data)

    def close(self) -> None:
        """Shut the bus down."""
        self.bus.shutdown()


class SlcanSocketTransport:
    """SLCAN (Lawicel ASCII) over a TCP socket, batched."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self._buf = bytearray()
        self._pending: deque[Frame] = deque()
        self._sendall(b"C\rS6\rO\r")  # close, 500 kbit/s, open: what python-can sends too

    def _sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                continue
            view = view[n:]

    def send_many(self, frames: Sequence[Frame]) -> None:
        """Send all frames in one write."""
        self._sendall(
            b"".join(
                b"t%03X%d%s\r" % (can_id, len(data), data.hex().upper().encode())
                for can_id, data in frames
            )
        )

    def recv(self, timeout: float) -> Frame | None:
        """Next received data frame, or None after `timeout` seconds."""
        while not self._pending:
            if not self._fill(timeout):
                return None
        return self._pending.popleft()

    def _fill(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the CAN server closed the connection")
        self._buf += chunk
        *lines, rest = self._buf.split(b"\r")
        self._buf = bytearray(rest)
        for line in lines:
            if line[:1] == b"t" and len(line) >= 5:
                dlc = line[4] - 48
                data = bytes.fromhex(line[5 : 5 + 2 * dlc].decode())
                self._pending.append((int(line[1:4], 16), data))
        return True

    def close(self) -> None:
        """Close the socket."""
        try:
            self._sendall(b"C\r")
        except OSError:
            pass
        self.sock.close()


def _disable_nagle(bus: can.BusABC) -> None:
    """Send each frame at once on slcan-over-TCP buses.

    pyserial's socket:// handler leaves Nagle's algorithm on, so one-frame writes wait for the
    peer's delayed ACK (40 ms on Linux) and a lock-step bench crawls at a few cycles per second.
    """
    port = getattr(bus, "serialPortOrig", None)
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_transport(description: str) -> Transport:
    """Build a transport from `INTERFACE:CHANNEL[@BITRATE]` (python-can) or raw-slcan:HOST:PORT."""
    interface, _, channel = description.partition(":")
    if not channel:
        raise ValueError(f"CAN description {description!r} is not INTERFACE:CHANNEL[@BITRATE]")
    if interface == "raw-slcan":
        host, _, port = channel.rpartition(":")
        return SlcanSocketTransport(host or "127.0.0.1", int(port))
    bitrate = 500_000
    if "@" in channel and not channel.startswith("socket://"):
        channel, _, rate = channel.rpartition("@")
        bitrate = int(rate)
    kwargs: dict[str, object] = {"interface": interface, "channel": channel, "bitrate": bitrate}
    if interface == "slcan":
        kwargs["sleep_after_open"] = 0
    return PythonCanTransport(can.Bus(**kwargs))
