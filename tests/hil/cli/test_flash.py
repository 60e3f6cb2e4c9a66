"""`cellguard flash`: the dry run for every profiled board, and the real copy path against a fake
mpremote whose "device" is a folder on which the MicroPython unix port runs the exec scripts."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

import firmware
from hil import REPO_ROOT
from hil.bench.dut import micropython_binary
from hil.cli import flash
from hil.cli import main as cli_main
from hil.toolchain.build import bundle_files, profiled_boards

PORT = "/dev/ttyACM7"


def _no_device(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    raise AssertionError(f"the dry run ran {cmd}")


@pytest.mark.parametrize("board", ["stm32f4", "esp32"])
def test_dry_run_prints_every_step_and_stages_the_bundle(
    board: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(flash, "run_command", _no_device)
    stage = tmp_path / "stage"
    argv = ["flash", "--board", board, "--port", PORT, "--dry-run", "--stage-dir", str(stage)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    for step in ("1. build", "2. hash", "3. copy", "4. reset", "5. check"):
        assert step in out
    assert f"mpremote connect {PORT} reset" in out
    profile = json.loads((REPO_ROOT / "boards" / f"{board}.json").read_text())
    files = bundle_files(stage)
    expected = {"main.py", "board.json", "board.txt", "config.json", "boards/__init__.mpy"}
    expected.add(f"boards/{board}.mpy")
    expected |= {m[:-3] + ".mpy" for m in profile["modules"]}
    expected |= {f"firmware/{p.stem}.mpy" for p in (REPO_ROOT / "firmware").glob("*.py")}
    expected.discard("firmware/main.mpy")
    assert set(files) == expected
    assert (stage / "board.txt").read_text().strip() == board
    staged = json.loads((stage / "board.json").read_text())
    assert staged["pins"] == profile["pins"] and staged["measurement"] == profile["measurement"]
    assert json.loads((stage / "config.json").read_text()) == profile["config"]
    for f in files:  # every file is copied on a fresh board, each named in the printed command
        assert f":{f}" in out


# mpy-cross's -march codes (the .mpy header's third byte holds arch << 2 | sub-version)
_MPY_ARCH = {"x64": 2, "armv6m": 4, "armv7m": 5, "armv7emsp": 7, "xtensawin": 10, "rv32imc": 11}
_NATIVE = ("native.mpy",)  # machine code (firmware/native.py): one build per architecture


def test_bytecode_is_the_same_for_every_board() -> None:
    """The flashed firmware/*.mpy are byte for byte the ones the unix port runs in CI, except the
    machine-code module, which each board gets for its own architecture."""
    from hil.toolchain.build import build_bundle

    sim = build_bundle("sim")
    checked = 0
    for board in profiled_boards():
        bundle = build_bundle(board)
        arch = json.loads((REPO_ROOT / "boards" / f"{board}.json").read_text())["arch"]
        for mpy in (sim / "firmware").glob("*.mpy"):
            flashed = (bundle / "firmware" / mpy.name).read_bytes()
            if mpy.name in _NATIVE:
                assert flashed[2] >> 2 == _MPY_ARCH[arch], (board, mpy.name, flashed[:4])
                checked += 1
            else:
                assert flashed == mpy.read_bytes(), (board, mpy)
    assert checked == len(profiled_boards()) * len(_NATIVE)


class FakeMpremote:
    """Stands in for `mpremote connect PORT ...` on a device whose filesystem is `root`.

    `exec` scripts run on the MicroPython unix port with the device folder as working directory,
    so the hash, prepare and check scripts run as MicroPython code on the copied files.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.copied: list[str] = []
        self.resets = 0
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = list(cmd)
        self.calls.append(cmd)
        assert cmd[:3] == flash.mpremote_command()
        assert cmd[3:5] == ["connect", PORT]
        rest = cmd[5:]
        out = []
        groups: list[list[str]] = [[]]
        for arg in rest:
            if arg == "+":
                groups.append([])
            else:
                groups[-1].append(arg)
        for g in groups:
            if g[0] == "exec":
                r = subprocess.run(
                    [micropython_binary(), "-c", g[1]],
                    cwd=self.root,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if r.returncode:
                    return subprocess.CompletedProcess(cmd, 1, r.stdout, r.stderr)
                out.append(r.stdout)
            elif g[:2] == ["fs", "cp"]:
                src, dest = g[2], g[3]
                assert dest.startswith(":")
                target = self.root / dest[1:]
                assert target.parent.is_dir(), f"copy into a missing folder: {dest}"
                shutil.copyfile(src, target)
                self.copied.append(dest[1:])
            elif g == ["reset"]:
                self.resets += 1
            else:
                raise AssertionError(f"unexpected mpremote command {g}")
        return subprocess.CompletedProcess(cmd, 0, "".join(out), "")


def _flash(board: str, stage: Path, device: FakeMpremote, **kwargs: object) -> dict[str, object]:
    lines: list[str] = []
    flasher = flash.Flasher(board, PORT, runner=device, out=lines.append)
    return flasher.run(stage_dir=stage, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("board", ["stm32f4", "esp32"])
def test_copies_only_changed_files_and_checks_the_version(board: str, tmp_path: Path) -> None:
    root = tmp_path / "device"
    root.mkdir()
    (root / "firmware").mkdir()
    (root / "firmware" / "app.py").write_text("raise ImportError('stale source')\n")
    device = FakeMpremote(root)
    stage = tmp_path / "stage"

    report = _flash(board, stage, device)
    files = bundle_files(stage)
    assert sorted(device.copied) == files
    assert not (root / "firmware" / "app.py").exists()  # it would shadow app.mpy
    assert report["version"] == firmware.__version__ and report["board"] == board
    assert report["config"] == "ok"
    assert device.resets == 2  # start the BMS, then again after the REPL check
    for f in files:
        assert (root / f).read_bytes() == (stage / f).read_bytes()

    device.copied.clear()
    _flash(board, stage, device)
    assert device.copied == []  # nothing changed: nothing copied

    _flash(board, stage, device, config={"cell_count": 8})
    assert device.copied == ["config.json"]
    assert json.loads((root / "config.json").read_text()) == {"cell_count": 8}


def test_measurement_override_lands_in_board_json(tmp_path: Path) -> None:
    root = tmp_path / "device"
    root.mkdir()
    device = FakeMpremote(root)
    _flash("esp32", tmp_path / "stage", device, measurement="bench")
    assert json.loads((root / "board.json").read_text())["measurement"] == "bench"


def test_bad_config_is_refused_before_touching_the_device(tmp_path: Path) -> None:
    device = FakeMpremote(tmp_path)
    with pytest.raises(flash.FlashError, match="cell_count"):
        _flash("stm32f4", tmp_path / "stage", device, config={"cell_count": 999})
    assert device.calls == []


def test_version_mismatch_on_the_device_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "device"
    root.mkdir()
    device = FakeMpremote(root)
    monkeypatch.setattr(flash, "run_command", device)
    monkeypatch.setattr(flash.firmware, "__version__", "9.9.9")
    argv = ["flash", "--board", "stm32f4", "--port", PORT, "--stage-dir", str(tmp_path / "s")]
    assert cli_main(argv) == 1
    assert "expected 9.9.9" in capsys.readouterr().err


def test_mpremote_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unplugged(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(cmd), 1, "", "failed to access /dev/ttyACM7")

    with pytest.raises(flash.FlashError, match="failed to access"):
        flash.Flasher("stm32f4", PORT, runner=unplugged, out=lambda s: None).run(
            stage_dir=tmp_path / "s"
        )


def test_version_matches_the_package() -> None:
    from importlib.metadata import version

    assert firmware.__version__ == version("cellguard")


def _provision(root: Path, stage: Path, keys: Path, serial: str = "CG-0001") -> list[str]:
    lines: list[str] = []
    flasher = flash.Flasher("stm32f4", PORT, runner=FakeMpremote(root), out=lines.append)
    flasher.run(stage_dir=stage, provision=serial, key_dir=keys)
    return lines


def test_provision_gives_a_fresh_board_its_keys_and_keeps_them_on_a_reflash(tmp_path: Path) -> None:
    """The board gets a provisioning record and a VCU key record that its own firmware parses
    (the check script runs on the MicroPython port), the desktop keeps identical copies readable
    by its owner only, no secret is printed, and flashing again copies and changes no key."""
    from hil.bench.provision import parse_record, parse_vcu_key

    root = tmp_path / "device"
    root.mkdir()
    keys = tmp_path / "keys"
    lines = _provision(root, tmp_path / "stage", keys)
    folder = keys / "CG-0001"
    record, vcu = (folder / "provision").read_bytes(), (folder / "vcu_key").read_bytes()
    assert (root / "cg_provision").read_bytes() == record
    assert (root / "cg_vcu_key").read_bytes() == vcu
    serial, secret = parse_record(record)
    assert serial == "CG-0001"
    for f in (folder / "provision", folder / "vcu_key"):
        assert f.stat().st_mode & 0o077 == 0
    assert folder.stat().st_mode & 0o077 == 0
    out = "\n".join(lines)
    for secret_bytes in (secret, parse_vcu_key(vcu)):
        assert secret_bytes.hex() not in out and secret_bytes.hex().upper() not in out
    assert f"--vcu-key {folder / 'vcu_key'}" in out

    device = FakeMpremote(root)
    report = flash.Flasher("stm32f4", PORT, runner=device, out=lambda s: None).run(
        stage_dir=tmp_path / "stage", provision="CG-0001", key_dir=keys
    )
    assert device.copied == []
    assert report["serial"] == "CG-0001" and report["vcu_key"] is True
    assert (folder / "provision").read_bytes() == record


def test_provision_refuses_a_board_holding_other_keys(tmp_path: Path) -> None:
    root = tmp_path / "device"
    root.mkdir()
    _provision(root, tmp_path / "stage", tmp_path / "keys-a")
    before = (root / "cg_provision").read_bytes()
    device = FakeMpremote(root)
    with pytest.raises(flash.FlashError, match="holds other keys"):
        flash.Flasher("stm32f4", PORT, runner=device, out=lambda s: None).run(
            stage_dir=tmp_path / "stage", provision="CG-0001", key_dir=tmp_path / "keys-b"
        )
    assert device.copied == [] and (root / "cg_provision").read_bytes() == before


def test_a_damaged_record_on_the_device_fails_the_check(tmp_path: Path) -> None:
    """The check reads the records back with the firmware's own parsers: one bit flipped after
    the copy is reported, not taken for a provisioned board."""
    root = tmp_path / "device"
    root.mkdir()
    keys = tmp_path / "keys"
    _provision(root, tmp_path / "stage", keys)

    class Flipping(FakeMpremote):
        def __call__(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
            if "exec" in cmd and "parse_provision" in cmd[-1]:
                rec = bytearray((self.root / "cg_vcu_key").read_bytes())
                rec[5] ^= 1
                (self.root / "cg_vcu_key").write_bytes(bytes(rec))
            return super().__call__(cmd)

    (root / "cg_vcu_key").unlink()  # copied again, then damaged before the check
    with pytest.raises(flash.FlashError, match="no VCU key"):
        flash.Flasher("stm32f4", PORT, runner=Flipping(root), out=lambda s: None).run(
            stage_dir=tmp_path / "stage", provision="CG-0001", key_dir=keys
        )


@pytest.mark.parametrize("serial", ["../evil", "", "x" * 17, ".hidden", "a b"])
def test_a_bad_serial_is_one_line_before_the_device_is_touched(
    serial: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(flash, "run_command", _no_device)
    argv = ["flash", "--board", "stm32f4", "--port", PORT, "--stage-dir", str(tmp_path / "s")]
    argv += ["--provision", serial, "--key-dir", str(tmp_path / "keys")]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--provision" in err and "serial" in err
    assert not (tmp_path / "keys").exists()


def test_dry_run_with_provision_makes_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(flash, "run_command", _no_device)
    argv = ["flash", "--board", "stm32f4", "--port", PORT, "--dry-run"]
    argv += ["--stage-dir", str(tmp_path / "s"), "--provision", "CG-7", "--key-dir", str(tmp_path)]
    assert cli_main(argv) == 0
    assert "would be made" in capsys.readouterr().out
    assert not (tmp_path / "CG-7").exists()


def test_an_unusable_key_dir_is_one_line_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(flash, "run_command", _no_device)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["flash", "--board", "stm32f4", "--port", PORT, "--stage-dir", str(tmp_path / "s")]
    argv += ["--provision", "CG-1", "--key-dir", str(blocker)]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"cellguard flash: --key-dir {blocker}: Not a directory"]
