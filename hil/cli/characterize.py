"""`cellguard characterize`: fit a cell profile (JSON) from C/20 and HPPC lab traces."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.cellmodel.characterize import (
    DEFAULT_MAX_RESIDUAL_MV,
    KINDS,
    CharacterizeError,
    LabFile,
    characterize,
)
from hil.cellmodel.traces import TraceError, describe_gaps, read_trace
from hil.cli.errors import Failure, UsageError
from hil.cli.options import output_file
from sim.cells import CHEMISTRIES

NAME = "characterize"
LAB_GAP_S = 600.0
"""Gaps in a lab file longer than this are noted (not refused)."""
HELP = (
    "fit a cell profile (docs/profiles.md) from C/20 discharge/charge and HPPC traces "
    "(CSV: time_s,current_a,voltage_v,temperature_c; current positive = discharge), one set "
    "per test temperature (--temperature after a file declares its test temperature; files "
    "without one are grouped by their median temperatures within a few degC)"
)


class _File(argparse.Action):
    """Appends (kind, path, None) to `files` in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        files = list(getattr(namespace, "files", None) or [])
        files.append([self.const, values, None])
        namespace.files = files


class _Temperature(argparse.Action):
    """Declares the test temperature of the file named just before it."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        files = getattr(namespace, "files", None) or []
        if not files or files[-1][2] is not None:
            parser.error(f"{option_string} {values:g}: follows no file (put it after the file)")
        files[-1][2] = values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the characterize options to `parser`."""
    parser.set_defaults(files=[])
    files = {"action": _File, "type": Path, "metavar": "CSV", "dest": "files"}
    parser.add_argument(
        "--c20-discharge", const=KINDS[0], **files, help="C/20 discharge from full (repeat)"
    )
    parser.add_argument(
        "--c20-charge", const=KINDS[1], **files, help="C/20 charge from empty (repeat)"
    )
    parser.add_argument("--hppc", const=KINDS[2], **files, help="HPPC test starting full (repeat)")
    parser.add_argument(
        "--temperature",
        action=_Temperature,
        type=float,
        metavar="DEGC",
        dest="files",
        help="the test (chamber) temperature of the file just before (default: grouped by the "
        "files' median temperatures)",
    )
    parser.add_argument("--chemistry", required=True, choices=sorted(CHEMISTRIES))
    parser.add_argument("--name", required=True, help="free-text cell name")
    parser.add_argument("--source", default="", help="where the data came from")
    parser.add_argument("--voltage-min", type=float, help="V (default: the chemistry's)")
    parser.add_argument("--voltage-max", type=float, help="V (default: the chemistry's)")
    parser.add_argument(
        "--max-residual-mv",
        type=float,
        default=DEFAULT_MAX_RESIDUAL_MV,
        help="refuse an OCV that misses its own C/20 files by more (RMS mV, SOC 10-90 %%)",
    )
    parser.add_argument("--out", type=Path, required=True, help="profile JSON to write")


def run(args: argparse.Namespace) -> int:
    """Fit, write the profile and print the summary. A malformed trace is a usage error (2); a
    fit refused for its residual a failure (1)."""
    output_file(args.out)
    chem = CHEMISTRIES[args.chemistry]
    if not args.files:
        raise UsageError("characterize: no lab files (--c20-discharge, --c20-charge, --hppc)")
    files = [str(path) for _, path, _ in args.files]
    try:
        lab = [LabFile(kind, read_trace(path), temp) for kind, path, temp in args.files]
        for f in lab:
            # Lab logs step 60 s in slow tests: only a pause that long is worth a note.
            note = describe_gaps(f.trace, LAB_GAP_S)
            if note:
                print(f"note: {note}")
        profile = characterize(
            lab,
            name=args.name,
            chemistry=args.chemistry,
            source=args.source or "cellguard characterize of " + ", ".join(files),
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
    print("RMS voltage residual of the re-simulated model per file and SOC band (mV):")
    for path, bands in profile.fit["rms_residual_mv_by_soc_band"].items():
        print(f"  {path}: " + ", ".join(f"{k} {v:.1f}" for k, v in bands.items()))
    return 0
