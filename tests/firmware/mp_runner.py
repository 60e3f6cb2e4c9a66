"""Runs the firmware tests on MicroPython, where pytest does not exist.

    micropython -X heapsize=96K tests/firmware/mp_runner.py [--path BUNDLE] [test_x.py ...]
    micropython tests/firmware/mp_runner.py test_x.py::test_one    # one test function
    micropython tests/firmware/mp_runner.py --list    # the modules it runs by default

With --path the firmware is imported from that folder first: the mpy-cross bundle a board runs
(`hil.toolchain.build.build_bundle`), so the tests exercise exactly the flashed bytecode and the
on-device compiler's RAM peak does not count against the heap.

Imports each named module (default: every test_*.py in this folder except the CPython-only ones),
calls every test_* function, prints "N passed, M failed" and exits 1 on any failure. Each module
is dropped after its run so that the heap holds one test module at a time.
"""

import gc
import os
import sys

# Need hypothesis or subprocess: pytest runs them under CPython.
CPYTHON_ONLY = (
    "test_micropython.py",
    "test_properties.py",
    "test_estimation_properties.py",
    "test_uds.py",  # udsoncan and can-isotp: CPython packages
    "test_uds_routines.py",
    "test_j1939tp.py",  # against sim/j1939tp.py with hypothesis
    "test_charging.py",  # against sim/charger.py (cantools, numpy)
    "test_charging_stateful.py",
    "test_uds_timing.py",
    "test_update_power_cuts.py",
)


def _print_exception(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(e)


def _run_module(name, only=None):
    passed = failed = 0
    module = __import__(name)
    for attr in sorted(dir(module)):
        fn = getattr(module, attr)
        if not attr.startswith("test_") or not callable(fn) or (only and attr != only):
            continue
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001 - report every failure and carry on
            failed += 1
            print("FAIL", name + "." + attr)
            _print_exception(e)
        gc.collect()
    del sys.modules[name]
    gc.collect()
    return passed, failed


def main(argv):
    here = sys.path[0]  # the script's folder: its test modules and helpers import from here
    root = here.rsplit("/", 2)[0] if here.count("/") >= 2 else ".."
    sys.path.insert(1, root)
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--path":
        sys.path.insert(1, args[1])
        args = args[2:]
    files = [a.rsplit("/", 1)[-1] for a in args if a != "--list"]
    if not files:
        files = sorted(
            f
            for f in os.listdir(here)
            if f.startswith("test_") and f.endswith(".py") and f not in CPYTHON_ONLY
        )
    if "--list" in args:
        print(" ".join(files))
        return 0
    passed = failed = 0
    for f in files:
        f, _, only = f.partition("::")
        p, m = _run_module(f[:-3], only)
        passed += p
        failed += m
    print(str(passed) + " passed, " + str(failed) + " failed")
    return 1 if failed or not passed else 0


sys.exit(main(sys.argv))
