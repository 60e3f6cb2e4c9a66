"""`cellguard busload`: worst-case CAN bus load of the DBC's messages for a pack size."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil import DBC_PATH
from hil.cli.errors import UsageError
from hil.cli.options import load_dbc
from hil.toolchain.busload import bus_load, format_table

NAME = "busload"
HELP = "compute the worst-case CAN bus load per message, per sender and in total"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the busload options to `parser`."""
    parser.add_argument("--dbc", type=Path, default=DBC_PATH, help="DBC to analyse")
    parser.add_argument("--cells", type=int, default=192, help="cells in series")
    parser.add_argument(
        "--temps", type=int, default=None, help="temperature sensors (default: as many as cells)"
    )
    parser.add_argument("--bitrate", type=int, default=500_000, help="bit/s")
    parser.add_argument(
        "--control-period",
        type=int,
        default=100,
        help="ms; messages without a cycle time (SIM_Tick) go once per control period",
    )


def run(args: argparse.Namespace) -> int:
    """Print the bus load table; return the exit status."""
    temps = args.cells if args.temps is None else args.temps
    for option, value in (("--cells", args.cells), ("--temps", temps)):
        if value < 1:
            raise UsageError(f"{option} {value}: must be at least 1")
    db = load_dbc(args.dbc)
    try:
        rows = bus_load(db, args.cells, temps, args.bitrate, args.control_period)
    except ValueError as e:
        raise UsageError(f"--cells {args.cells}: {e}") from None
    print(
        f"{args.dbc.name}: {args.cells} cells, {temps} temperature sensors, "
        f"{args.bitrate / 1000:g} kbit/s, control period {args.control_period} ms, "
        "worst-case bit stuffing"
    )
    print(format_table(rows))
    return 0
