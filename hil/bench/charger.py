"""The bench's DC charger: sim/charger.py on the firmware's charger CAN channel.

`ChargerLink(port)` connects to the sim board's charger endpoint (SLCAN, 29-bit frames,
boards/charger_slcan.py) and, once per bench step, `exchange(now_ms, inlet_v)` takes the frames
the firmware sent since the last step, steps the simulated charger and sends its frames, which
the firmware handles in the tick that follows. `current_a` is what the charger then delivers
into the pack (the scenario's load, negative = charging). Every frame goes into `frames` (and the
CAN log `log_path`, .blf or .asc, if given); `history` holds one row per step for the report
(`hil.bench.charging_report`).

Usage: ``link = ChargerLink(dut.charger_port, DcCharger()); load = link.exchange(t, v)``.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass
from pathlib import Path

import can

from sim.charger import STAGES, DcCharger
from sim.j1939tp import Frame


@dataclass(frozen=True)
class ChargerRow:
    """One bench step of the charging session."""

    t_s: float
    stage: str
    demand_v: float
    demand_a: float
    output_v: float
    output_a: float
    relay: bool
    cell_max_v: float
    temp_max_c: float


class ChargerLink:
    """The simulated charger on the firmware's charger channel; see the module docstring."""

    def __init__(self, port: int, charger: DcCharger, log_path: Path | None = None) -> None:
        self.charger = charger
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self._buf = bytearray()
        self._send(b"C\rS5\rO\r")  # close, 250 kbit/s, open
        self.frames: list[tuple[float, Frame]] = []
        self.history: list[ChargerRow] = []
        self._log = can.Logger(str(log_path)) if log_path is not None else None
        self.log_path = log_path

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                continue
            view = view[n:]

    def _receive(self) -> list[Frame]:
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the charger endpoint closed the connection")
            self._buf += chunk
        *lines, rest = self._buf.split(b"\r")
        self._buf = bytearray(rest)
        frames = []
        for line in lines:
            if line[:1] == b"T" and len(line) >= 10:
                dlc = line[9] - 48
                frames.append(
                    Frame(int(line[1:9], 16), bytes.fromhex(line[10 : 10 + 2 * dlc].decode()))
                )
        return frames

    def _record(self, t_s: float, frames: list[Frame]) -> None:
        for f in frames:
            self.frames.append((t_s, f))
            if self._log is not None:
                self._log.on_message_received(
                    can.Message(
                        timestamp=t_s, arbitration_id=f.can_id, data=f.data, is_extended_id=True
                    )
                )

    def exchange(
        self, now_ms: int, inlet_v: float, cell_max_v: float = 0.0, temp_max_c: float = 0.0
    ) -> float:
        """One bench step; returns the load current (A, + = discharge) the charger causes.
        `cell_max_v` and `temp_max_c` (the plant's) go into `history` for the report."""
        t_s = now_ms / 1000
        received = self._receive()
        self._record(t_s, received)
        out = self.charger.step(now_ms, received, inlet_v)
        if out:
            self._send(
                b"".join(
                    b"T%08X%d%s\r" % (f.can_id, len(f.data), f.data.hex().upper().encode())
                    for f in out
                )
            )
            self._record(t_s, out)
        ch = self.charger
        self.history.append(
            ChargerRow(
                t_s,
                STAGES[ch.stage],
                ch.demand_v,
                ch.demand_a,
                ch.output_v,
                ch.output_a,
                ch.relay_closed,
                cell_max_v,
                temp_max_c,
            )
        )
        return -ch.output_a if ch.relay_closed else 0.0

    def close(self) -> None:
        """Close the log and the connection."""
        if self._log is not None:
            self._log.stop()
            self._log = None
        try:
            self.sock.close()
        except OSError:
            pass
