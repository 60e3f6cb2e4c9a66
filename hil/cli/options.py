"""Options the `cellguard` commands share, checked before anything runs.

Each checker raises `UsageError` with one line naming the option, the file and, for JSON, the line
and column: heap sizes, JSON files, firmware configurations (validated on the desktop with the
firmware's own rules, `firmware/config.py` under CPython, so a file the board would refuse is
refused here first, with the same words), report folders, output files and TCP ports.

Usage:
    parser.add_argument("--heap", type=heap_size, default=DEFAULT_HEAP)
    overrides = config_file(args.config, owned={"cell_count": "--cells"})
    check_firmware_config(config, f"--config {args.config}", {"cell_count": "--cells 0"})
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

from hil.cli.errors import UsageError

_HEAP = re.compile(r"^[1-9][0-9]*[KM]?$")


def heap_size(text: str) -> str:
    """argparse type of `--heap`: bytes, or KiB with K (168K), or MiB with M, as MicroPython's
    `-X heapsize` takes them."""
    value = text.strip().upper()
    if not _HEAP.match(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a heap size (bytes, or KiB with K such as 168K, or MiB with M)"
        )
    return value


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of `path`; UsageError names `what` (the option), the file, and the line and
    column of a syntax error."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read it: {_reason(e)}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not a text (JSON) file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} {path}: line {e.lineno} column {e.colno}: {e.msg}") from None


def read_json_object(path: Path, what: str, holding: str) -> dict[str, Any]:
    """`read_json` of a file that must hold one JSON object (of `holding`, for the message)."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
            type(data), "a number"
        )
        raise UsageError(
            f'{what} {path}: must hold one JSON object of {holding} ({{"key": value, ...}}), '
            f"not {kind}"
        )
    return data


def config_file(path: Path | None, owned: dict[str, str] | None = None) -> dict[str, Any]:
    """Firmware configuration overrides from `--config FILE` (empty without one). `owned` maps
    the keys a command-line option sets to that option: the file may not set them too."""
    if path is None:
        return {}
    overrides = read_json_object(path, "--config", "firmware configuration keys")
    for key, option in (owned or {}).items():
        if key in overrides:
            raise UsageError(
                f"--config {path}: key '{key}' is set by {option}; leave it out of the file"
            )
    return overrides


_KEY = re.compile(r"^config key '([^']+)': (.*)$")


def check_firmware_config(
    config: dict[str, Any], source: str, blame: dict[str, str] | None = None
) -> Any:
    """Validate `config` with the firmware's own loader (`firmware.config.load`, under CPython).

    A refusal raises UsageError with the firmware's message, put on what gave the value: `blame`
    maps a configuration key (or "profile") to the option that set it (e.g. "cell_count" to
    "--cells 0"); any other key is put on `source` (e.g. "--config my.json"). Returns the
    firmware's `Config` (every key resolved, defaults and derived values included)."""
    from firmware import config as fw_config

    try:
        return fw_config.load(config)
    except ValueError as e:
        message = str(e)
        blame = blame or {}
        m = _KEY.match(message)
        if m and m.group(1) in blame:
            raise UsageError(f"{blame[m.group(1)]}: {m.group(2)}") from None
        if message.startswith("profile") and "profile" in blame:
            raise UsageError(f"{blame['profile']}: {message}") from None
        raise UsageError(f"{source}: {message}") from None


def output_folder(path: Path, option: str = "--out") -> Path:
    """Create the report folder `path` (and its parents) now, so a bad one fails before the run."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{option} {path}: exists and is not a folder") from None
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the folder: {_reason(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder is not writable")
    return path


def output_file(path: Path, option: str = "--out") -> Path:
    """Check before the run that `path` can be written: its folder exists and is writable, and it
    is not a folder itself."""
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder, not a file")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")
    return path


def free_tcp_port(port: int, option: str = "--port") -> int:
    """Check that a server can listen on 127.0.0.1:`port` (bound the way the sim board binds it,
    SO_REUSEADDR, so a port in TIME_WAIT counts as free as it does for the board)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"{option} {port}: must be in 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"{option} {port}: already in use on 127.0.0.1 (another cellguard serve?); "
                    "choose another port"
                ) from None
            raise UsageError(f"{option} {port}: cannot listen there: {_reason(e)}") from None
    return port


def load_dbc(path: Path, option: str = "--dbc") -> Any:
    """The cantools database of `path`; UsageError names the file when it cannot be read or
    parsed."""
    import cantools

    try:
        return cantools.database.load_file(str(path), database_format="dbc")
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot read it: {_reason(e)}") from None
    except Exception as e:  # noqa: BLE001 - cantools raises its own parse errors (and others)
        first = str(e).strip().splitlines() or [type(e).__name__]
        raise UsageError(f"{option} {path}: not a DBC cantools reads: {first[0]}") from None
