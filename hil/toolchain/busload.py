"""Worst-case CAN bus load of the DBC's messages for a given pack size.

Every frame is counted at its worst-case length: an 11-bit data frame of n data bytes takes
47 + 8n + floor((34 + 8n - 1) / 4) bits with the maximum number of stuff bits (a 29-bit frame
67 + 8n + floor((54 + 8n - 1) / 4)). A message is sent once per GenMsgCycleTime; a multiplexed
cell/temperature message sends as many groups as the pack needs within its GenMsgCycleTime (the
period of the full set). A message without a cycle time (SIM_Tick) is counted once per control
period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cantools.database.can import Database, Message

from hil.toolchain.codegen import mux_groups

SENDER_LABELS = {"BMS": "BMS traffic", "BENCH": "bench injection", "VCU": "vehicle"}
"""How the report names each sending node's share."""

GROUPING = {"CellGroup": ("cells", 4), "TempGroup": ("temps", 4), "BalancingGroup": ("cells", 24)}
"""Multiplexer name -> (what its groups count, items per group), as the DBC comments describe it.
Messages with another multiplexer send every group of the DBC each period."""


@dataclass(frozen=True)
class Row:
    """Bus load of one message."""

    name: str
    frame_id: int
    sender: str
    """Sending node (first sender in the DBC)."""
    dlc: int
    frame_bits: int
    """Worst-case bits per frame, stuff bits included."""
    frames_per_s: float
    bits_per_s: float
    load: float
    """Share of the bitrate, 0..1."""


def frame_bits(dlc: int, extended: bool = False) -> int:
    """Return the worst-case length in bits of a classic CAN data frame with `dlc` data bytes."""
    if extended:
        return 67 + 8 * dlc + (54 + 8 * dlc - 1) // 4
    return 47 + 8 * dlc + (34 + 8 * dlc - 1) // 4


def frames_per_period(message: Message, cells: int, temps: int) -> int:
    """Return how many frames of `message` one period carries for `cells` and `temps`."""
    if not message.is_multiplexed():
        return 1
    groups = mux_groups(message)
    selector = next(s for s in message.signals if s.is_multiplexer)
    if selector.name not in GROUPING:
        return len(groups)
    quantity, per_group = GROUPING[selector.name]
    count = cells if quantity == "cells" else temps
    needed = math.ceil(count / per_group)
    if needed > len(groups):
        raise ValueError(
            f"{message.name} carries at most {len(groups) * per_group} {quantity}, not {count}"
        )
    return needed


def bus_load(
    db: Database, cells: int, temps: int, bitrate: int, control_period_ms: int = 100
) -> list[Row]:
    """Return the worst-case bus load of every message of `db`, ordered by frame id."""
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
                dlc=message.length,
                frame_bits=bits,
                frames_per_s=frames_per_s,
                bits_per_s=frames_per_s * bits,
                load=frames_per_s * bits / bitrate,
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    """Return `rows` as a text table with a subtotal per sender and the total."""
    lines = [
        f"{'message':<22} {'id':>6} {'sender':<7} {'dlc':>3} {'bits':>4} "
        f"{'frames/s':>8} {'bit/s':>8} {'load':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<22} {r.frame_id:>#6x} {r.sender:<7} {r.dlc:>3} {r.frame_bits:>4} "
            f"{r.frames_per_s:>8.1f} {r.bits_per_s:>8.0f} {r.load:>8.2%}"
        )
    lines.append("")
    groups = [
        (f"{SENDER_LABELS.get(s, s)} ({s})", [r for r in rows if r.sender == s])
        for s in dict.fromkeys(r.sender for r in rows)
    ]
    for label, members in [*groups, ("total", rows)]:
        frames = sum(r.frames_per_s for r in members)
        bits = sum(r.bits_per_s for r in members)
        load = sum(r.load for r in members)
        lines.append(f"{label:<47} {frames:>8.1f} {bits:>8.0f} {load:>8.2%}")
    return "\n".join(lines)
