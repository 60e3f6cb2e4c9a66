"""CAN logs of a run: every frame, or the windows around events that a vehicle data logger keeps.

A 16-cell run puts about 226 frames/s on the bus: the 9 h default run is 7.4 million frames, 50 MB
of BLF, nearly all of it the same periodic frames again. A vehicle data logger keeps what an
engineer opens a log for instead, every frame inside a few windows (mode "events"):

- the start: the first START_S seconds (start-up, first measurements, the precharge);
- every event, PRE_S before to POST_S after it (windows that overlap merge): a change of a signal
  in EVENT_SIGNALS (the BMS state, a contactor, the fault tier, the reset cause, a fault flag set
  or cleared, a vehicle request), any frame of a message the DBC sends only on an event
  (`GenMsgSendType` spontaneous: UDS, a bench stall), or a `mark()` by the caller (`cellguard sim`
  marks each scenario phase: drive, rest, charge);
- a snapshot every SNAPSHOT_EVERY_S: the SNAPSHOT_S seconds before it, so every part of the run
  can be read from the log at that resolution (the time series has every second);
- the end: the last PRE_S seconds (also after a Ctrl-C, when the run stops early).

Mode "full" writes every frame and notes the same events. Either way `windows` says what the log
holds (seconds from its first frame, the frames and the events of each window); `cellguard sim`
puts `describe()` into summary.json. The file is what python-can writes for its suffix (`.blf`,
`.asc`): it opens in python-can, cantools and Vector tools, and every frame in it decodes.

Usage:
    log = CanLog(Path("reports/latest/can.blf"), "events", db)
    bench = Bench(..., can_log=log)   # the bench gives it every frame (on_message_received)
    log.mark("drive-wltc")
    log.stop()
    log.windows  # [Window(start_s=0.0, end_s=30.0, events=["0.0 s start", ...]), ...]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import can
from cantools.database.can import Database, Message

CanLogMode = Literal["events", "full"]
CAN_LOG_MODES: tuple[CanLogMode, ...] = ("events", "full")

EVENT_SIGNALS: dict[str, tuple[str, ...] | None] = {
    "BMS_State": (
        "BmsState",
        "ContactorNeg",
        "ContactorPre",
        "ContactorPos",
        "FaultTier",
        "ResetCause",
    ),
    "BMS_Faults": None,
    "VCU_Request": ("ContactorRequest", "FaultReset", "ChargeRequest"),
}
"""Signals whose change is an event, per message (None: its one-bit signals, the fault flags)."""

START_S = 30.0
"""The first seconds of a log: the BMS's start-up, its first measurements and the precharge."""
PRE_S = 10.0
"""Seconds kept before an event (a fault's debounce is at most 5 s), and the end window."""
POST_S = 30.0
"""Seconds kept after the latest event: a contactor sequence, a derating settling."""
SNAPSHOT_EVERY_S = 600.0
"""A snapshot ends every this many seconds of the log."""
SNAPSHOT_S = 10.0
"""Length of a snapshot: every multiplexed set of the DBC (1 s periods) ten times over."""
MAX_EVENTS_LISTED = 20
"""Events named per window (all are counted; a text already named there is not repeated)."""


@dataclass
class Window:
    """One stretch of the log in which every frame was written."""

    start_s: float
    """Time of its first frame, in seconds from the log's first frame."""
    end_s: float
    """Time of its last frame."""
    events: list[str] = field(default_factory=list)
    """What opened or extended it, e.g. `"0.7 s BMS_State BmsState PRECHARGE -> CLOSED"`."""
    event_count: int = 0
    frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The window for summary.json."""
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "frames": self.frames,
            "event_count": self.event_count,
            "events": list(self.events),
        }


@dataclass(frozen=True)
class _Watch:
    message: Message
    signals: tuple[str, ...]
    mask: int | None
    """The bits of `signals` in the payload read as a little-endian integer (None: a big-endian
    signal among them, so every frame is decoded)."""
    always: bool
    """Every frame is an event (a spontaneous message)."""


def _watches(db: Database) -> dict[int, _Watch]:
    watches: dict[int, _Watch] = {}
    for message in db.messages:
        if message.send_type == "spontaneous":
            watches[message.frame_id] = _Watch(message, (), None, True)
        elif message.name in EVENT_SIGNALS:
            wanted = EVENT_SIGNALS[message.name]
            chosen = [
                s
                for s in message.signals
                if (s.name in wanted if wanted is not None else s.length == 1)
            ]
            mask: int | None = 0
            for s in chosen:
                if s.byte_order != "little_endian" or mask is None:
                    mask = None
                else:
                    mask |= ((1 << s.length) - 1) << s.start
            names = tuple(s.name for s in chosen)
            watches[message.frame_id] = _Watch(message, names, mask, False)
    return watches


class CanLog(can.Listener):
    """A run's CAN log in `mode` "events" (the windows above) or "full" (every frame)."""

    def __init__(
        self,
        path: Path,
        mode: CanLogMode,
        db: Database,
        *,
        start_s: float = START_S,
        pre_s: float = PRE_S,
        post_s: float = POST_S,
        snapshot_every_s: float = SNAPSHOT_EVERY_S,
        snapshot_s: float = SNAPSHOT_S,
    ) -> None:
        if mode not in CAN_LOG_MODES:
            raise ValueError(f"CAN log mode {mode!r}: one of {', '.join(CAN_LOG_MODES)}")
        self.path = path
        self.mode = mode
        self.start_s = start_s
        self.pre_s = pre_s
        self.post_s = post_s
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_s = snapshot_s
        self.windows: list[Window] = []
        self._writer = can.Logger(str(path))
        self._watches = _watches(db)
        self._last: dict[int, tuple[int, dict[str, Any]]] = {}
        self._ring: deque[can.Message] = deque()
        self._t0: float | None = None
        self._now = 0.0
        self.frames_seen = 0
        """Every frame the log was given, written or not."""
        self._open_until: float | None = None
        self._next_snapshot = math.inf
        self._keep_s = max(pre_s, snapshot_s)
        self._dropped = False
        """Frames were left out since the last window's last frame."""
        self._listed: set[str] = set()

    def on_message_received(self, msg: can.Message) -> None:
        """Take one frame: write it if a window is open (or opens with it), else keep it in the
        ring of the last `pre_s` (or `snapshot_s`) seconds."""
        t = self._now = msg.timestamp
        self.frames_seen += 1
        if self._t0 is None:
            self._start(t)
        event = self._event(msg)
        if event is not None:
            self._on_event(t, event, self.pre_s, self.post_s)
        if t >= self._next_snapshot:
            self._next_snapshot += self.snapshot_every_s
            self._on_event(t, "snapshot", self.snapshot_s, 0.0)
        if self._open_until is not None and t > self._open_until:
            self._open_until = None
        if self._open_until is not None:
            self._write(msg)
            return
        ring = self._ring
        ring.append(msg)
        while ring[0].timestamp < t - self._keep_s:
            ring.popleft()
            self._dropped = True

    def mark(self, event: str) -> None:
        """An event the bus does not show (a scenario phase), at the time of the latest frame."""
        if self._t0 is not None:
            self._on_event(self._now, event, self.pre_s, self.post_s)

    def stop(self) -> None:
        """Write the last `pre_s` seconds as the end window, then close the file."""
        if self._ring:
            self._flush_ring(self._now - self.pre_s, self._now, "end")
        elif self.windows:
            self._note(self._now, "end")
        self._writer.stop()

    def describe(self) -> dict[str, Any]:
        """What the log holds, for summary.json."""
        return {
            "file": self.path.name,
            "mode": self.mode,
            "frames": sum(w.frames for w in self.windows),
            "frames_on_the_bus": self.frames_seen,
            "seconds": round(sum(w.end_s - w.start_s for w in self.windows), 1),
            "windows": [w.as_dict() for w in self.windows],
        }

    # ---- internals ---------------------------------------------------------------------------
    def _start(self, t: float) -> None:
        self._t0 = t
        self._open_until = math.inf if self.mode == "full" else t + self.start_s
        self._next_snapshot = math.inf if self.mode == "full" else t + self.snapshot_every_s
        self._new_window(t, t, "start")

    def _event(self, msg: can.Message) -> str | None:
        """The event `msg` is (a text), or None."""
        watch = self._watches.get(msg.arbitration_id)
        if watch is None or msg.is_error_frame or msg.is_remote_frame:
            return None
        if watch.always:
            return watch.message.name
        raw = int.from_bytes(msg.data, "little")
        key = raw & watch.mask if watch.mask is not None else raw
        previous = self._last.get(msg.arbitration_id)
        if previous is not None and previous[0] == key:
            return None
        try:
            values = watch.message.decode(msg.data, decode_choices=True)
        except Exception:  # noqa: BLE001 - a frame that does not decode is no event; still logged
            return None
        now = {name: values[name] for name in watch.signals if name in values}
        self._last[msg.arbitration_id] = (key, now)
        if previous is None:
            return None  # the first value is the state the log starts in, not a change
        changes = [
            f"{name} {_text(previous[1].get(name))} -> {_text(value)}"
            for name, value in now.items()
            if previous[1].get(name) != value
        ]
        return f"{watch.message.name} {', '.join(changes)}" if changes else None

    def _on_event(self, t: float, event: str, pre_s: float, post_s: float) -> None:
        if self._open_until is None:
            self._flush_ring(t - pre_s, t, event)
        else:
            self._note(t, event)
            self._open_until = max(self._open_until, t + post_s)
            return
        self._open_until = t + post_s

    def _flush_ring(self, since: float, t: float, event: str) -> None:
        """Write the ring's frames from `since` on: a new window for `event` at `t`, or the window
        before continued when no frame was left out between them."""
        ring = self._ring
        while ring and ring[0].timestamp < since:
            ring.popleft()
            self._dropped = True
        if self._dropped or not self.windows:
            self._new_window(ring[0].timestamp if ring else t, t, event)
        else:
            self._note(t, event)
        while ring:
            self._write(ring.popleft())

    def _new_window(self, first: float, t: float, event: str) -> None:
        assert self._t0 is not None
        self.windows.append(Window(first - self._t0, first - self._t0))
        self._dropped = False
        self._listed = set()
        self._note(t, event)

    def _note(self, t: float, event: str) -> None:
        """Count `event` in the current window; name it there the first time."""
        assert self._t0 is not None
        window = self.windows[-1]
        window.event_count += 1
        if event not in self._listed and len(window.events) < MAX_EVENTS_LISTED:
            self._listed.add(event)
            window.events.append(f"{t - self._t0:.1f} s {event}")

    def _write(self, msg: can.Message) -> None:
        assert self._t0 is not None
        window = self.windows[-1]
        window.end_s = msg.timestamp - self._t0
        window.frames += 1
        self._writer.on_message_received(msg)


def _text(value: Any) -> str:
    """A signal value as the DBC names it (a value-table entry) or as its number."""
    if value is None:
        return "?"
    name = getattr(value, "name", None)
    if name is not None:
        return str(name)
    return f"{value:g}" if isinstance(value, float) else str(value)
