"""`cellguard replay`: run the firmware's estimator over a recorded trace, optionally scored."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from hil.bench.dut import DEFAULT_HEAP, firmware_message
from hil.cellmodel.replay import (
    TraceError,
    accuracy,
    firmware_config,
    read_trace,
    read_truth,
    replay,
    write_estimates,
)
from hil.cellmodel.traces import describe_gaps
from hil.cli.errors import Failure, UsageError
from hil.cli.options import (
    check_firmware_config,
    config_file,
    heap_size,
    output_file,
    read_json_object,
)

NAME = "replay"
HELP = (
    "run the firmware (MicroPython, as on a board) over TRACE.csv and write its SOC estimates; "
    "with --truth print RMSE, max error and time to converge within 2 %"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replay options to `parser`."""
    parser.add_argument("trace", type=Path, help="measurement trace CSV (format: docs/replay.md)")
    parser.add_argument("--profile", type=Path, required=True, help="cell profile JSON")
    parser.add_argument("--out", type=Path, required=True, help="estimates CSV to write")
    parser.add_argument("--truth", type=Path, help="true SOC CSV: time_s,soc_true[_1..N]")
    parser.add_argument(
        "--initial-soc",
        type=float,
        metavar="PCT",
        help="start from this SOC (as if restored, 30 %% error bound) instead of from OCV",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="firmware configuration overrides: a JSON object of firmware/config.py keys "
        "(cell_count and temp_count come from the trace, the profile from --profile)",
    )
    parser.add_argument(
        "--heap",
        type=heap_size,
        default=None,
        help=f"MicroPython heap (board budget; default {DEFAULT_HEAP} on the unix port, the "
        "smallest full-firmware board budget on the image)",
    )
    parser.add_argument(
        "--dut",
        default="unix",
        help="where the firmware runs: unix (the unix port) or qemu[:IMAGE] (the Cortex-M image; "
        "qemu:an500 has the FPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")


OWNED_KEYS = {
    "cell_count": "the trace's voltage columns",
    "temp_count": "the trace's temperature columns",
    "profile": "--profile",
}


def run(args: argparse.Namespace) -> int:
    """Replay, write the estimates, print the figures. Every input is checked before the run
    (exit 2, one line naming the file and line or key); a firmware that stops exits 1."""
    output_file(args.out)
    if args.initial_soc is not None and not 0 <= args.initial_soc <= 100:
        raise UsageError(f"--initial-soc {args.initial_soc:g}: must be in 0..100")
    try:
        trace = read_trace(args.trace)
        truth = read_truth(args.truth, trace.cells) if args.truth else None
    except TraceError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"{e.filename}: cannot read it: {e.strerror}") from None
    if trace.gaps:
        print(
            f"note: {describe_gaps(trace)}: the firmware holds each sample over it", file=sys.stderr
        )
    profile = read_json_object(args.profile, "--profile", "cell profile keys")
    overrides = config_file(args.config, OWNED_KEYS)
    config = firmware_config(profile, trace, overrides)
    check_firmware_config(
        config, source=f"--config {args.config}", blame={"profile": f"--profile {args.profile}"}
    )
    with tqdm(
        total=len(trace.time_s), unit="sample", disable=len(trace.time_s) < 20000, file=sys.stderr
    ) as bar:
        try:
            est = replay(
                trace,
                config,
                initial_soc_pct=args.initial_soc,
                heap=args.heap,
                progress=lambda k: bar.update(k - bar.n),
                target=args.dut,
            )
        except RuntimeError as e:
            first, _, console = str(e).partition("\n")
            reason = firmware_message(console)
            size = f"--heap {args.heap}" if args.heap else "the default heap"
            hint = f" ({size} too small?)" if "MemoryError" in reason else ""
            raise Failure(f"{first.rstrip(':')}: {reason}{hint}") from None
    write_estimates(args.out, est, trace.single)
    figures: dict[str, object] = {"samples": len(trace.time_s), "out": str(args.out)}
    if truth is not None:
        try:
            figures.update(accuracy(est, *truth))
        except TraceError as e:
            raise UsageError(f"--truth {args.truth}: {e}") from None
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0
