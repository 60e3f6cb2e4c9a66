"""`cellguard diag`: a UDS workshop tester for the BMS over any python-can bus.

    cellguard diag [--can slcan:socket://127.0.0.1:29536] [--key-file F] [--cells N] COMMAND
      dtc [--all]              DTCs with status, occurrences and freeze frame
      clear [--dtc P1A00]      clear the fault memory (security access: --key-file)
      read DID                 a DID by name (vin, pack, cell_ov_mv, cell_mv[0]) or hex (F190)
      write DID VALUE          a writable DID (VIN, configuration keys; applied at the next reset)
      routine NAME [BYTE ...]  run a routine (contactor_test [hold 0.1 s], balance_test CELL
                               [s], soc_reanchor) and wait for its result (--no-wait)
      reset [--soft]           ECU reset
      flash --can ... IMAGE|--board NAME   update the firmware over CAN (progress bar)
      live [--period S]        a refreshing table of the live data

`--key-file` is the board's provisioning record (`cellguard serve` prints where the sim board's
is; `cellguard flash --provision` keeps real boards' under ~/.cellguard/keys). A negative
response is printed with its code and name, exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hil.cli.errors import UsageError

NAME = "diag"
HELP = "UDS diagnostics over CAN: DTCs, clear, DIDs, routines, reset, flash, live data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cellguard diag`."""
    helps = {
        "--can": "python-can bus INTERFACE:CHANNEL[@BITRATE] (default slcan:socket://127.0.0.1:29536,"
        " the port `cellguard serve` prints)",
        "--key-file": "the board's provisioning record, for the commands that need security "
        "access (`cellguard serve` prints the sim board's)",
        "--cells": "cells in series (default 16)",
    }
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--can", default=argparse.SUPPRESS, help=helps["--can"])
    common.add_argument("--key-file", default=argparse.SUPPRESS, help=helps["--key-file"])
    common.add_argument("--cells", type=int, default=argparse.SUPPRESS, help=helps["--cells"])
    parser.add_argument("--can", default="slcan:socket://127.0.0.1:29536", help=helps["--can"])
    parser.add_argument("--key-file", default=None, help=helps["--key-file"])
    parser.add_argument("--cells", type=int, default=16, help=helps["--cells"])
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    p = sub.add_parser("dtc", parents=[common], help="DTCs with status and freeze frames")
    p.add_argument("--all", action="store_true", help="every supported DTC, not only stored")
    p = sub.add_parser("clear", parents=[common], help="clear the fault memory")
    p.add_argument("--dtc", default=None, help="only this DTC (e.g. P1A00)")
    p = sub.add_parser("read", parents=[common], help="read a DID")
    p.add_argument("did")
    p = sub.add_parser("write", parents=[common], help="write a DID")
    p.add_argument("did")
    p.add_argument("value")
    p = sub.add_parser("routine", parents=[common], help="run a routine")
    p.add_argument("name")
    p.add_argument("option", nargs="*", type=int, help="option record bytes (0..255)")
    p.add_argument("--no-wait", action="store_true", help="print the start's record only")
    p = sub.add_parser("reset", parents=[common], help="ECU reset")
    p.add_argument("--soft", action="store_true")
    p = sub.add_parser("flash", parents=[common], help="firmware update over CAN")
    p.add_argument("image", nargs="?", help="an image file (hil.bench.image)")
    p.add_argument("--board", default=None, help="build the image of this board's bundle")
    p = sub.add_parser("live", parents=[common], help="refreshing live data")
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("--count", type=int, default=0, help="stop after this many tables (0: never)")


def _bus(description: str):  # type: ignore[no-untyped-def]
    """The python-can bus `--can` describes; a description or a bus that does not open is one
    line naming the option."""
    import can

    from hil.cli.errors import Failure

    interface, _, channel = description.partition(":")
    if not channel:
        raise UsageError(f"--can {description}: not INTERFACE:CHANNEL[@BITRATE]")
    kwargs: dict[str, object] = {"interface": interface, "channel": channel}
    if "@" in channel and not channel.startswith("socket://"):
        kwargs["channel"], _, rate = channel.rpartition("@")
        if not rate.isdigit():
            raise UsageError(f"--can {description}: bitrate {rate!r} is not a number")
        kwargs["bitrate"] = int(rate)
    if interface == "slcan":
        kwargs["sleep_after_open"] = 0
    try:
        return can.Bus(**kwargs)
    except can.CanInterfaceNotImplementedError as e:
        raise UsageError(f"--can {description}: {e}") from None
    except (can.CanError, OSError) as e:
        hint = " (is `cellguard serve` running?)" if "socket://" in channel else ""
        raise Failure(f"--can {description}: {e}{hint}") from None


def _scaled(name: str, value: int) -> str:
    """A raw firmware integer with its unit (the attribute name carries it)."""
    if name.endswith("_mv"):
        return f"{value / 1000:.3f} V"
    if name.endswith("_ma"):
        return f"{value / 1000:.3f} A"
    if name.endswith("_dc"):
        return f"{value / 10:.1f} degC"
    if name in ("soc", "soc_bound", "soh_cap", "soh_res"):
        return f"{value / 100:.2f} %"
    if name.endswith("_conf"):
        return f"{value} %"
    if name.endswith("_s"):
        return f"{value} s"
    return str(value)


_UNIT_SUFFIX = {"_mv": "_v", "_ma": "_a", "_dc": "_c"}


def _label(name: str) -> str:
    """The name a scaled value is shown under: the unit in it is the one shown (cell_min_mv
    shown in V is cell_min_v)."""
    for raw, shown in _UNIT_SUFFIX.items():
        if name.endswith(raw):
            return name[: -len(raw)] + shown
    return name


def _show(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{_label(k)}={_scaled(k, int(v))}" for k, v in value.items())
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Run one diagnostic command."""
    from udsoncan.exceptions import NegativeResponseException, TimeoutException

    from hil.bench.diag import DiagClient
    from hil.bench.provision import read_key_file

    # udsoncan logs each negative response as a warning: the one line below says it already
    logging.getLogger("UdsClient").addHandler(logging.NullHandler())
    logging.getLogger("UdsClient").propagate = False
    secret = read_key_file(args.key_file) if args.key_file else None
    bus = _bus(args.can)
    try:
        with DiagClient(bus, secret=secret, cell_count=args.cells) as diag:
            if secret is None and args.action in _SECURED:
                raise UsageError(
                    f"{args.action} needs security access: --key-file (the board's provisioning "
                    "record; `cellguard serve` prints the sim board's)"
                )
            return _act(diag, args)
    except NegativeResponseException as e:
        r = e.response
        why = " (e.g. a contactor is closed)" if r.code == 0x22 else ""
        print(
            f"cellguard diag: negative response 0x{r.code:02X} {r.code_name}{why}; what each "
            "service needs: docs/diagnostics.md",
            file=sys.stderr,
        )
        return 1
    except TimeoutException as e:
        print(f"cellguard diag: no answer: {e}", file=sys.stderr)
        return 1
    finally:
        bus.shutdown()


_SECURED = ("clear", "write", "flash")
"""Commands whose service needs security access (docs/diagnostics.md)."""


def _did(diag, name: str):  # type: ignore[no-untyped-def]
    """The DID `name` names, or one line saying it names none."""
    try:
        return diag.resolve(name)
    except KeyError:
        names = sorted(n for n, d in diag.by_name.items() if d.kind != "C" and "[" not in n)
        raise UsageError(
            f"DID {name!r}: unknown (a hex number, a firmware/config.py key or one of "
            f"{', '.join(names)}; docs/diagnostics.md)"
        ) from None


def _dtc_bit(code: str) -> int:
    """The fault bit of a DTC code such as P1A0C (`hil.bench.diag.dtc_code`)."""
    from hil.bench.diag import dtc_code

    try:
        bit = int(code[3:], 16)
    except ValueError:
        bit = -1
    if not 0 <= bit <= 0xFF or dtc_code(bit) != code.upper():
        raise UsageError(f"--dtc {code}: not a cellguard DTC ({dtc_code(0)}..{dtc_code(0xFF)})")
    return bit


def _act(diag, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    a = args.action
    if a == "dtc":
        entries = diag.supported_dtcs() if args.all else diag.dtcs(mask=0x2F)
        if not entries:
            print("no DTCs stored")
        for d in entries:
            print(f"{d.code} {d.name:<24} status 0x{d.status:02X} {d.status_text()}")
            if d.count:
                print(f"    occurrences {d.count}, first {d.first_s} s, last {d.last_s} s")
            if d.freeze:
                print("    freeze frame: " + _show(d.freeze))
        return 0
    if a == "clear":
        bit = None if args.dtc is None else _dtc_bit(args.dtc)
        diag.clear(bit)
        print("cleared (faults still active stay stored)")
        return 0
    if a == "read":
        _did(diag, args.did)
        value = diag.read(args.did)
        print(_show(value) if value != "" else "(empty)")
        return 0
    if a == "write":
        d = _did(diag, args.did)
        try:
            value: object = args.value if d.kind == "S" else int(args.value, 0)
        except ValueError:
            raise UsageError(f"{d.name} {args.value!r}: not an integer") from None
        diag.write(args.did, value)
        note = "; takes effect at the next ECU reset" if d.kind == "C" else ""
        print(f"{d.name} written{note}")
        return 0
    if a == "routine":
        from hil.bench.diag import routine_table

        if args.name not in routine_table():
            known = ", ".join(sorted(routine_table()))
            raise UsageError(f"routine {args.name!r}: unknown (one of {known})")
        if routine_table()[args.name][2] and diag.secret is None:
            raise UsageError(f"routine {args.name} needs security access: --key-file")
        from hil.bench.diag import ROUTINE_STATUS

        if any(not 0 <= b <= 255 for b in args.option):
            raise UsageError(f"routine {args.name}: option bytes are 0..255")
        wait = 0.0 if args.no_wait or args.name == "check_image" else 120.0
        status = diag.routine(args.name, bytes(args.option), wait_s=wait)
        known = args.name != "check_image" and status and status[0] < len(ROUTINE_STATUS)
        word = ROUTINE_STATUS[status[0]] if known else ""
        print(f"{args.name}: {word + ' ' if word else ''}record {status.hex() or '-'}")
        return 0
    if a == "reset":
        diag.reset(hard=not args.soft)
        print("reset")
        return 0
    if a == "flash":
        return _flash(diag, args)
    n = 0
    for values in _refresh(diag, args.period):
        print("\033[2J\033[H" + time.strftime("%H:%M:%S"))
        for k, v in values.items():
            print(f"  {_label(k):<22} {_scaled(k, int(v))}")
        n += 1
        if args.count and n >= args.count:
            break
    return 0


def _refresh(diag, period: float):  # type: ignore[no-untyped-def]
    from hil.bench.diag import iter_refresh

    return iter_refresh(diag, period)


def _flash(diag, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from tqdm import tqdm

    if diag.secret is None:
        raise SystemExit("cellguard diag flash: needs --key-file (images are signed per board)")
    if args.image:
        image = Path(args.image).read_bytes()
    else:
        from hil.bench.image import bundle_image

        image = bundle_image(args.board or "sim", diag.secret)
    bar = tqdm(total=len(image), unit="B", unit_scale=True, desc="flash")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    ok = diag.flash(image, progress)
    bar.close()
    print("switched: the new image runs on trial until its first cycles" if ok else "refused")
    return 0 if ok else 1
