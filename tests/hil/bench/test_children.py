"""A bench killed outright (SIGKILL: no chance to stop its DUTs) leaves no firmware running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil import REPO_ROOT

BENCH = """
import sys, time
from hil.bench.dut import UnixPortDut
from pathlib import Path
dut = UnixPortDut({"cell_count": 4, "temp_count": 4}, workdir=Path(sys.argv[1]))
dut.start()
print(dut.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has ended; only its parent (init, once the bench is gone) has not reaped it yet
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_firmware_ends_when_the_bench_is_killed(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", BENCH, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = 0
    try:
        assert bench.stdout is not None
        pid = int(bench.stdout.readline())
        assert _alive(pid)
        bench.send_signal(signal.SIGKILL)
        bench.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"the firmware (pid {pid}) outlived its bench"
    finally:
        bench.kill()
        bench.wait()
        if pid and _alive(pid):  # the failure above: end the orphan here
            os.kill(pid, signal.SIGKILL)
