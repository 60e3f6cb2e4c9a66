"""CPython only: runs the firmware tests under the MicroPython unix port with a board-sized heap,
importing the firmware from the mpy-cross bundle that a board is flashed with."""

import subprocess

from hil import REPO_ROOT
from hil.build import build_bundle
from hil.dut import micropython_binary


def test_firmware_tests_pass_under_micropython():
    bundle = build_bundle("sim")
    r = subprocess.run(
        [micropython_binary(), "-X", "heapsize=96K", "tests/firmware/mp_runner.py"]
        + ["--path", str(bundle)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert " passed, 0 failed" in r.stdout, out
