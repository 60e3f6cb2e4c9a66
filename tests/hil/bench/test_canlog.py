"""The run's CAN log: in "events" mode exactly the frames of the start, the event windows, the
snapshots and the end; in "full" mode every frame; either way a file python-can reads back and
cantools decodes frame by frame, and windows that say what it holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import can
import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil import DBC_PATH
from hil.bench.canlog import CanLog

DB = cantools.database.load_file(DBC_PATH)
STATE = DB.get_message_by_name("BMS_State")
PACK = DB.get_message_by_name("BMS_Pack")
UDS = DB.get_message_by_name("UDS_PhysicalRequest")
T0 = 1_750_000_000.0  # a wall-clock start, as the bench stamps its logs
PERIOD = 0.1
SHORT = {
    "start_s": 3.05,
    "pre_s": 1.05,
    "post_s": 2.05,
    "snapshot_every_s": 7.03,
    "snapshot_s": 1.05,
}
"""Windows scaled down so a 30 s stream has all kinds (pre_s >= snapshot_s as in the defaults),
their edges between the frames' 100 ms grid."""


def _state(k: int, closed: bool) -> can.Message:
    values = {s.name: 0 for s in STATE.signals}
    values |= {"BmsState": 3 if closed else 1, "ContactorNeg": int(closed)}
    values |= {"ContactorPos": int(closed), "AliveCounter": k % 16, "CycleLoad": k % 200}
    return can.Message(
        timestamp=T0 + k * PERIOD, arbitration_id=STATE.frame_id, data=STATE.encode(values)
    )


def _pack(k: int) -> can.Message:
    data = PACK.encode({"PackVoltage": 50.0 + k * 0.01, "PackCurrent": 1.0, "SOC": 50, "SOH": 99})
    return can.Message(timestamp=T0 + k * PERIOD, arbitration_id=PACK.frame_id, data=data)


def _stream(cycles: int, toggles: set[int]) -> tuple[list[can.Message], list[float]]:
    """Two frames per control period; the contactors change state at the cycles in `toggles`.
    Returns the frames and the event times (relative to the first frame)."""
    frames, events, closed = [], [], False
    for k in range(cycles):
        if k in toggles and k > 0:
            closed = not closed
            events.append(k * PERIOD)
        frames += [_state(k, closed), _pack(k)]
    return frames, events


def _expected(times: list[float], events: list[float], cfg: dict[str, float]) -> list[bool]:
    """Which frames the law keeps: those inside [0, start], [e - pre, e + post] for each event,
    [s - snapshot, s] for each snapshot (every snapshot_every_s) and [T - pre, T]."""
    end = times[-1]
    spans = [(0.0, cfg["start_s"]), (end - cfg["pre_s"], end)]
    spans += [(e - cfg["pre_s"], e + cfg["post_s"]) for e in events]
    k = 1
    while k * cfg["snapshot_every_s"] <= end:
        s = min(t for t in times if t >= k * cfg["snapshot_every_s"])  # the frame that takes it
        spans.append((s - cfg["snapshot_s"], s))
        k += 1
    return [any(a <= t <= b for a, b in spans) for t in times]


def _write(frames: list[can.Message], path: Path, mode: str, **cfg: float) -> CanLog:
    log = CanLog(path, mode, DB, **cfg)  # type: ignore[arg-type]
    for f in frames:
        log.on_message_received(f)
    log.stop()
    return log


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(1, 299), max_size=8), st.sampled_from(["blf", "asc"]))
def test_events_log_holds_exactly_the_frames_of_its_windows(toggles: set[int], fmt: str) -> None:
    """Law: the events log holds the frames whose time lies in the start, an event's pre/post
    window, a snapshot or the end, in order and no other; `windows` are its maximal stretches
    (first and last frame, frame count), each naming what opened it."""
    frames, events = _stream(300, toggles)
    times = [f.timestamp - T0 for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"can.{fmt}"
        log = _write(frames, path, "events", **SHORT)
        got = list(can.LogReader(str(path)))
    keep = _expected(times, events, SHORT)
    want = [f for f, k in zip(frames, keep, strict=True) if k]
    assert [(m.arbitration_id, bytes(m.data)) for m in got] == [
        (m.arbitration_id, bytes(m.data)) for m in want
    ]
    # (an .asc reader gives times from the file's start, a .blf reader the wall clock)
    got_t = [m.timestamp - got[0].timestamp for m in got]
    assert got_t == pytest.approx([m.timestamp - want[0].timestamp for m in want], abs=1e-5)
    stretches: list[list[float]] = []
    for t, k, prev in zip(times, keep, [False, *keep[:-1]], strict=True):
        if k and not prev:
            stretches.append([t, t, 0])
        if k:
            stretches[-1][1] = t
            stretches[-1][2] += 1
    assert [(w.start_s, w.end_s, w.frames) for w in log.windows] == [
        pytest.approx((a, b, n), abs=1e-6) for a, b, n in stretches
    ]
    assert log.windows[0].events[0] == "0.0 s start" and log.windows[-1].events[-1].endswith("end")
    assert log.frames_seen == len(frames)
    snapshots = int(times[-1] // SHORT["snapshot_every_s"])
    assert sum(w.event_count for w in log.windows) == 2 + len(events) + snapshots


def test_events_are_named_with_the_dbc_value_tables(tmp_path: Path) -> None:
    """A contactor closing reads as the DBC names it; a spontaneous message (UDS) and a mark
    from the caller are events too and keep the window open (defaults: 10 s before, 30 s
    after); the end joins a window still open."""
    frames, _ = _stream(1000, {500})
    uds = can.Message(
        timestamp=T0 + 650 * PERIOD + 0.05, arbitration_id=UDS.frame_id, data=b"\x02\x10\x03"
    )
    frames.insert(2 * 651, uds)  # after the frames of 65.0 s
    log = CanLog(tmp_path / "can.blf", "events", DB, snapshot_every_s=1e9)
    for f in frames[:1600]:  # up to 79.9 s
        log.on_message_received(f)
    log.mark("phase charge")
    for f in frames[1600:]:
        log.on_message_received(f)
    log.stop()
    assert [w.events for w in log.windows] == [
        ["0.0 s start"],
        [
            "50.0 s BMS_State BmsState STANDBY -> CLOSED, ContactorNeg OPEN -> CLOSED, "
            "ContactorPos OPEN -> CLOSED",
            "65.0 s UDS_PhysicalRequest",
            "79.9 s phase charge",
            "99.9 s end",
        ],
    ]
    assert log.windows[0].end_s == pytest.approx(30.0, abs=0.11)
    assert log.windows[1].start_s == pytest.approx(40.0, abs=0.11)
    got = list(can.BLFReader(str(tmp_path / "can.blf")))
    assert len(got) == sum(w.frames for w in log.windows)
    for m in got:  # every frame decodes
        DB.decode_message(m.arbitration_id, m.data) if m.arbitration_id != UDS.frame_id else None


def test_full_log_keeps_every_frame_and_names_the_events(tmp_path: Path) -> None:
    frames, events = _stream(300, {50, 200})
    log = _write(frames, tmp_path / "can.blf", "full")
    got = list(can.BLFReader(str(tmp_path / "can.blf")))
    assert len(got) == len(frames) == log.windows[0].frames and len(log.windows) == 1
    assert [m.arbitration_id for m in got] == [m.arbitration_id for m in frames]
    assert sum("ContactorPos" in e for e in log.windows[0].events) == len(events) == 2
    assert log.describe()["frames_on_the_bus"] == len(frames)


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'some': one of events, full"):
        CanLog(tmp_path / "can.blf", "some", DB)  # type: ignore[arg-type]
