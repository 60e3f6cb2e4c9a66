"""The Cortex-M image: MicroPython v1.28.0's `qemu` port with the firmware frozen into it.

A production board ships its MicroPython with the application frozen in: bytecode in flash, only
the objects the code creates in the heap. This module builds that image for QEMU's emulated MPS2
machines, as the bench's `--dut qemu` runs it:

- `an385`: MPS2_AN385, Cortex-M3, no FPU (soft-float ABI; the port's default float32 in software);
- `an500`: MPS2_AN500 with MICROPY_FLOAT_IMPL=float, Cortex-M7 with its FPU doing single
  precision, like the STM32F413 and the ESP32.

The source is the tarball `../shared/vendor/micropython-1.28.0.tar.xz` beside the repository (or
beside the main checkout, for a git worktree), else `$MICROPYTHON_SRC` (a checkout of the upstream
tag v1.28.0, or that tarball). mpy-cross is built from the same source; the frozen manifest is
generated from the qemu board's bundle (`hil.toolchain.build.bundle_sources("qemu")`:
firmware/*.py, the qemu board module and the board modules it imports) and the replay board,
with `main.py` as the module `main`. The heap is MicroPython's static GC heap
(MICROPY_HEAP_SIZE), by default the smallest budget of the boards that run the whole firmware
(`hil.toolchain.build.smallest_budget`).

Images are cached under `build/qemu-<variant>-<heap>-<hash>/firmware.elf`, keyed by the source,
the toolchain, the variant, the heap and the frozen files; a file lock makes parallel test workers
wait for one build. Each variant keeps an incremental work folder, so a firmware change only
re-freezes and re-links (about 10 s), and another heap size recompiles main.c, the one file that
uses it.

Usage:
    elf = build_image("an385")                      # heap: the smallest full-firmware budget
    elf = build_image("an500", heap=192 * 1024)
    python -m hil.toolchain.image check             # one line: why the image cannot be built
    python -m hil.toolchain.image build an500 --heap 192K
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hil import REPO_ROOT
from hil.toolchain.build import BUILD_DIR, bundle_sources, heap_bytes, smallest_budget

VERSION = "1.28.0"
TARBALL = f"micropython-{VERSION}.tar.xz"
SOURCE_ENV = "MICROPYTHON_SRC"
PACKAGES = ("qemu-system-arm", "gcc-arm-none-eabi", "libnewlib-arm-none-eabi")
INSTALL = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)


class ImageError(RuntimeError):
    """The image cannot be built (no source, no toolchain) or its build failed."""


@dataclass(frozen=True)
class Variant:
    """One image: a qemu-port board and the machine QEMU emulates for it."""

    name: str
    board: str
    machine: str
    cpu: str
    float_impl: str
    make_args: tuple[str, ...] = ()


VARIANTS = {
    "an385": Variant(
        "an385", "MPS2_AN385", "mps2-an385", "Cortex-M3", "float32 in software (no FPU)"
    ),
    "an500": Variant(
        "an500",
        "MPS2_AN500",
        "mps2-an500",
        "Cortex-M7",
        "float32 on the FPU",
        ("MICROPY_FLOAT_IMPL=float",),
    ),
}
DEFAULT_VARIANT = "an385"
COMMON_MAKE_ARGS = (
    "CFLAGS_EXTRA=-DMICROPY_OPT_COMPUTED_GOTO=1 -DMICROPY_OBJ_REPR=MICROPY_OBJ_REPR_C",
)
"""What every image adds to the qemu port's defaults: the bytecode dispatch of the stm32 and
esp32 ports (their mpconfigport.h enable computed goto; the qemu port leaves it off)."""


def variant(name: str) -> Variant:
    """The variant called `name`; ImageError naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ImageError(f"no image {name!r}; known: {', '.join(VARIANTS)}") from None


# ---- what is needed -----------------------------------------------------------------------------
def _vendor_candidates() -> Iterator[Path]:
    yield REPO_ROOT.parent / "shared" / "vendor" / TARBALL
    git = REPO_ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: <main checkout>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().partition(":")[2].strip())
        yield gitdir.parent.parent.parent.parent / "shared" / "vendor" / TARBALL


def find_source() -> Path | None:
    """The MicroPython source to build from (a tarball or a checkout), or None."""
    for path in _vendor_candidates():
        if path.is_file():
            return path
    env = os.environ.get(SOURCE_ENV)
    return Path(env) if env else None


def missing_packages() -> list[str]:
    """The Debian packages of PACKAGES (and make) that this machine lacks."""
    missing = []
    if not shutil.which("qemu-system-arm"):
        missing.append("qemu-system-arm")
    gcc = shutil.which("arm-none-eabi-gcc")
    if not gcc:
        missing.append("gcc-arm-none-eabi")
    if not gcc or not _has_newlib(gcc):
        missing.append("libnewlib-arm-none-eabi")
    if not shutil.which("make"):
        missing.append("make")
    return missing


def _has_newlib(gcc: str) -> bool:
    r = subprocess.run([gcc, "-print-file-name=libc.a"], capture_output=True, text=True)
    return Path(r.stdout.strip()).is_absolute()


def unavailable() -> str | None:
    """Why the image cannot be built or run here, in one line (None when it can)."""
    missing = missing_packages()
    if missing:
        return f"no {', '.join(missing)}; install with: {INSTALL}"
    src = find_source()
    if src is None:
        return (
            f"no MicroPython source: neither ../shared/vendor/{TARBALL} nor ${SOURCE_ENV} "
            f"(a checkout of the tag v{VERSION})"
        )
    if not src.exists():
        return f"{SOURCE_ENV}={src}: no such file or folder"
    return None


# ---- the build ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    BUILD_DIR.mkdir(exist_ok=True)
    with open(BUILD_DIR / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _source_id(src: Path) -> str:
    if src.is_file():
        return "tar-" + _digest_file(src)
    r = subprocess.run(
        ["git", "-C", str(src), "describe", "--tags", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    tag = r.stdout.strip() if r.returncode == 0 else "nogit"
    return "src-" + hashlib.sha256(f"{src.resolve()} {tag}".encode()).hexdigest()[:16]


def _check_version(tree: Path) -> None:
    found = {}
    for line in (tree / "py" / "mpconfig.h").read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "#define" and words[1].startswith("MICROPY_VERSION_"):
            found[words[1][16:]] = words[2]
    got = ".".join(found.get(k, "?") for k in ("MAJOR", "MINOR", "MICRO"))
    if got != VERSION:
        raise ImageError(f"{tree} is MicroPython {got}; the image needs v{VERSION}")


def source_tree() -> Path:
    """The MicroPython source tree with mpy-cross built (the tarball extracted once, cached)."""
    reason = unavailable()
    if reason:
        raise ImageError(reason)
    src = find_source()
    assert src is not None
    sid = _source_id(src)
    with _locked(f"micropython-{sid}"):
        if src.is_file():
            tree = BUILD_DIR / f"micropython-{sid}"
            if not tree.exists():
                tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=BUILD_DIR))
                with tarfile.open(src) as tar:
                    try:
                        tar.extractall(tmp, filter="tar")
                    except TypeError:  # Python < 3.10.12 has no extraction filters
                        tar.extractall(tmp)
                (inner,) = tmp.iterdir()
                os.rename(inner, tree)
                shutil.rmtree(tmp)
        else:
            tree = src
        _check_version(tree)
        mpy_cross = tree / "mpy-cross" / "build" / "mpy-cross"
        if not mpy_cross.exists():
            _make(tree / "mpy-cross", [], BUILD_DIR / f"mpy-cross-{sid}.log")
    return tree


def _make(folder: Path, args: list[str], log: Path) -> None:
    cmd = ["make", "-C", str(folder), f"-j{os.cpu_count() or 2}", f"PYTHON={sys.executable}"]
    # The extracted tree sits inside this repository: git must not describe the repository's
    # commit as MicroPython's version (its makeversionhdr asks git first).
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(BUILD_DIR))
    with log.open("w") as out:
        r = subprocess.run(cmd + args, stdout=out, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ImageError(f"{' '.join(cmd + args)} failed (log {log}):\n{tail}")


def frozen_files() -> list[Path]:
    """What the image freezes, relative to the repository: the qemu board's bundle, and the
    replay board (`cellguard replay` on the image: the trace arrives on the console)."""
    return bundle_sources("qemu") + [Path("boards/replay.py")]


def manifest(files: list[Path]) -> str:
    """The frozen manifest for `files` (main.py becomes the top-level module `main`)."""
    lines = ["# Generated by hil/toolchain/image.py: the qemu board's bundle, frozen."]
    for rel in files:
        if rel == Path("firmware/main.py"):
            lines.append(f"module('main.py', base_path={str(REPO_ROOT / 'firmware')!r})")
        else:
            lines.append(f"module({rel.as_posix()!r}, base_path={str(REPO_ROOT)!r})")
    return "\n".join(lines) + "\n"


@functools.cache
def _toolchain_id() -> str:
    r = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True)
    return r.stdout.splitlines()[0] if r.stdout else "?"


def image_key(v: Variant, heap: int, src: Path) -> str:
    """The cache key: source, toolchain, variant, heap and the frozen files' contents."""
    h = hashlib.sha256()
    h.update(f"{_source_id(src)}|{_toolchain_id()}|{v}|{COMMON_MAKE_ARGS}|{heap}\n".encode())
    for rel in frozen_files():
        h.update(rel.as_posix().encode() + b"\0" + (REPO_ROOT / rel).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def build_image(name: str = DEFAULT_VARIANT, heap: int | None = None) -> Path:
    """Build the image (cached) and return its `firmware.elf`; ImageError when it cannot."""
    v = variant(name)
    heap = smallest_budget() if heap is None else heap
    reason = unavailable()
    if reason:
        raise ImageError(reason)
    src = find_source()
    assert src is not None
    out = BUILD_DIR / f"qemu-{v.name}-{heap}-{image_key(v, heap, src)}"
    elf = out / "firmware.elf"
    if elf.exists():
        return elf
    tree = source_tree()
    with _locked(f"qemu-{v.name}"):
        if elf.exists():
            return elf
        t0 = time.monotonic()
        work = _work_dir(v, heap, COMMON_MAKE_ARGS + v.make_args)
        shutil.rmtree(work / "frozen_mpy", ignore_errors=True)  # never a stale frozen module
        lib = BUILD_DIR / "qemu-work" / "no-micropython-lib"
        lib.mkdir(parents=True, exist_ok=True)
        (lib / "README.md").write_text("The image freezes no micropython-lib package.\n")
        man = work.parent / f"manifest-{v.name}.py"
        man.write_text(manifest(frozen_files()))
        args = [
            f"BOARD={v.board}",
            f"BUILD={work}",
            f"FROZEN_MANIFEST={man}",
            f"MPY_LIB_DIR={lib}",
            f"MICROPY_MPYCROSS={tree / 'mpy-cross' / 'build' / 'mpy-cross'}",
            f"MICROPY_HEAP_SIZE={heap}",
            *COMMON_MAKE_ARGS,
            *v.make_args,
        ]
        _make(tree / "ports" / "qemu", args, work.parent / f"build-{v.name}.log")
        tmp = Path(tempfile.mkdtemp(prefix=".image-", dir=BUILD_DIR))
        shutil.copyfile(work / "firmware.elf", tmp / "firmware.elf")
        (tmp / "manifest.py").write_text(man.read_text())
        os.rename(tmp, out)
        _prune(v, out)
        print(
            f"cellguard: built the {v.name} image (heap {heap} B) in "
            f"{time.monotonic() - t0:.0f} s: {elf}",
            file=sys.stderr,
        )
    return elf


def _work_dir(v: Variant, heap: int, flags: tuple[str, ...]) -> Path:
    """The variant's incremental build folder, prepared for `heap` and `flags`: make does not
    track CFLAGS, so other flags start it afresh, and a different heap removes main.o
    (MICROPY_HEAP_SIZE reaches main.c only)."""
    work = BUILD_DIR / "qemu-work" / v.name
    config = work / "flags.txt"
    if work.exists() and (not config.exists() or config.read_text() != " ".join(flags)):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    config.write_text(" ".join(flags))
    stamp = work / "heap.txt"
    if not stamp.exists() or stamp.read_text() != str(heap):
        for stale in ("main.o", "firmware.elf"):
            (work / stale).unlink(missing_ok=True)
        stamp.write_text(str(heap))
    return work


def _prune(v: Variant, keep: Path, most: int = 4, age_s: float = 3600) -> None:
    """Remove a variant's images (one folder per firmware state and heap) beyond the `most`
    newest that are older than `age_s` (an emulator may be about to load a recent one)."""
    images = sorted(BUILD_DIR.glob(f"qemu-{v.name}-*"), key=lambda p: p.stat().st_mtime)
    now = time.time()
    for old in images[:-most]:
        if old != keep and now - old.stat().st_mtime > age_s:
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`check`: print why the image cannot be built (exit 1) or nothing (exit 0); `build`."""
    parser = argparse.ArgumentParser(prog="python -m hil.toolchain.image")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="exit 1 with one line saying what is missing")
    b = sub.add_parser("build", help="build an image and print the path of its firmware.elf")
    b.add_argument("variant", nargs="?", default=DEFAULT_VARIANT, choices=sorted(VARIANTS))
    b.add_argument("--heap", help="MICROPY_HEAP_SIZE, e.g. 144K (default: smallest budget)")
    args = parser.parse_args(argv)
    if args.cmd == "check":
        reason = unavailable()
        if reason:
            print(reason)
            return 1
        return 0
    try:
        elf = build_image(args.variant, heap_bytes(args.heap) if args.heap else None)
    except ImageError as e:
        print(f"cellguard: {e}", file=sys.stderr)
        return 1
    print(elf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
