"""Instructions per control cycle, allocation, collections and heap of the firmware on the MCU.

Measured on the Cortex-M image (`hil.toolchain.image`: the firmware frozen into MicroPython
v1.28.0's qemu port) under `qemu-system-arm -icount shift=0`, where one microsecond of the board's
`ticks_us` is exactly 1000 emulated instructions. The bench drives the image in lock-step (the
qemu board, SLCAN over the emulated UART) with the plant: contactors closed, then `LOAD_A`
discharge; every frame of the lock-step protocol arrives each cycle (16 cells: 12 frames, 192
cells: 100).

Per control cycle, for 16, 96 and 192 cells, on both images:
- control cycle: `Bms.guarded_cycle` as the firmware times it (the `cycle_us` it reports), minus
  the SLCAN text encoding of its transmitted frames, which only the emulated UART needs;
- frame decode: `Comm.poll` over the cycle's received frames (dispatch, codec decode, measurement
  store) minus the SLCAN text parsing, summed over the receive passes since the previous cycle
  (their count is printed under each row: a burst the UART hands over in parts takes several);
- SLCAN text: the qemu board's `io_us` (parsing received lines, encoding transmitted frames),
  reported beside: a board's CAN controller hands over binary frames;
- median and p90 over `--cycles` cycles after `WARMUP` cycles, as instructions, and as a share of
  the 100 ms period on each claimed board: STM32F413 at 96 MHz with CPI 1.5 (Cortex-M4F, flash
  with the ART accelerator), and for the ESP32, which no emulator here runs, a derivation: the
  same instruction count (Xtensa LX6 and Thumb-2 are both load/store ISAs of similar density)
  at CPI 2.0 (code and frozen bytecode in external flash behind a 32 KB cache) and 160 MHz
  (MicroPython's default ESP32 clock; 240 MHz divides the share by 1.5);
- bytes allocated per cycle (`gc.mem_alloc()` before and after, outside the timed region: each
  call scans the heap's allocation table, about 340 k instructions) and the garbage collections
  that ran inside a cycle or inside the frame decode (the heap in use shrank across it); the
  firmware's own collections, after a cycle's timed part (firmware/gcpolicy.py), are in neither:
  they are counted beside, with the schedule they reached.

With `--heap`: the smallest MICROPY_HEAP_SIZE (bisection to 1 KiB; each probe is an image built
with that heap) on which the frozen firmware runs `HEAP_STEPS` closed-loop cycles at 2.5 A, as
benchmarks/heap.py runs the unix port: alive, closed at the end, no InternalError on the way.
Heap use does not depend on the FPU (both images box float32 the same way), so it is measured on
an385.

With `--parts`: each layer's instructions per cycle besides (the estimator, protection, transmit,
the frame handlers, ...), timed inside the image around each entry point (PARTS).

Usage: python benchmarks/mcu_cycle.py [--cycles 200] [--images an385,an500] [--heap] [--parts]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heap import smallest  # noqa: E402

from hil.bench.loop import BenchError  # noqa: E402
from hil.bench.runner import open_bench  # noqa: E402
from hil.toolchain.image import VARIANTS, unavailable  # noqa: E402

CELLS = (16, 96, 192)
WARMUP = 60  # cycles before the record starts: precharge, close, the first estimator updates
LOAD_A = 10.0
HEAP_STEPS = 300
INSTR_PER_US = 1000  # -icount shift=0
BOARDS = (
    # name, clock Hz, CPI, measured or derived
    ("STM32F413, 96 MHz, CPI 1.5", 96e6, 1.5),
    ("ESP32 (derived), 160 MHz, CPI 2.0", 160e6, 2.0),
)
PERIOD_S = 0.1

# Runs on the image before the firmware starts: wraps the two entry points app.run calls and
# records per cycle: cycle_us, the board's SLCAN time inside the cycle, poll time and the SLCAN
# time inside it since the last cycle, bytes allocated in the cycle, whether a collection ran in
# the cycle, collections in the polls before it (mem_alloc around each call, outside the timed
# part), and the time of the firmware's own collection after the cycle when one ran (-1: none;
# the heap just before it is Collector.before). Nothing here allocates in the timed regions
# (array stores of small ints); the record prints at the end.
INSTRUMENT = """
import gc, time
from array import array
from firmware import app, comm
_SKIP = {skip}
_N = {n}
_rec = array("i", [0] * (9 * _N))
_acc = array("i", [0, 0, 0, 0])
_k = array("i", [0])
_gcs = array("i", [0])
_poll = comm.Comm.poll
_cycle = app.Bms.guarded_cycle
def _timed_poll(self, now_ms):
    a0 = gc.mem_alloc()
    io0 = self.board.io_us
    t0 = time.ticks_us()
    more = _poll(self, now_ms)
    _acc[0] += time.ticks_diff(time.ticks_us(), t0)
    _acc[1] += time.ticks_diff(self.board.io_us, io0)
    if gc.mem_alloc() < a0:
        _acc[2] += 1
    _acc[3] += 1
    return more
def _measured_cycle(self, now_ms, late=False):
    io0 = self.board.io_us
    c0 = self.gc.collections
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    ok = _cycle(self, now_ms, late)
    t1 = time.ticks_us()
    a1 = gc.mem_alloc() if self.gc.collections == c0 else self.gc.before
    _gcs[0] += self.gc.collections - c0
    k = _k[0] - _SKIP
    if 0 <= k < _N:
        r = 9 * k
        _rec[r] = self.cycle_us
        _rec[r + 1] = time.ticks_diff(self.board.io_us, io0)
        _rec[r + 2] = _acc[0]
        _rec[r + 3] = _acc[1]
        # Allocation only over cycles without the firmware's collection: the heap it takes
        # before collecting (a1 then, when taken: -1 if not) still holds the live frames
        _rec[r + 4] = a1 - a0 if self.gc.collections == c0 else -1
        _rec[r + 5] = 1 if 0 <= a1 < a0 else 0
        _rec[r + 6] = _acc[2]
        # the collection after the cycle (and the guard's bookkeeping), when one ran
        _rec[r + 7] = time.ticks_diff(t1, t0) - self.cycle_us if self.gc.collections != c0 else -1
        _rec[r + 8] = _acc[3]  # receive passes since the last cycle
        if k == _N - 1:
            for i in range(_N):
                print("MCU", i, *_rec[9 * i : 9 * i + 9])
            print("MCU collections", _gcs[0], "every", self.gc.every, "live", self.gc.live)
            print("MCU end")
    _k[0] += 1
    _acc[0] = 0
    _acc[1] = 0
    _acc[2] = 0
    _acc[3] = 0
    return ok
comm.Comm.poll = _timed_poll
app.Bms.guarded_cycle = _measured_cycle
"""

# With --parts, appended to INSTRUMENT: each layer's entry points timed with ticks_us around the
# call (wrappers of fixed arity: nothing allocated per call), summed per cycle (the frame
# handlers: per the cycle's polls), the pair of ticks_us reads and the wrapper's own call
# measured at start-up on an empty function and subtracted per call. Transmit is net of the SLCAN
# text its frames take. Printed once, the median over the recorded cycles, in microseconds.
PARTS = (
    # label, module, class, method, arity (without self)
    ("measurement (compensate, evaluate)", "measurement", "Measurements", "compensate", 1),
    ("measurement (compensate, evaluate)", "measurement", "Measurements", "evaluate", 1),
    ("protection", "protection", "Protection", "check", 4),
    ("protection", "protection", "Protection", "check_limits", 4),
    ("estimator (SocEstimator.update)", "estimation", "SocEstimator", "update", 3),
    ("contactors", "contactors", "Contactors", "test", 5),
    ("contactors", "contactors", "Contactors", "step", 7),
    ("thermal", "thermal", "Thermal", "update", 3),
    ("SOP (Sop.update)", "sop", "Sop", "update", 3),
    ("limits", "limits", "Limits", "update", 4),
    ("limits", "limits", "Limits", "cap", 2),
    ("balancing", "balancing", "Balancer", "update", 3),
    ("fault memory", "fault_memory", "FaultMemory", "update", 5),
    ("transmit (net of SLCAN text)", "comm", "Comm", "transmit", 1),
    ("decode: cell voltage, temperature groups", "measurement", "Measurements", "cells_in", 2),
    ("decode: cell voltage, temperature groups", "measurement", "Measurements", "temps_in", 2),
    ("decode: pack, aux, tick frames", "comm", "Comm", "_sim_pack", 1),
    ("decode: pack, aux, tick frames", "comm", "Comm", "_sim_aux", 1),
    ("decode: pack, aux, tick frames", "comm", "Comm", "_tick", 1),
    ("decode: VCU_Request (CRC, MAC, counter)", "comm", "Comm", "_vcu", 1),
)

WRAPPERS = ("the timing wrappers, in the cycle", "decode: the timing wrappers, in the polls")

PARTS_INSTRUMENT = """
import firmware.@MODS@
_labels = {labels!r}
_slots = {slots!r}
_NP = len(_labels)
_pacc = array("i", [0] * _NP)
_pcalls = array("i", [0] * _NP)
_NW = _NP + 2
_prec = array("i", [0] * (_NW * _N))
_pk = array("i", [0])
_over = array("i", [0, 0])
def _mk(f, k, n):
    tu = time.ticks_us
    td = time.ticks_diff
    if n == 1:
        def w(s, a):
            t0 = tu()
            r = f(s, a)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    elif n == 2:
        def w(s, a, b):
            t0 = tu()
            r = f(s, a, b)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    elif n == 3:
        def w(s, a, b, c):
            t0 = tu()
            r = f(s, a, b, c)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    elif n == 4:
        def w(s, a, b, c, d):
            t0 = tu()
            r = f(s, a, b, c, d)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    elif n == 5:
        def w(s, a, b, c, d, e):
            t0 = tu()
            r = f(s, a, b, c, d, e)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    else:
        def w(s, a, b, c, d, e, g, h):
            t0 = tu()
            r = f(s, a, b, c, d, e, g, h)
            _pacc[k] += td(tu(), t0)
            _pcalls[k] += 1
            return r
    return w
def _tx(f, k):
    tu = time.ticks_us
    td = time.ticks_diff
    def w(s, a):
        io0 = s.board.io_us
        t0 = tu()
        r = f(s, a)
        _pacc[k] += td(tu(), t0) - td(s.board.io_us, io0)
        _pcalls[k] += 1
        return r
    return w
class _Nop:
    def nop(self, a):
        return None
_nw = _mk(_Nop.nop, 0, 1)
_o = _Nop()
for _i in range(64):
    _nw(_o, 0)
_over[0] = _pacc[0]  # per 64 calls: one call is about one tick
# The whole cost of a wrapped call over a direct one (per 64 calls), seen from outside
_t0 = time.ticks_us()
for _i in range(64):
    _nw(_o, 0)
_t1 = time.ticks_us()
for _i in range(64):
    _o.nop(0)
_over[1] = time.ticks_diff(_t1, _t0) - time.ticks_diff(time.ticks_us(), _t1)
_pacc[0] = 0
_pcalls[0] = 0
for _mod, _cls, _meth, _ar, _slot in _slots:
    _c = getattr(getattr(firmware, _mod), _cls)
    _f = getattr(_c, _meth)
    setattr(_c, _meth, _tx(_f, _slot) if _meth == "transmit" else _mk(_f, _slot, _ar))
_cycle2 = app.Bms.guarded_cycle
def _parts_cycle(self, now_ms, late=False):
    ok = _cycle2(self, now_ms, late)
    k = _pk[0] - _SKIP
    if 0 <= k < _N:
        calls = 0
        dcalls = 0
        for i in range(_NP):
            _prec[k * _NW + i] = _pacc[i] - _pcalls[i] * _over[0] // 64
            if _labels[i].startswith("decode"):
                dcalls += _pcalls[i]
            else:
                calls += _pcalls[i]
        # the wrappers' whole cost, which the cycle and the polls include
        _prec[k * _NW + _NP] = calls * _over[1] // 64
        _prec[k * _NW + _NP + 1] = dcalls * _over[1] // 64
        if k == _N - 1:
            print("PART overhead", _over[0], _over[1], "per 64 calls")
            for i in range(_NW):
                print("PART", i, *[_prec[j * _NW + i] for j in range(_N)])
    for i in range(_NP):
        _pacc[i] = 0
        _pcalls[i] = 0
    _pk[0] += 1
    return ok
app.Bms.guarded_cycle = _parts_cycle
"""


def _parts_preamble() -> str:
    labels = list(dict.fromkeys(p[0] for p in PARTS))
    slots = [(mod, cls, meth, n, labels.index(label)) for label, mod, cls, meth, n in PARTS]
    mods = ", firmware.".join(sorted({p[1] for p in PARTS}))
    return PARTS_INSTRUMENT.replace("@MODS@", mods).format(labels=labels, slots=slots)


def measure(image: str, cells: int, cycles: int, parts: bool = False) -> dict[str, Any]:
    """Run the closed loop on `image` and return the per-cycle records (arrays, k instructions);
    with `parts`, also each layer's median ("parts": label -> k instructions)."""
    preamble = INSTRUMENT.format(skip=WARMUP, n=cycles)
    if parts:
        preamble += _parts_preamble()
    with open_bench(
        cells=cells, target=f"qemu:{image}", dut_options={"preamble": preamble}
    ) as bench:
        bench.step_until(lambda s: s.closed, 40)
        if not bench.status.closed:
            raise BenchError(f"{image}, {cells} cells: contactors did not close: {bench.status}")
        assert bench.dut is not None
        for _ in range(WARMUP + cycles + 5):
            bench.step(LOAD_A)
            if "MCU end" in bench.dut.console():
                break
        console = bench.dut.console()
        faults = sorted(bench.status.faults)
    rows = [line.split()[1:] for line in console.splitlines() if line.startswith("MCU ")]
    rec = np.array([[int(x) for x in r[1:]] for r in rows if r[0] not in ("end", "collections")])
    policy = [r for r in rows if r[0] == "collections"]
    if len(rec) != cycles:
        raise BenchError(f"{image}, {cells} cells: {len(rec)} of {cycles} cycles recorded")
    cycle_us, tx_us, poll_us, rx_us, alloc, gc, gc_poll, collect_us, polls = rec.T
    part_k: dict[str, float] = {}
    if parts:
        labels = list(dict.fromkeys(p[0] for p in PARTS))
        for line in console.splitlines():
            f = line.split()
            if len(f) > 2 and f[0] == "PART" and f[1] != "overhead":
                values = np.array([int(x) for x in f[2:]])
                i = int(f[1])
                label = labels[i] if i < len(labels) else WRAPPERS[i - len(labels)]
                part_k[label] = float(np.median(values)) * INSTR_PER_US / 1000
        if WRAPPERS[1] not in part_k:
            raise BenchError(f"{image}, {cells} cells: no per-part record: {console[-2000:]}")
    return {
        "parts": part_k,
        "cycle": (cycle_us - tx_us) * INSTR_PER_US / 1000,
        "decode": (poll_us - rx_us) * INSTR_PER_US / 1000,
        "slcan": (rx_us + tx_us) * INSTR_PER_US / 1000,
        "alloc": alloc[(gc == 0) & (alloc >= 0)],
        "gc": int(gc.sum()),
        "gc_poll": int(gc_poll.sum()),
        "faults": faults,
        # the policy's collections after the cycles (firmware/gcpolicy.py), over the whole run
        "collections": " ".join(policy[0]) if policy else "?",
        "collect": collect_us[collect_us >= 0] * INSTR_PER_US / 1000,
        "polls": polls,
    }


def _mp_int(values: np.ndarray) -> str:
    return f"{np.median(values):.0f} / {values.max()}"


def _mp(values: np.ndarray) -> str:
    return f"{np.median(values):.0f} / {np.percentile(values, 90):.0f}"


def share(k_instr: float, clock_hz: float, cpi: float) -> float:
    """Percent of the 100 ms period that `k_instr` thousand instructions take."""
    return 100.0 * k_instr * 1000 * cpi / clock_hz / PERIOD_S


def cycle_tables(
    images: list[str], cycles: int, cells: tuple[int, ...] = CELLS, parts: bool = False
) -> None:
    """Instructions per cycle and the board shares, per image and cell count; with `parts`, a
    table of each layer's share after them."""
    print(f"{cycles} cycles per row after {WARMUP}, contactors closed, {LOAD_A:g} A discharge.")
    print("Instructions in thousands, median / p90.\n")
    print(
        "| image | cells | control cycle | frame decode | cycle + decode | SLCAN text (beside) "
        "| allocated B/cycle (median / max) | GCs inside the cycle / the decode |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for image in images:
        for n in cells:
            r = measure(image, n, cycles, parts)
            results[image, n] = r
            total = r["cycle"] + r["decode"]
            alloc = r["alloc"]
            alloc_text = f"{np.median(alloc):.0f} / {alloc.max()}" if len(alloc) else "-"
            print(
                f"| {image} ({VARIANTS[image].cpu}) | {n} | {_mp(r['cycle'])} | "
                f"{_mp(r['decode'])} | {_mp(total)} | {_mp(r['slcan'])} | {alloc_text} | "
                f"{r['gc']} / {r['gc_poll']} in {cycles} cycles |",
                flush=True,
            )
            col = r["collect"]
            cost = f", {_mp(col)} k instructions each" if len(col) else ""
            print(f"  (the firmware's collections after cycles: {r['collections']}{cost})")
            print(f"  (receive passes per cycle, median / max: {_mp_int(r['polls'])})")
            if r["faults"]:
                print(f"  (faults at the end: {', '.join(r['faults'])})")
    print("\nControl cycle + frame decode as a share of the 100 ms period (median / p90):\n")
    print("| image | cells | " + " | ".join(b[0] for b in BOARDS) + " |")
    print("|---|---|" + "---|" * len(BOARDS))
    for (image, n), r in results.items():
        total = r["cycle"] + r["decode"]
        cols = [
            f"{share(float(np.median(total)), hz, cpi):.1f} % / "
            f"{share(float(np.percentile(total, 90)), hz, cpi):.1f} %"
            for _, hz, cpi in BOARDS
        ]
        print(f"| {image} | {n} | " + " | ".join(cols) + " |")
    if parts:
        parts_table(results)


def parts_table(results: dict[tuple[str, int], dict[str, Any]]) -> None:
    """Each layer's median k instructions per cycle (--parts), and what the timed layers leave
    of the control cycle and of the frame decode (the cycle's glue, the receive loop)."""
    keys = list(results)
    print("\nPer layer, k instructions per cycle (median of the recorded cycles; the timing")
    print("wrappers' cost inside their window subtracted from each part, their whole cost from")
    print("the rests; medians do not add up exactly):\n")
    print("| part | " + " | ".join(f"{im}, {n} cells" for im, n in keys) + " |")
    print("|---|" + "---|" * len(keys))
    labels = list(dict.fromkeys(p[0] for p in PARTS))
    # The wrappers' cost is in the cycle's and the polls' figures: taken off the rests below.
    for label in [*labels, *WRAPPERS]:
        row = [f"{results[k]['parts'].get(label, 0.0):.0f}" for k in keys]
        print(f"| {label} | " + " | ".join(row) + " |")
    cyc = [float(np.median(results[k]["cycle"])) for k in keys]
    dec = [float(np.median(results[k]["decode"])) for k in keys]
    in_cycle = [
        sum(v for lb, v in results[k]["parts"].items() if not lb.startswith("decode")) for k in keys
    ]
    in_dec = [
        sum(v for lb, v in results[k]["parts"].items() if lb.startswith("decode")) for k in keys
    ]
    print(
        "| rest of the control cycle (glue) | "
        + " | ".join(f"{c - p:.0f}" for c, p in zip(cyc, in_cycle, strict=True))
        + " |"
    )
    print(
        "| rest of the frame decode (receive loop, dispatch) | "
        + " | ".join(f"{c - p:.0f}" for c, p in zip(dec, in_dec, strict=True))
        + " |"
    )


def heap_runs(cells: int, kib: int) -> bool:
    """True if the frozen firmware runs HEAP_STEPS cycles of `cells` cells in `kib` KiB."""
    try:
        with open_bench(cells=cells, target="qemu:an385", heap=f"{kib}K") as bench:
            bench.step_until(lambda s: s.closed, 40)
            errors = False
            for _ in range(HEAP_STEPS):
                bench.step(2.5)
                errors = errors or "InternalError" in bench.status.faults
            assert bench.dut is not None
            return bench.dut.alive() and bench.status.closed and not errors
    except Exception:  # noqa: BLE001 - failing to start or to answer is "does not fit"
        return False


def heap_table() -> None:
    """Smallest MICROPY_HEAP_SIZE per cell count (an385)."""
    print(f"\nSmallest MICROPY_HEAP_SIZE that runs {HEAP_STEPS} closed-loop cycles (an385):\n")
    print("| cells | smallest heap (frozen firmware, 32-bit) |")
    print("|---|---|")
    for cells in CELLS:
        kib = smallest(lambda k, c=cells: heap_runs(c, k), lo=16, hi=192)
        print(f"| {cells} | {kib} KiB |" if kib else f"| {cells} | does not fit 192 KiB |")


def main() -> None:
    """Print the tables recorded in BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=200, help="recorded cycles per row")
    ap.add_argument("--images", default="an385,an500", help="comma-separated image names")
    ap.add_argument("--cells", default=",".join(map(str, CELLS)), help="comma-separated")
    ap.add_argument("--heap", action="store_true", help="also bisect the smallest heap")
    ap.add_argument("--no-cycles", action="store_true", help="only the heap table")
    ap.add_argument(
        "--parts",
        action="store_true",
        help="also time each layer (its allocation figures then include the timing wrappers)",
    )
    args = ap.parse_args()
    reason = unavailable()
    if reason:
        sys.exit(f"mcu_cycle: cannot build the image: {reason}")
    t0 = time.time()
    print(f"machine: {platform.machine()}, {platform.node()}, {time.strftime('%Y-%m-%d')}")
    if not args.no_cycles:
        cells = tuple(int(c) for c in args.cells.split(","))
        cycle_tables(args.images.split(","), args.cycles, cells, args.parts)
    if args.heap:
        heap_table()
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
