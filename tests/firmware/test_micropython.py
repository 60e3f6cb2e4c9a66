"""CPython only: runs the firmware tests under the MicroPython unix port with a board-sized heap."""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _micropython():
    exe = shutil.which("micropython")
    if exe:
        return exe
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else None


def test_firmware_tests_pass_under_micropython():
    exe = _micropython()
    assert exe, "micropython not found on PATH nor next to " + sys.executable
    r = subprocess.run(
        [exe, "-X", "heapsize=96K", "tests/firmware/mp_runner.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert " passed, 0 failed" in r.stdout, out
