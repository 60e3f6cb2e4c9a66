"""Firmware images of a board's bundle for the update over CAN (UDS 0x34/0x36/0x37).

`bundle_image(board, secret)` packs the firmware package of the board's mpy-cross bundle
(`hil.toolchain.build`) into the image format of firmware/slots.py, signed for one board;
`version` recompiles firmware/__init__.py with another `__version__` (what DID F195 reports),
`replace` swaps module sources (a test's deliberately broken image).

Usage:
    image = bundle_image("sim", read_key_file(dut.key_file), version="0.1.1")
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from hil import REPO_ROOT
from hil.bench.provision import build_image, firmware_files
from hil.toolchain.build import board_profile, build_bundle, mpy_cross_binary


def compile_module(name: str, source: str, board: str = "sim") -> bytes:
    """mpy-cross output of `source` as firmware/<name>.py for `board`'s architecture."""
    arch = (board_profile(board) or {}).get("arch")
    march = [f"-march={arch}"] if arch else []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.py"
        out = Path(tmp) / f"{name}.mpy"
        src.write_text(source)
        cmd = mpy_cross_binary() + march + ["-s", f"firmware/{name}.py", "-o", str(out), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)
        return out.read_bytes()


def bundle_image(
    board: str,
    secret: bytes,
    *,
    version: str | None = None,
    replace: dict[str, str] | None = None,
) -> bytes:
    """The signed image of `board`'s firmware package (see the module docstring)."""
    files = firmware_files(build_bundle(board))
    sources = dict(replace or {})
    if version is not None:
        init = (REPO_ROOT / "firmware" / "__init__.py").read_text()
        old = init.split("__version__ = ", 1)[1].split()[0]
        sources["__init__"] = init.replace(f"__version__ = {old}", f"__version__ = {version!r}")
    for name, source in sources.items():
        files[f"firmware/{name}.mpy"] = compile_module(name, source, board)
    return build_image(files, secret)
