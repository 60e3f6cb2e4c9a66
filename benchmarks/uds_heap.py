"""Heap the diagnostics cost on the MicroPython unix port: what importing each module adds after
the application (`hil.bench.dut.import_footprint`, bytes of this binary, 64-bit unless
CELLGUARD_MICROPYTHON names a 32-bit build), and the smallest heap in which the 16-cell closed
loop still starts.

    python benchmarks/uds_heap.py [--bisect]
"""

from __future__ import annotations

import argparse

from hil.bench.dut import import_footprint
from hil.bench.runner import open_bench

RESIDENT = ["firmware.app"]
ON_DEMAND = [
    "firmware.uds_table",
    "firmware.isotp",
    "firmware.security",
    "firmware.diag_config",
    "firmware.uds",
]


def _fits(heap_k: int) -> int | None:
    try:
        with open_bench(cells=16, heap=f"{heap_k}K") as b:
            for _ in range(40):
                b.step(0.0)
            return b.status.heap_used
    except Exception:  # noqa: BLE001 - a start that runs out of heap is the answer "no"
        return None


def main() -> None:
    """Print the figures (BENCHMARKS.md)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bisect", action="store_true", help="also the smallest 16-cell heap")
    args = ap.parse_args()
    base = import_footprint(RESIDENT)
    print(f"application (firmware.app and what it imports): {base} B")
    acc = list(RESIDENT)
    total = 0
    for m in ON_DEMAND:
        acc.append(m)
        v = import_footprint(acc)
        print(f"  + {m:<22} {v - base:6d} B")
        total += v - base
        base = v
    print(f"diagnostic server loaded while a tester talks: {total} B of code")
    v = import_footprint(acc + ["firmware.uds_prog", "firmware.slots"]) - base
    print(f"programming server (uds_prog, slots) on top, after a restart into it: {v} B")
    if args.bisect:
        lo, hi = 120, 200
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _fits(mid):
                hi = mid
            else:
                lo = mid
        print(f"smallest heap for the 16-cell closed loop: {hi}K, live heap {_fits(hi)} B")


if __name__ == "__main__":
    main()
