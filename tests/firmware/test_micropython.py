"""CPython only: runs the firmware tests on the DUT's MicroPython, where pytest does not exist.

On the unix port (default) each module runs with a board-sized heap, importing the firmware from
the mpy-cross bundle a board is flashed with. With `--dut qemu[:IMAGE]` each runs on the Cortex-M
image instead, against the firmware frozen into it (float32, 32-bit objects, the image's heap):
the test modules are read from the host through semihosting and compiled on the device.

Each test module runs in a fresh interpreter, as each would on a freshly reset board: the modules'
own source is compiled on the device, and that compiler peak must not pile up across modules.
"""

import ast
import subprocess

import pytest

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


MODULES = _run("--list").stdout.split()
# The two modules that simulate hours of estimator updates take minutes on the emulated MCU: one
# run per test function there, so parallel workers share them.
SPLIT = ("test_estimation.py", "test_estimation_model_error.py")


def _functions(module):
    tree = ast.parse((REPO_ROOT / "tests" / "firmware" / module).read_text())
    return [f"{module}::{n.name}" for n in tree.body if getattr(n, "name", "").startswith("test_")]


RUNS = [run for m in MODULES for run in (_functions(m) if m in SPLIT else [m])]


def test_the_runner_takes_the_micropython_modules_only():
    assert "test_app.py" in MODULES and "test_properties.py" not in MODULES


def _run_on_image(name, target, heap):
    from hil.bench.qemu import parse_target, run_on_image
    from hil.toolchain.build import heap_bytes

    code = (
        "import sys\n"
        'sys.path[0] = "/tests/firmware"\n'  # the runner's folder: its modules and helpers
        f"sys.argv[:] = ['mp_runner.py', {name!r}]\n"
        "import mp_runner\n"
    )
    size = heap_bytes(heap) if heap else None
    return run_on_image(code, name=parse_target(target), heap=size, cwd=REPO_ROOT, timeout_s=900)


def test_every_function_of_a_split_module_runs():
    for module in SPLIT:
        assert module in MODULES and len(_functions(module)) > 1


@pytest.mark.mcu
@pytest.mark.parametrize("name", RUNS)
def test_firmware_tests_pass_on_the_dut(name, bench_options):
    target = bench_options["target"]
    if target.startswith("qemu"):
        status, out = _run_on_image(name, target, bench_options["heap"])
    else:
        r = _run("--path", str(build_bundle("sim")), name)
        status, out = r.returncode, r.stdout + r.stderr
    assert status == 0, name + ":\n" + out
    assert " passed, 0 failed" in out, name + ":\n" + out
