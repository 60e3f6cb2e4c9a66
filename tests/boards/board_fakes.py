"""Small fakes of MicroPython's `machine` and `pyb` modules, enough to construct the hardware
boards under CPython and watch what they do to pins, CAN controllers, SPI buses and the watchdog."""

from __future__ import annotations

import json
from collections import deque
from types import SimpleNamespace
from typing import Any

from hil import REPO_ROOT

PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5


def profile(name: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / "boards" / f"{name}.json").read_text())


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, pin_id: object, mode: int = -1, value: int | None = None) -> None:
        self.id = pin_id
        self.mode = mode
        self.history: list[int] = [] if value is None else [value]

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self.history[-1] if self.history else 0
        self.history.append(int(v))
        return None

    def __call__(self, v: int | None = None) -> int | None:
        """machine.Pin is callable: pin(v) drives it, pin() reads it."""
        return self.value(v)


class SPI:
    def __init__(self, bus: int, **kwargs: Any) -> None:
        self.bus = bus
        self.kwargs = kwargs


class WDT:
    def __init__(self, timeout: int, id: int = 0) -> None:  # noqa: A002 - machine.WDT's name
        self.timeout = timeout
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class MachineCAN:
    """machine.CAN (MicroPython >= 1.28): a priority queue of `tx_slots` entries."""

    FLAG_EXT_ID = 1
    FLAG_RTR = 2
    FLAG_UNORDERED = 4

    def __init__(self, can_id: int, bitrate: int, **kwargs: Any) -> None:
        self.id = can_id
        self.bitrate = bitrate
        self.kwargs = kwargs
        self.filters: object = "unset"
        self.tx_slots = 3
        self.queued: list[tuple[int, bytes, int]] = []
        self.sent: list[tuple[int, bytes, int]] = []
        self.rx: deque[tuple[int, bytes, int]] = deque()

    def set_filters(self, filters: object) -> None:
        self.filters = filters

    def send(self, can_id: int, data: Any, flags: int = 0) -> int | None:
        if len(self.queued) >= self.tx_slots:
            return None
        self.queued.append((can_id, bytes(data), flags))
        return len(self.queued) - 1

    def transmit_all(self) -> None:
        """The bus took every queued frame."""
        self.sent += self.queued
        self.queued = []

    def recv(self, arg: list[Any] | None = None) -> list[Any] | None:
        if not self.rx:
            return None
        assert arg is not None, "the board must pass its preallocated list"
        can_id, data, flags = self.rx.popleft()
        mv = arg[1]
        assert isinstance(mv, memoryview) and len(mv.obj) >= 8
        mv.obj[: len(data)] = data
        arg[0] = can_id
        arg[1] = memoryview(mv.obj)[: len(data)]  # "resized" to the frame
        arg[2] = flags
        arg[3] = 0
        return arg


def make_machine(*, with_can: bool = True, reset: int = PWRON_RESET) -> SimpleNamespace:
    made: dict[str, list[Any]] = {"pins": [], "spi": [], "wdt": [], "can": []}

    def pin(*a: Any, **k: Any) -> Pin:
        p = Pin(*a, **k)
        made["pins"].append(p)
        return p

    pin.OUT = Pin.OUT  # type: ignore[attr-defined]
    pin.IN = Pin.IN  # type: ignore[attr-defined]

    def spi(*a: Any, **k: Any) -> SPI:
        s = SPI(*a, **k)
        made["spi"].append(s)
        return s

    def wdt(**k: Any) -> WDT:
        w = WDT(**k)
        made["wdt"].append(w)
        return w

    m = SimpleNamespace(
        Pin=pin,
        SPI=spi,
        WDT=wdt,
        PWRON_RESET=PWRON_RESET,
        WDT_RESET=WDT_RESET,
        SOFT_RESET=SOFT_RESET,
        reset_cause=lambda: reset,
        idle=lambda: None,
        made=made,
    )
    if with_can:

        class CAN(MachineCAN):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, **k)
                made["can"].append(self)

        m.CAN = CAN
    return m


def pin_named(machine: SimpleNamespace, pin_id: object) -> Pin:
    found = [p for p in machine.made["pins"] if p.id == pin_id and p.mode == Pin.OUT]
    assert len(found) == 1, f"pin {pin_id!r} claimed {len(found)} times as an output"
    return found[0]


class PybCAN:
    """pyb.CAN (classic bxCAN): three transmit mailboxes, FIFO 0 receive."""

    NORMAL = 0
    MASK16 = 1

    def __init__(self, bus: int, mode: int, **kwargs: Any) -> None:
        self.bus = bus
        self.mode = mode
        self.kwargs = kwargs
        self.filter: tuple[Any, ...] | None = None
        self.mailboxes: list[tuple[int, bytes]] = []
        self.sent: list[tuple[int, bytes]] = []
        self.rx: deque[tuple[int, bool, bytes]] = deque()

    def setfilter(self, bank: int, mode: int, fifo: int, params: tuple[int, ...]) -> None:
        self.filter = (bank, mode, fifo, params)

    def send(self, data: Any, can_id: int, *, timeout: int = 5000) -> None:
        assert timeout == 0, "the board must not block on a send"
        if len(self.mailboxes) >= 3:
            raise OSError(116, "ETIMEDOUT")
        self.mailboxes.append((can_id, bytes(data)))

    def transmit_all(self) -> None:
        self.sent += self.mailboxes
        self.mailboxes = []

    def any(self, fifo: int) -> bool:
        return bool(self.rx)

    def recv(self, fifo: int, lst: list[Any] | None = None, *, timeout: int = 5000) -> list[Any]:
        assert lst is not None and timeout == 0
        can_id, rtr, data = self.rx.popleft()
        mv = lst[3]
        mv.obj[: len(data)] = data
        lst[0] = can_id
        lst[1] = rtr
        lst[2] = 0
        lst[3] = memoryview(mv.obj)[: len(data)]
        return lst


def make_pyb() -> SimpleNamespace:
    made: list[PybCAN] = []

    class CAN(PybCAN):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            made.append(self)

    return SimpleNamespace(CAN=CAN, made=made)
