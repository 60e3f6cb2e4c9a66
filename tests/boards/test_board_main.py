"""firmware/main.py, the entry point every board runs: whatever ends the application loop, the
contactors are left open (a BMS that stops must not leave the pack connected)."""

from __future__ import annotations

import runpy
import sys
import types

import pytest

from firmware import app
from hil import REPO_ROOT


class _Board:
    def __init__(self) -> None:
        self.contactors = (0, 0, 0)

    def set_contactors(self, neg: int, pre: int, pos: int) -> None:
        self.contactors = (neg, pre, pos)

    def config_overrides(self) -> dict[str, int]:
        return {}

    def storage_read(self, name: str) -> bytes | None:
        return None  # erased storage: factory image, no diagnostic configuration

    def storage_write(self, name: str, data: bytes) -> None:
        pass


@pytest.mark.parametrize("ending", [KeyboardInterrupt, SystemExit, MemoryError])
def test_contactors_open_when_the_loop_ends(
    monkeypatch: pytest.MonkeyPatch, ending: type[BaseException]
) -> None:
    board = _Board()
    fake = types.ModuleType("boards.fakeboard")
    fake.from_args = lambda args: board  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "boards.fakeboard", fake)

    def run(b: _Board, cfg: object = None, bms: object = None) -> None:
        b.set_contactors(1, 0, 1)  # running, pack connected
        raise ending()

    monkeypatch.setattr(app, "run", run)
    monkeypatch.setattr(app, "build", lambda b, cfg=None: types.SimpleNamespace(cfg=cfg))
    monkeypatch.setattr(sys, "argv", ["main.py", "fakeboard"])
    with pytest.raises(ending):
        runpy.run_path(str(REPO_ROOT / "firmware" / "main.py"), run_name="__main__")
    assert board.contactors == (0, 0, 0)
