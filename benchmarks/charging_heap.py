"""Heap the DC-charging stack takes on a board: importing firmware/charging.py (with its generated
codec and its J1939 transport) from a board's bytecode bundle, on the unix port.

The charging service is built only on a board with a charger CAN channel; this is what it adds
to the firmware's heap there (on the 64-bit unix port: divide by about 1.2 for a 32-bit board,
hil.bench.dut.UNIX64_PER_BOARD32). docs/charging.md quotes it for the stm32f4 and esp32 budgets.

Usage: python benchmarks/charging_heap.py [BOARD ...]   (default: sim stm32f4 esp32)
"""

from __future__ import annotations

import platform
import sys
import time

from hil.bench.dut import import_footprint

MODULES = (["firmware.j1939tp"], ["firmware.gbt_codec"], ["firmware.charging"])


def main() -> int:
    """Print the import footprint of each charging module per board bundle."""
    boards = sys.argv[1:] or ["sim", "stm32f4", "esp32"]
    print(f"machine: {platform.machine()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print("| board bundle | j1939tp | gbt_codec | charging (all three) |")
    print("|---|---|---|---|")
    for board in boards:
        cells = [f"{import_footprint(m, board)} B" for m in MODULES]
        print(f"| {board} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
