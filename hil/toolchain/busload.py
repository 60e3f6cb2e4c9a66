"""CAN bus load of the DBC's messages for a pack size, at the schedule the DBC states.

Frame length: every frame is counted at its worst-case length, an 11-bit data frame of n data
bytes taking 47 + 8n + floor((34 + 8n - 1) / 4) bits with the maximum number of stuff bits (a
29-bit frame 67 + 8n + floor((54 + 8n - 1) / 4)).

Schedule, read from the DBC (`GenMsgSendType`, `GenMsgCycleTime`), which states what the firmware
and the bench do (`tests/hil/toolchain/test_busload.py` compares it with a run's CAN log):
- `cyclic`: once per GenMsgCycleTime. A multiplexed message sends, within its cycle time (the
  period of the full set), the groups the pack needs: ceil(cells / cells per group) for one that
  carries per-cell values, every group otherwise (`pack_groups`).
- `cyclicAndSpontaneous` (BMS_Balancing): the cyclic part as above, plus the full set whenever its
  content changes (a few times a minute while balancing). Only the cyclic part is in the totals.
- `spontaneous` (a diagnostic read-out, a fault injection): only on an event. Listed apart, at its
  worst-case burst of every group once per control period, and left out of the totals.
A message without a cycle time counts once per control period.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import can
from cantools.database.can import Database, Message

from hil.toolchain.codegen import layout

SENDER_LABELS = {
    "BMS": "BMS traffic",
    "BENCH": "bench injection",
    "VCU": "vehicle",
    "SENSOR": "current sensor",
}
"""How the report names each sending node's share."""

SPONTANEOUS = "spontaneous"


@dataclass(frozen=True)
class Row:
    """Bus load of one message."""

    name: str
    frame_id: int
    sender: str
    """Sending node (first sender in the DBC)."""
    send_type: str
    """GenMsgSendType: cyclic, cyclicAndSpontaneous or spontaneous."""
    dlc: int
    frame_bits: int
    """Worst-case bits per frame, stuff bits included."""
    frames_per_s: float
    bits_per_s: float
    load: float
    """Share of the bitrate, 0..1."""

    @property
    def steady(self) -> bool:
        """True if the message is part of the steady (cyclic) load."""
        return self.send_type != SPONTANEOUS


def frame_bits(dlc: int, extended: bool = False) -> int:
    """Return the worst-case length in bits of a classic CAN data frame with `dlc` data bytes."""
    if extended:
        return 67 + 8 * dlc + (54 + 8 * dlc - 1) // 4
    return 47 + 8 * dlc + (34 + 8 * dlc - 1) // 4


def pack_groups(message: Message) -> tuple[str, int] | None:
    """What the groups of a multiplexed message count, from its signals: ("cells", n) or
    ("temps", n) with n items per group, or None when every group goes out whatever the pack.

    Numbered signals (`Cell001_Voltage`, `Cell001_Soc`, `Temp001`: the codegen's name pattern)
    carry one cell or sensor each; a group of one mask signal (`BalancingMask_G0`) one cell per
    bit."""
    lay = layout(message)
    muxed = lay.fields[1 : 1 + lay.group_size]
    patterns = [f.name for f in muxed]
    if patterns and all("{" in p and p.startswith("Cell") for p in patterns):
        return "cells", len(patterns)
    if patterns and all("{" in p and p.startswith("Temp") for p in patterns):
        return "temps", len(patterns)
    if len(muxed) == 1 and "Mask" in muxed[0].name:
        return "cells", muxed[0].signal.length
    return None


def frames_per_period(message: Message, cells: int, temps: int) -> int:
    """Return how many frames of `message` one period carries for `cells` and `temps`."""
    if not message.is_multiplexed():
        return 1
    groups = layout(message).mux_count or 1
    counted = pack_groups(message)
    if counted is None:
        return groups
    quantity, per_group = counted
    count = cells if quantity == "cells" else temps
    needed = math.ceil(count / per_group)
    if needed > groups:
        raise ValueError(
            f"{message.name} carries at most {groups * per_group} {quantity}, not {count}"
        )
    return needed


def bus_load(
    db: Database, cells: int, temps: int, bitrate: int, control_period_ms: int = 100
) -> list[Row]:
    """Return the bus load of every message of `db`, ordered by frame id (see the module
    docstring for what each send type contributes)."""
    rows = []
    for message in sorted(db.messages, key=lambda m: m.frame_id):
        period_ms = message.cycle_time or control_period_ms
        bits = frame_bits(message.length, message.is_extended_frame)
        frames_per_s = frames_per_period(message, cells, temps) * 1000 / period_ms
        rows.append(
            Row(
                name=message.name,
                frame_id=message.frame_id,
                sender=message.senders[0] if message.senders else "?",
                send_type=message.send_type or "cyclic",
                dlc=message.length,
                frame_bits=bits,
                frames_per_s=frames_per_s,
                bits_per_s=frames_per_s * bits,
                load=frames_per_s * bits / bitrate,
            )
        )
    return rows


GAP_S = 2.0
"""A log with no frame for longer than this was not recording (the windows of a triggered log,
`hil.bench.canlog`): every cyclic message of the DBC goes at least once a second, so a live bus
never pauses that long. Rates are measured over the stretches in between."""


@dataclass(frozen=True)
class LogRates:
    """Frames per second of each identifier in a CAN log (data frames only)."""

    frames_per_s: dict[int, float]
    span_s: float
    """The time the log covers: its stretches of frames (split at pauses over GAP_S), each
    counted as n / (n - 1) times its first-to-last time, n its distinct time stamps: n steady
    instants (frames, or the bursts of a lock-step bench's control periods) stand for n
    intervals, not n - 1."""
    frames: int
    stretches: int = 1


def log_rates(path: Path) -> LogRates:
    """Measure every identifier's frame rate in a CAN log (.blf, .asc, ... as python-can reads
    them) over the time it covers (`LogRates.span_s`)."""
    counts: Counter[int] = Counter()
    stretches: list[list[float]] = []  # [first, last, distinct time stamps] of each stretch
    for msg in can.LogReader(str(path)):
        if msg.is_error_frame or msg.is_remote_frame:
            continue
        counts[msg.arbitration_id] += 1
        t = msg.timestamp
        if not stretches or t - stretches[-1][1] > GAP_S:
            stretches.append([t, t, 1])
        elif t != stretches[-1][1]:
            stretches[-1][1] = t
            stretches[-1][2] += 1
    span = sum((last - first) * n / (n - 1) for first, last, n in stretches if n > 1)
    if span <= 0:
        raise ValueError(f"{path}: fewer than two frames in a row, no rate to measure")
    rates = {frame_id: k / span for frame_id, k in counts.items()}
    return LogRates(rates, span, sum(counts.values()), len(stretches))


def format_table(rows: list[Row], measured: LogRates | None = None) -> str:
    """Return `rows` as a text table: the steady messages with a subtotal per sender and the
    total, then the spontaneous ones at their worst-case burst (not in the totals). With
    `measured`, a column of the frame rates a log shows."""
    head = (
        f"{'message':<22} {'id':>6} {'sender':<7} {'dlc':>3} {'bits':>4} "
        f"{'frames/s':>8} {'bit/s':>8} {'load':>8}"
    )
    if measured is not None:
        head += f" {'log fr/s':>8}"

    def log(frame_ids: list[int]) -> str:
        if measured is None:
            return ""
        return f" {sum(measured.frames_per_s.get(i, 0.0) for i in frame_ids):>8.1f}"

    def line(r: Row) -> str:
        mark = " +on change" if r.send_type == "cyclicAndSpontaneous" else ""
        return (
            f"{r.name:<22} {r.frame_id:>#6x} {r.sender:<7} {r.dlc:>3} {r.frame_bits:>4} "
            f"{r.frames_per_s:>8.1f} {r.bits_per_s:>8.0f} {r.load:>8.2%}{log([r.frame_id])}{mark}"
        )

    steady = [r for r in rows if r.steady]
    lines = [head, *map(line, steady), ""]
    groups = [
        (f"{SENDER_LABELS.get(s, s)} ({s})", [r for r in steady if r.sender == s])
        for s in dict.fromkeys(r.sender for r in steady)
    ]
    for label, members in [*groups, ("total", steady)]:
        frames = sum(r.frames_per_s for r in members)
        bits = sum(r.bits_per_s for r in members)
        load = sum(r.load for r in members)
        ids = [r.frame_id for r in members]
        lines.append(f"{label:<47} {frames:>8.1f} {bits:>8.0f} {load:>8.2%}{log(ids)}")
    events = [r for r in rows if not r.steady]
    if events:
        lines += ["", "spontaneous (only on an event; worst-case burst, not in the totals):"]
        lines += map(line, events)
    if measured is not None:
        known = {r.frame_id for r in rows}
        other = sorted(i for i in measured.frames_per_s if i not in known)
        pauses = (
            f" in {measured.stretches} stretches (pauses over {GAP_S:g} s, when the log was not "
            "recording, left out)"
            if measured.stretches > 1
            else ""
        )
        lines.append(
            f"\nlog: {measured.frames} frames over {measured.span_s:.1f} s{pauses}"
            + (f"; ids not in the DBC: {', '.join(f'{i:#x}' for i in other)}" if other else "")
        )
    return "\n".join(lines)
