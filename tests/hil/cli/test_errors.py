"""First contact: every `cellguard` error is one line naming the option, file or key at fault,
exit 2 for usage and 1 for a failed run, and nothing is left behind (no `cellguard-dut-*` folder,
no firmware process). Each case of issue #16 has its test here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from hil import REPO_ROOT
from hil.bench.dut import DutError, UnixPortDut
from hil.bench.runner import open_bench
from hil.cli import main
from hil.cli import serve as serve_command

NMC_PROFILE = REPO_ROOT / "profiles" / "nmc21700_5ah.json"
TRACE = "time_s,current_a,voltage_v,temperature_c\n" + "".join(
    f"{t},1.0,3.7,25\n" for t in range(30)
)


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of this test's own: after it, no cellguard-* folder may remain."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp
    assert sorted(p.name for p in tmp.iterdir()) == []


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `cellguard argv`; returns the exit code and stderr, which must be one line."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exit (a usage error)
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return code, err.strip()


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- cellguard sim -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "code", "needles"),
    [
        (["--heap", "banana"], 2, ["argument --heap", "'banana'", "not a heap size"]),
        (["--out", "/proc/nope"], 2, ["--out /proc/nope", "cannot create the folder"]),
        (["--cells", "0"], 2, ["--cells 0: must be in 1..192"]),
        (["--cells", "193"], 2, ["--cells 193: must be in 1..192"]),
        (["--chemistry", "NiMH"], 2, ["argument --chemistry", "'NiMH'"]),
    ],
)
def test_sim_usage_errors(
    argv: list[str], code: int, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    got, err = _run(["sim", "--no-progress", "--out", str(tmp_path / "out"), *argv], capsys)
    assert got == code and err.startswith("cellguard sim: ")
    for needle in needles:
        assert needle in err


def test_sim_heap_too_small_is_one_line_with_the_firmware_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--heap 10K: the firmware runs out of memory at start; the line says so in its own words
    (MemoryError), names --heap, and the console is kept in the report folder."""
    out = tmp_path / "out"
    code, err = _run(["sim", "--no-progress", "--heap", "10K", "--out", str(out)], capsys)
    assert code == 1
    assert "MemoryError" in err and "--heap 10K" in err and str(out / "console.log") in err
    assert "MemoryError" in (out / "console.log").read_text()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('{"cell_ov_mv": 4250,\n "cycle_ms": 100,\n}\n', ["line 3 column 1"]),
        ("[1, 2]", ["must hold one JSON object", "not a list"]),
        ('{"cycle_ms": 5}', ["config key 'cycle_ms': must be in 10..1000"]),
        ('{"no_such_key": 1}', ["config key 'no_such_key': unknown key"]),
        ('{"cell_count": 8}', ["key 'cell_count' is set by --cells"]),
    ],
)
def test_sim_config_is_checked_before_the_run(
    text: str, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _file(tmp_path, "cfg.json", text)
    out = tmp_path / "out"
    code, err = _run(["sim", "--no-progress", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2 and f"--config {cfg}" in err
    for needle in needles:
        assert needle in err
    assert not out.exists()  # refused before anything ran


# ---- cellguard replay ----------------------------------------------------------------------
def _replay(tmp_path: Path, *extra: str, profile: Path = NMC_PROFILE) -> list[str]:
    trace = _file(tmp_path, "trace.csv", TRACE)
    out = str(tmp_path / "est.csv")
    return ["replay", str(trace), "--profile", str(profile), "--out", out, *extra]


def test_replay_heap_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(_replay(tmp_path, "--heap", "20K"), capsys)
    assert code == 1 and "MemoryError" in err and "--heap 20K" in err


def test_replay_out_folder_missing_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hil.cli.replay as replay_command

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay ran although --out cannot be written")

    monkeypatch.setattr(replay_command, "replay", never)
    argv = _replay(tmp_path)
    argv[argv.index("--out") + 1] = "/missing/dir/o.csv"
    code, err = _run(argv, capsys)
    assert code == 2 and "--out /missing/dir/o.csv" in err and "/missing/dir does not exist" in err


def test_profile_missing_capacity_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = json.loads(NMC_PROFILE.read_text())
    del profile["capacity_ah"]
    path = _file(tmp_path, "p.json", json.dumps(profile))
    code, err = _run(_replay(tmp_path, profile=path), capsys)
    assert code == 2 and f"--profile {path}" in err and "'capacity_ah': missing" in err


def test_profile_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = NMC_PROFILE.read_text().replace('"chemistry":', '"chemistry"', 1)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if '"chemistry"' in row)
    path = _file(tmp_path, "p.json", text)
    code, err = _run(_replay(tmp_path, profile=path), capsys)
    assert code == 2 and f"--profile {path}: line {line} column" in err


# ---- cellguard flash -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"cycle_ms": 100,,}', "line 1 column 18"),
        ('["cycle_ms", 100]', "not a list"),
        ('{"cell_uv_mv": 4300}', "key 'cell_discharge_min_mv': must be greater than cell_uv_mv"),
    ],
)
def test_flash_config_errors(
    text: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _file(tmp_path, "bad.json", text)
    argv = ["flash", "--board", "stm32f4", "--port", "/dev/null", "--dry-run"]
    code, err = _run([*argv, "--stage-dir", str(tmp_path / "s"), "--config", str(cfg)], capsys)
    assert code == 2 and f"--config {cfg}" in err and needle in err


# ---- cellguard serve -----------------------------------------------------------------------
def test_serve_cells_zero_blames_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["serve", "--cells", "0", "--seconds", "1"], capsys)
    assert code == 2 and "--cells 0: must be in 1..192" in err and "cell_count" not in err


def test_serve_on_an_occupied_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = _run(["serve", "--port", str(port), "--seconds", "1"], capsys)
    assert code == 2 and f"--port {port}: already in use" in err
    assert capsys.readouterr().out == ""  # no banner for a server that never started


def test_serve_reports_a_refused_configuration_in_the_firmware_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the desktop check to let a bad key through, the firmware's own refusal still reaches
    the user in one line (here the check is switched off to let the firmware judge)."""
    monkeypatch.setattr(serve_command, "check_firmware_config", lambda *a, **k: None)
    cfg = _file(tmp_path, "cfg.json", '{"cycle_ms": 5}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", "--port", str(port), "--plant", "--seconds", "5", "--config", str(cfg)]
    code, err = _run(argv, capsys)
    assert code == 1
    assert "halted: configuration rejected: config key 'cycle_ms': must be in 10..1000" in err


def test_bench_reports_a_refused_configuration_in_the_firmware_words() -> None:
    """The bench does not check the configuration itself: the firmware refuses it and the bench
    says why with the firmware's message (not a ConnectionResetError)."""
    with pytest.raises(DutError) as info, open_bench(firmware_config={"cycle_ms": 5}) as bench:
        for _ in range(5):
            bench.step(0.0)
    assert "config key 'cycle_ms': must be in 10..1000" in info.value.reason


# ---- the other commands --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("can", "code", "needle"),
    [
        (None, 1, "Connection refused (is `cellguard serve` running?)"),
        ("foo", 2, "--can foo: not INTERFACE:CHANNEL"),
        ("nope:x", 2, 'Unknown interface type "nope"'),
        ("socketcan:can0@abc", 2, "bitrate 'abc' is not a number"),
    ],
)
def test_diag_without_a_bus_is_one_line(
    can: str | None, code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cellguard diag dtc` with no BMS served, or a --can that names no bus: one line."""
    if can is None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            can = f"slcan:socket://127.0.0.1:{s.getsockname()[1]}"
    got, err = _run(["diag", "--can", can, "dtc"], capsys)
    assert got == code and err.startswith("cellguard diag: --can ") and needle in err


def test_diag_names_a_wrong_did_routine_value_or_dtc_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against a served BMS: an unknown DID, routine, a value that is no number, a DTC that is
    not one, a secured service without --key-file: one line each, exit 2; a refused service one
    line (udsoncan's own log silenced), exit 1, and it says where the rules are."""
    with UnixPortDut({"cell_count": 4}, realtime=True) as dut:
        can, key = f"slcan:{dut.channel}", str(dut.key_file)
        cases = [
            (["read", "nosuch"], 2, "DID 'nosuch': unknown (a hex number, a firmware"),
            (["routine", "nosuch"], 2, "routine 'nosuch': unknown (one of "),
            (["--key-file", key, "write", "cell_ov_mv", "x"], 2, "cell_ov_mv 'x': not an integer"),
            (
                ["--key-file", key, "clear", "--dtc", "P1AZZ"],
                2,
                "--dtc P1AZZ: not a cellguard DTC (P1A00..P1AFF)",
            ),
            (["write", "cell_ov_mv", "4200"], 2, "write needs security access: --key-file"),
            (["--key-file", key, "write", "cell_ov_mv", "99999"], 1, "negative response 0x"),
        ]
        for argv, code, needle in cases:
            got, err = _run(["diag", "--can", can, "--cells", "4", *argv], capsys)
            assert got == code and needle in err, (argv, err)
        assert "docs/diagnostics.md" in err


def test_diag_shows_a_value_under_the_unit_it_is_shown_in() -> None:
    """A freeze frame's cell_min_mv printed in volts reads cell_min_v, not cell_min_mv=3.712 V."""
    from hil.cli.diag import _show

    got = _show({"cell_min_mv": 3712, "cell_min": 5, "temp_max_dc": 251, "current_ma": -1500})
    assert got == "cell_min_v=3.712 V, cell_min=5, temp_max_c=25.1 degC, current_a=-1.500 A"


def test_unknown_command_and_option_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["simulate"], capsys)
    assert code == 2 and err.startswith("cellguard: ") and "simulate" in err
    code, err = _run(["sim", "--cell", "4x"], capsys)
    assert code == 2 and "--cell" in err


def test_busload_and_codegen_name_a_bad_dbc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.dbc"
    code, err = _run(["busload", "--dbc", str(missing)], capsys)
    assert code == 2 and f"--dbc {missing}: cannot read it" in err
    broken = _file(tmp_path, "broken.dbc", 'VERSION ""\nBO_ 256 X 8 BMS\n')
    code, err = _run(["codegen", "--check", "--dbc", str(broken)], capsys)
    assert code == 2 and f"--dbc {broken}: not a DBC" in err and "line 2, column 11" in err
    code, err = _run(["busload", "--cells", "0"], capsys)
    assert code == 2 and "--cells 0" in err


# ---- signals ---------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("signum", "can_log"), [(signal.SIGTERM, "full"), (signal.SIGINT, "events")]
)
def test_a_signal_ends_the_firmware_and_keeps_a_complete_can_log(
    signum: int, can_log: str, tmp_path: Path, own_tmpdir: Path
) -> None:
    """kill -TERM (or a Ctrl-C) on `cellguard sim`: one line, exit 128 + the signal, the
    micropython child ended, its folder removed, and a BLF with a real start time that holds
    every step up to the stop (a BMS_CycleDiag for every SIM_Tick); with the default log, the
    start and the last 10 s up to the stop, every control period in them."""
    out = tmp_path / "out"
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "sim", "--no-progress", "--out", str(out)]
        + ["--can-log", can_log],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(own_tmpdir)},
    )
    log = out / "can.blf"
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        if children and log.exists() and log.stat().st_size > 1000:  # frames are flowing
            break
        time.sleep(0.1)
    assert children, "the firmware never started"
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    lines = err.strip().splitlines()
    assert len(lines) == 1 and signal.Signals(signum).name in lines[0] and str(log) in lines[0]
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    reader = can.BLFReader(str(log))
    assert started - 5 < reader.start_timestamp < time.time()
    frames = list(reader)
    ids = [m.arbitration_id for m in frames]
    ticks, acks = ids.count(0x20F), ids.count(0x1FF)
    assert ticks > 10 and abs(acks - ticks) <= (0 if can_log == "full" else 2)
    if can_log == "events":
        t = [m.timestamp - frames[0].timestamp for m in frames]
        tick_t = [x for x, i in zip(t, ids, strict=True) if i == 0x20F]
        assert tick_t[0] == 0.0 and t[-1] - tick_t[-1] < 0.11  # from the start to the stop
        last_10s = [x for x in tick_t if x >= t[-1] - 10.0]
        assert len(last_10s) >= min(100, len(tick_t)) - 1
        assert all(b - a < 0.11 for a, b in zip(last_10s, last_10s[1:], strict=False))


def test_help_texts_print_percent_signs_once(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats option help with %, not the description: neither may show '%%'."""
    for command in ("replay", "characterize", "sim", "serve", "busload", "flash", "codegen"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "%%" not in out, command
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    assert "within 2 %" in " ".join(capsys.readouterr().out.split())
