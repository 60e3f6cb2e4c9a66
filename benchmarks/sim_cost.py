"""What a `cellguard sim` run costs: wall time and the size of every file it writes.

Runs the command (by default the one `make sim` runs) in a fresh folder and prints a markdown block
for README.md / BENCHMARKS.md: the machine, the load average before and after (the figures are
only comparable on a quiet machine), the wall time of the whole command (firmware start, the run,
the plots), the simulated time and speed from its summary, and each file's size.

Usage: python benchmarks/sim_cost.py [--out DIR] [-- extra cellguard sim options]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    """Run `cellguard sim`, print the cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="report folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more `cellguard sim` options (after --)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cellguard-sim-cost-"))
    cmd = [sys.executable, "-m", "hil.cli", "sim", "--no-progress", "--out", str(out), *args.extra]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    summary = json.loads((out / "summary.json").read_text())
    files = sorted(p for p in out.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"command: cellguard sim {' '.join(cmd[4:])}")
    print(f"load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(
        f"wall {wall:.0f} s for {summary['simulated_s'] / 3600:.2f} h simulated "
        f"(run {summary['wall_s']:.0f} s at {summary['realtime_ratio']:.0f}x real time, "
        f"start and report {wall - summary['wall_s']:.0f} s)"
    )
    print(f"written: {total / 1e6:.1f} MB in {len(files)} files")
    print()
    print("| file | MB |")
    print("|---|---:|")
    for p in files:
        print(f"| {p.name} | {p.stat().st_size / 1e6:.2f} |")
    report = sum(p.stat().st_size for p in files if p.suffix not in (".blf", ".asc"))
    print(f"| all but the CAN log | {report / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
