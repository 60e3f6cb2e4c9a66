"""`cellguard characterize`: fit a cell profile (JSON) from C/20 and HPPC lab traces."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.cellmodel.characterize import DEFAULT_MAX_RESIDUAL_MV, CharacterizeError, characterize
from hil.cellmodel.traces import TraceError
from hil.cli.errors import Failure, UsageError
from hil.cli.options import output_file
from sim.cells import CHEMISTRIES

NAME = "characterize"
HELP = (
    "fit a cell profile (docs/profiles.md) from C/20 discharge/charge and HPPC traces "
    "(CSV: time_s,current_a,voltage_v,temperature_c; current positive = discharge), one set "
    "per test temperature"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the characterize options to `parser`."""
    files = {"action": "append", "type": Path, "required": True, "metavar": "CSV"}
    parser.add_argument("--c20-discharge", **files, help="C/20 discharge from full (repeat)")
    parser.add_argument("--c20-charge", **files, help="C/20 charge from empty (repeat)")
    parser.add_argument("--hppc", **files, help="HPPC test starting full (repeat)")
    parser.add_argument("--chemistry", required=True, choices=sorted(CHEMISTRIES))
    parser.add_argument("--name", required=True, help="free-text cell name")
    parser.add_argument("--source", default="", help="where the data came from")
    parser.add_argument("--voltage-min", type=float, help="V (default: the chemistry's)")
    parser.add_argument("--voltage-max", type=float, help="V (default: the chemistry's)")
    parser.add_argument(
        "--max-residual-mv",
        type=float,
        default=DEFAULT_MAX_RESIDUAL_MV,
        help="refuse a fit whose re-simulation misses any file by more (RMS mV, SOC 10-90 %%)",
    )
    parser.add_argument("--out", type=Path, required=True, help="profile JSON to write")


def run(args: argparse.Namespace) -> int:
    """Fit, write the profile and print the summary. A malformed trace is a usage error (2); a
    fit refused for its residual a failure (1)."""
    output_file(args.out)
    chem = CHEMISTRIES[args.chemistry]
    files = [*args.c20_discharge, *args.c20_charge, *args.hppc]
    try:
        profile = characterize(
            args.c20_discharge,
            args.c20_charge,
            args.hppc,
            name=args.name,
            chemistry=args.chemistry,
            source=args.source or "cellguard characterize of " + ", ".join(map(str, files)),
            voltage_min_v=chem.v_min_v if args.voltage_min is None else args.voltage_min,
            voltage_max_v=chem.v_max_v if args.voltage_max is None else args.voltage_max,
            max_residual_mv=args.max_residual_mv,
        )
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    except CharacterizeError as exc:
        raise Failure(str(exc)) from None
    profile.to_json(args.out)
    print(f"{args.out}: {profile.name} ({profile.chemistry}), {profile.capacity_ah:.4f} Ah")
    print(
        f"coulombic efficiency {profile.coulombic_efficiency:.4f}, hysteresis rate "
        f"{profile.hysteresis_rate_per_ah:g}/Ah, temperatures {profile.temperature_c} degC"
    )
    print("RMS voltage residual of the re-simulated model per file (whole file / SOC 10-90 %):")
    interior = profile.fit["rms_residual_mv_soc_10_90"]
    for path, mv in profile.fit["rms_residual_mv"].items():
        print(f"  {mv:7.2f} / {interior[path]:6.2f} mV  {path}")
    return 0
