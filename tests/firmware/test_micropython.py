"""CPython only: runs the firmware tests under the MicroPython unix port with a board-sized heap,
importing the firmware from the mpy-cross bundle that a board is flashed with.

Each test module runs in a fresh interpreter, as each would on a freshly reset board: the modules'
own source is compiled on the device, and that compiler peak must not pile up across modules.
"""

import subprocess

from hil import REPO_ROOT
from hil.bench.dut import DEFAULT_HEAP, micropython_binary
from hil.toolchain.build import build_bundle

RUNNER = "tests/firmware/mp_runner.py"


def _run(*args):
    return subprocess.run(
        [micropython_binary(), "-X", f"heapsize={DEFAULT_HEAP}", RUNNER, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_firmware_tests_pass_under_micropython():
    bundle = build_bundle("sim")
    modules = _run("--list").stdout.split()
    assert "test_app.py" in modules and "test_properties.py" not in modules
    for name in modules:
        r = _run("--path", str(bundle), name)
        out = name + ":\n" + r.stdout + r.stderr
        assert r.returncode == 0, out
        assert " passed, 0 failed" in r.stdout, out
