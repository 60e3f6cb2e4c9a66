"""Closed-loop speed, firmware cycle time and heap, measured side by side in one run.

Prints markdown tables for BENCHMARKS.md:
1. lock-step speed (simulated seconds per wall second) for 16, 96 and 192 cells, with the
   firmware's own cycle time (ticks_us on the unix port, reported in BMS_CycleDiag) and its live
   heap after collection; median of `--repeats` runs;
2. the smallest `-X heapsize` on which 16 and 192 cells run on this binary (bisection, KiB; the
   32-bit figures the board budgets use come from benchmarks/heap.py);
3. the bench transport: raw batched SLCAN versus python-can's slcan interface, 16 cells.

Usage: python benchmarks/closed_loop_speed.py [--steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import can
import numpy as np

from hil.bench.dut import DutError, UnixPortDut
from hil.bench.loop import Bench, BenchError
from hil.bench.runner import open_bench
from hil.bench.transport import PythonCanTransport
from sim.pack import Pack, PackConfig
from sim.sensors import SensorModel

CYCLE_S = 0.1


def run_steps(bench: Bench, steps: int, load_a: float) -> tuple[float, list[int], int]:
    """Warm up until closed, then time `steps` steps; returns wall s, cycle times, max heap."""
    for _ in range(50):
        bench.step(0.0)
    assert bench.status.closed, bench.status
    cycles: list[int] = []
    heap = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        bench.step(load_a)
        cycles.append(bench.status.cycle_time_us)
        heap = max(heap, bench.status.heap_used)
    return time.perf_counter() - t0, cycles, heap


def speed_table(steps: int, repeats: int) -> None:
    """Lock-step speed per cell count."""
    print(
        "| cells | sim s / wall s (median) | runs | firmware cycle us median / p99 / max "
        "| cycle share of 100 ms (p99) | live heap max |"
    )
    print("|---|---|---|---|---|---|")
    for cells in (16, 96, 192):
        ratios = []
        all_cycles: list[int] = []
        heap = 0
        for seed in range(repeats):
            with open_bench(cells=cells, seed=seed) as bench:
                wall, cycles, h = run_steps(bench, steps, 2.5)
            ratios.append(steps * CYCLE_S / wall)
            all_cycles += cycles
            heap = max(heap, h)
        c = np.array(all_cycles)
        p99 = float(np.percentile(c, 99))
        print(
            f"| {cells} | {statistics.median(ratios):.0f}x | "
            f"{', '.join(f'{r:.0f}' for r in ratios)} | "
            f"{np.median(c):.0f} / {p99:.0f} / {c.max()} | {p99 / 1000:.2f} % | {heap} B |"
        )


def heap_fits(cells: int, kib: int, steps: int = 300) -> bool:
    """True if `cells` cells run `steps` cycles under -X heapsize=<kib>K."""
    try:
        with open_bench(cells=cells, heap=f"{kib}K") as bench:
            run_steps(bench, steps, 2.5)
            return bench.dut is not None and bench.dut.alive()
    except (BenchError, DutError, ConnectionError, AssertionError):
        return False


def min_heap_table() -> None:
    """Smallest heap of this (64-bit) micropython binary that runs each cell count (bisection in
    KiB); benchmarks/heap.py measures what a 32-bit board needs."""
    print("| cells | smallest -X heapsize that runs 300 cycles (this binary) |")
    print("|---|---|")
    for cells in (16, 192):
        lo, hi = 16, 512
        if not heap_fits(cells, hi):
            print(f"| {cells} | does not fit {hi}K |")
            continue
        while hi - lo > 2:
            mid = (lo + hi) // 2
            if heap_fits(cells, mid):
                hi = mid
            else:
                lo = mid
        print(f"| {cells} | {hi} KiB |")


def transport_table(steps: int) -> None:
    """Raw batched SLCAN against python-can's slcan backend, same DUT kind, same steps."""
    print("| transport (16 cells) | sim s / wall s |")
    print("|---|---|")
    with open_bench(cells=16) as bench:
        wall, _, _ = run_steps(bench, steps, 2.5)
    print(f"| raw SLCAN over TCP, one write per cycle | {steps * CYCLE_S / wall:.0f}x |")
    with UnixPortDut({"cell_count": 16}) as dut:
        bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0)
        bench = Bench(PythonCanTransport(bus), Pack(PackConfig(n_cells=16)), SensorModel(seed=0))
        bench.vcu_of(dut)
        try:
            short = max(100, steps // 10)
            wall, _, _ = run_steps(bench, short, 2.5)
        finally:
            bench.close()
    print(f"| python-can `slcan` over socket:// | {short * CYCLE_S / wall:.0f}x |")


def main() -> None:
    """Run every table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    speed_table(args.steps, args.repeats)
    print()
    min_heap_table()
    print()
    transport_table(args.steps)


if __name__ == "__main__":
    main()
