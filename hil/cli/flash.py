"""`cellguard flash`: put the firmware bundle, the board profile and its configuration on a board.

Steps (each printed; `--dry-run` prints them and builds the bundle into build/flash-NAME/ without
touching a device):
  1. build: compile the board's bundle with mpy-cross and stage it with board.json (the profile),
     board.txt (the board name main.py reads) and config.json (the firmware configuration);
  2. hash: sha256 of every staged file, computed on the device (`mpremote exec`);
  3. copy: only the files whose hash differs (`mpremote fs cp`), after creating the folders and
     deleting stale `.py` sources that would shadow the `.mpy` bytecode;
  4. reset the board (`mpremote reset`): main.py starts the BMS;
  5. check over the REPL that the device imports this firmware version and board, and accepts
     config.json (and, provisioned, reads both key records); then reset again so the BMS runs.

`--provision SERIAL` also gives the board its keys: the provisioning record (serial and the
secret of UDS security access and image signing, firmware/security.py) and the VCU key record
(VCU_Request's MAC, firmware/secoc.py), as the storage files cg_provision and cg_vcu_key, copied
in step 3. The desktop keeps them in `--key-dir` (default ~/.cellguard/keys, or $CELLGUARD_KEY_DIR)
under SERIAL/, readable by its owner only: the tester's `--key-file` and the bench's `--vcu-key`.
A serial provisioned before keeps its keys; a board that holds other keys than the folder's is
refused (erase its cg_provision and cg_vcu_key first). Keys are never printed, only their paths.

MicroPython itself must already be on the board (README, "Hardware"). Flash with the pack
disconnected: step 5 interrupts the running BMS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import firmware
from firmware import config as fw_config
from hil.bench.provision import PROVISION_FILE, VCU_KEY_FILE, board_keys, keys_folder
from hil.cli.errors import Failure
from hil.cli.options import check_firmware_config, config_file
from hil.toolchain.build import BUILD_DIR, bundle_files, profiled_boards, stage_flash_bundle

NAME = "flash"
HELP = "compile the firmware for a board and copy it there with mpremote (changed files only)"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
HASH_MARK = "cellguard-hash"
STORAGE_PREFIX = "cg_"  # a board's storage record NAME is the file cg_NAME (boards/hw.py)
CHECK_MARK = "cellguard-check"


class FlashError(RuntimeError):
    """A flashing step failed."""


def run_command(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run one mpremote command; tests replace this to stand in for a device."""
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


def mpremote_command() -> list[str]:
    """mpremote from this Python's environment."""
    return [sys.executable, "-m", "mpremote"]


def local_hashes(folder: Path) -> dict[str, str]:
    """sha256 (hex) of every staged file, keyed by its device path."""
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in bundle_files(folder)}


def hash_script(paths: Sequence[str]) -> str:
    """MicroPython code printing `MARK <sha256 or -> <path>` for each path on the device."""
    return (
        "import hashlib, binascii\n"
        "b = bytearray(256)\n"
        "mv = memoryview(b)\n"
        f"for p in {list(paths)!r}:\n"
        "    try:\n"
        "        f = open(p, 'rb')\n"
        "    except OSError:\n"
        f"        print('{HASH_MARK}', '-', p)\n"
        "        continue\n"
        "    h = hashlib.sha256()\n"
        "    while True:\n"
        "        n = f.readinto(b)\n"
        "        if not n:\n"
        "            break\n"
        "        h.update(mv[:n])\n"
        "    f.close()\n"
        f"    print('{HASH_MARK}', binascii.hexlify(h.digest()).decode(), p)\n"
    )


def prepare_script(folders: Sequence[str], shadows: Sequence[str]) -> str:
    """MicroPython code creating `folders` and deleting `shadows` (sources hiding .mpy files)."""
    return (
        "import os\n"
        f"for d in {list(folders)!r}:\n"
        "    try:\n"
        "        os.mkdir(d)\n"
        "    except OSError:\n"
        "        pass\n"
        f"for p in {list(shadows)!r}:\n"
        "    try:\n"
        "        os.remove(p)\n"
        "    except OSError:\n"
        "        pass\n"
    )


def check_script(board: str, provisioned: bool = False) -> str:
    """MicroPython code printing the firmware version, board and config verdict as JSON (and,
    `provisioned`, the serial the board reads from its key records, both parsed by the firmware)."""
    keys = (
        "    from firmware.security import parse_provision\n"
        "    from firmware.secoc import parse_key\n"
        f"    p = parse_provision(open('{STORAGE_PREFIX}{PROVISION_FILE}', 'rb').read())\n"
        f"    k = parse_key(open('{STORAGE_PREFIX}{VCU_KEY_FILE}', 'rb').read())\n"
        "    r['serial'] = p[0].rstrip(b'\\0').decode() if p else None\n"
        "    r['vcu_key'] = k is not None\n"
    )
    return (
        "import json, gc\n"
        "r = {}\n"
        "try:\n"
        "    import firmware\n"
        "    r['version'] = firmware.__version__\n"
        "    r['board'] = open('board.txt').read().strip()\n"
        f"    __import__('boards.{board}')\n"
        "    from firmware import config\n"
        "    config.load(json.load(open('config.json')))\n"
        "    r['config'] = 'ok'\n" + (keys if provisioned else "") + "except Exception as e:\n"
        "    r['error'] = repr(e)\n"
        "gc.collect()\n"
        "r['mem_free'] = gc.mem_free()\n"
        f"print('{CHECK_MARK}', json.dumps(r))\n"
    )


def parse_device_hashes(stdout: str) -> dict[str, str]:
    """The hash lines of `hash_script`'s output: path -> sha256 hex ('-' when missing)."""
    hashes = {}
    for line in stdout.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) == 3 and parts[0] == HASH_MARK:
            hashes[parts[2]] = parts[1]
    return hashes


def parse_check(stdout: str) -> dict[str, Any]:
    """The JSON the check script printed."""
    for line in stdout.splitlines():
        if line.startswith(CHECK_MARK + " "):
            result: dict[str, Any] = json.loads(line[len(CHECK_MARK) + 1 :])
            return result
    raise FlashError(f"the device did not answer the version check:\n{stdout}")


class Flasher:
    """Runs (or with dry_run only prints) the flashing steps for one board on one port."""

    def __init__(
        self,
        board: str,
        port: str,
        *,
        dry_run: bool = False,
        runner: Runner | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.board = board
        self.port = port
        self.dry_run = dry_run
        self.runner = runner or run_command
        self.out = out
        self.mpremote = mpremote_command()

    def _mpremote(self, *args: str, show: str | None = None) -> str:
        cmd = [*self.mpremote, "connect", self.port, *args]
        self.out("  $ " + (show or shlex.join(cmd)))
        if self.dry_run:
            return ""
        result = self.runner(cmd)
        if result.returncode != 0:
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            # mpremote's last line says why (a traceback ends with the exception)
            raise FlashError(
                f"mpremote failed ({result.returncode}): {said[-1] if said else 'no output'}"
            )
        return result.stdout

    def _exec(self, script: str, what: str) -> str:
        shown = shlex.join([*self.mpremote, "connect", self.port, "exec", f"<{what}>"])
        return self._mpremote("exec", script, show=shown)

    def run(
        self,
        *,
        config: dict[str, Any] | None = None,
        measurement: str | None = None,
        stage_dir: Path | None = None,
        provision: str | None = None,
        key_dir: Path | None = None,
    ) -> dict[str, Any]:
        """Flash (with `provision` a serial: and give the board its keys, module docstring);
        returns what the device reported (empty in a dry run)."""
        mode = " (dry run: no device is touched)" if self.dry_run else ""
        self.out(f"cellguard flash: board {self.board} on {self.port}{mode}")
        stage = stage_dir or BUILD_DIR / f"flash-{self.board}"
        self.out(f"1. build the bundle with mpy-cross into {stage}")
        stage_flash_bundle(self.board, stage, config=config, measurement=measurement)
        try:  # the firmware's own validation, here on the desktop before anything is copied
            fw_config.load(json.loads((stage / "config.json").read_text()))
        except ValueError as e:
            raise FlashError(f"config.json rejected: {e}") from e
        hashes = local_hashes(stage)
        for path, digest in hashes.items():
            self.out(f"     {digest[:12]}  {path}")
        sources = {p: stage / p for p in hashes}
        keys: list[str] = []
        try:
            unmade = provision is not None and not keys_folder(provision, key_dir).exists()
        except ValueError as e:
            raise FlashError(f"--provision: {e}") from None
        if unmade and self.dry_run:
            self.out(f"   keys of {provision}: would be made in {keys_folder(provision, key_dir)}")
        elif provision is not None:
            try:
                folder, made = board_keys(provision, key_dir)
            except ValueError as e:
                raise FlashError(f"--provision {provision}: {e}") from None
            except OSError as e:
                where = f"--key-dir {key_dir}" if key_dir else f"the key folder {e.filename}"
                raise FlashError(f"{where}: {e.strerror}") from None
            what = "made now" if made else "kept from before"
            self.out(
                f"   keys of {provision} ({what}): {folder}/{{{PROVISION_FILE},{VCU_KEY_FILE}}}"
            )
            for name in (PROVISION_FILE, VCU_KEY_FILE):
                keys.append(STORAGE_PREFIX + name)
                sources[keys[-1]] = folder / name
                hashes[keys[-1]] = hashlib.sha256(sources[keys[-1]].read_bytes()).hexdigest()
        self.out(f"2. hash the {len(hashes)} files on the device (sha256)")
        device = parse_device_hashes(self._exec(hash_script(list(hashes)), "sha256 of each file"))
        for k in keys:  # a board's keys are replaced by no one but whoever erases them
            if device.get(k, "-") not in ("-", hashes[k]):
                raise FlashError(
                    f"--provision {provision}: the board holds other keys ({k}); erase its "
                    f"{' and '.join(keys)} to provision it again"
                )
        changed = [p for p in hashes if device.get(p) != hashes[p]]
        if self.dry_run:
            self.out("3. copy the files whose hash differs (all of them on a fresh board)")
            changed = list(hashes)
        else:
            self.out(f"3. copy {len(changed)} changed of {len(hashes)} files")
        if changed:
            folders = sorted({p.rsplit("/", 1)[0] for p in changed if "/" in p})
            shadows = [p[:-4] + ".py" for p in hashes if p.endswith(".mpy")]
            self._exec(prepare_script(folders, shadows), "mkdir folders, remove shadowing .py")
            args: list[str] = []
            for p in changed:
                args += ["+"] if args else []
                args += ["fs", "cp", str(sources[p]), ":" + p]
            self._mpremote(*args)
        self.out("   config.json (the firmware configuration the board reads) is one of them")
        self.out("4. reset the board: main.py starts the BMS")
        self._mpremote("reset")
        self.out(f"5. check firmware {firmware.__version__} and board {self.board} over the REPL")
        stdout = self._exec(
            check_script(self.board, provision is not None), "import firmware, board, config"
        )
        self._mpremote("reset")
        if self.dry_run:
            self.out("dry run done: nothing was sent to a device")
            return {}
        report = parse_check(stdout)
        if "error" in report:
            raise FlashError(f"the device rejected the firmware: {report['error']}")
        if provision is not None and (report.get("serial") != provision or not report["vcu_key"]):
            raise FlashError(
                f"the device reads serial {report.get('serial')!r} and "
                f"{'a' if report.get('vcu_key') else 'no'} VCU key from its key records, "
                f"expected {provision!r} and one"
            )
        if report.get("version") != firmware.__version__ or report.get("board") != self.board:
            raise FlashError(
                f"the device reports firmware {report.get('version')} on board "
                f"{report.get('board')}, expected {firmware.__version__} on {self.board}"
            )
        self.out(
            f"flashed: firmware {report['version']} on {report['board']}, config {report['config']}"
            f", {report['mem_free']} bytes of heap free before the BMS starts"
        )
        if provision is not None:
            self.out(
                f"provisioned {provision}: cellguard diag --key-file {sources[keys[0]]}, "
                f"pytest --vcu-key {sources[keys[1]]}"
            )
        return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cellguard flash`."""
    parser.add_argument("--board", required=True, choices=profiled_boards())
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyACM0")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, touch no device")
    parser.add_argument(
        "--config", type=Path, help="firmware configuration JSON (default: the profile's)"
    )
    parser.add_argument(
        "--measurement",
        choices=["bench", "ltc681x"],
        help="override the profile's measurement source (bench: values from the HIL bench)",
    )
    parser.add_argument("--stage-dir", type=Path, help="stage the files here (default build/)")
    parser.add_argument(
        "--provision",
        metavar="SERIAL",
        help="also give the board its keys (security access, VCU_Request MAC) under this serial "
        "(at most 16 ASCII characters); a serial provisioned before keeps its keys",
    )
    parser.add_argument(
        "--key-dir",
        type=Path,
        help="where the boards' key files are kept (default ~/.cellguard/keys, $CELLGUARD_KEY_DIR)",
    )


def run(args: argparse.Namespace) -> int:
    """Flash (or print the steps); returns the exit status."""
    config = None
    if args.config:  # checked with the firmware's own rules before anything is built or copied
        config = config_file(args.config)
        check_firmware_config(config, f"--config {args.config}")
    flasher = Flasher(args.board, args.port, dry_run=args.dry_run)
    try:
        flasher.run(
            config=config,
            measurement=args.measurement,
            stage_dir=args.stage_dir,
            provision=args.provision,
            key_dir=args.key_dir,
        )
    except FlashError as e:
        raise Failure(str(e).splitlines()[0]) from None
    return 0
