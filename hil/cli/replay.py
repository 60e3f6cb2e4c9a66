"""`cellguard replay`: run the firmware's estimator over a recorded trace, optionally scored."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from hil.bench.dut import DEFAULT_HEAP
from hil.cellmodel.replay import (
    TraceError,
    accuracy,
    firmware_config,
    read_trace,
    read_truth,
    replay,
    write_estimates,
)

NAME = "replay"
HELP = (
    "run the firmware (MicroPython, as on a board) over TRACE.csv and write its SOC estimates; "
    "with --truth print RMSE, max error and time to converge within 2 %%"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replay options to `parser`."""
    parser.add_argument("trace", type=Path, help="measurement trace CSV (see docs/estimation.md)")
    parser.add_argument("--profile", type=Path, required=True, help="cell profile JSON")
    parser.add_argument("--out", type=Path, required=True, help="estimates CSV to write")
    parser.add_argument("--truth", type=Path, help="true SOC CSV: time_s,soc_true[_1..N]")
    parser.add_argument(
        "--initial-soc",
        type=float,
        metavar="PCT",
        help="start from this SOC (as if restored, 30 %% error bound) instead of from OCV",
    )
    parser.add_argument("--config", type=Path, help="firmware configuration overrides JSON")
    parser.add_argument(
        "--heap",
        default=None,
        help=f"MicroPython heap (default {DEFAULT_HEAP} on the unix port, the smallest board "
        "budget on the image)",
    )
    parser.add_argument(
        "--dut",
        default="unix",
        help="where the firmware runs: unix (the unix port) or qemu[:IMAGE] (the Cortex-M image; "
        "qemu:an500 has the FPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")


def run(args: argparse.Namespace) -> int:
    """Replay, write the estimates, print the figures; 2 on a malformed input."""
    try:
        trace = read_trace(args.trace)
        truth = read_truth(args.truth, trace.cells) if args.truth else None
        profile = json.loads(args.profile.read_text())
        overrides = json.loads(args.config.read_text()) if args.config else None
    except (TraceError, OSError, json.JSONDecodeError) as e:
        print(f"cellguard replay: {e}", file=sys.stderr)
        return 2
    config = firmware_config(profile, trace, overrides)
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
        except (TraceError, RuntimeError) as e:
            print(f"cellguard replay: {e}", file=sys.stderr)
            return 2
    write_estimates(args.out, est, trace.single)
    figures: dict[str, object] = {"samples": len(trace.time_s), "out": str(args.out)}
    if truth is not None:
        try:
            figures.update(accuracy(est, *truth))
        except TraceError as e:
            print(f"cellguard replay: {e}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0
