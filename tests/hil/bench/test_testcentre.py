"""`pytest --cellguard-report DIR`: a real pytest run (two xdist workers) of three tests (one
bench test that trips a fault, one that fails, one skipped) writes DIR/index.html with every
verdict, plot, fault memory and link, and DIR/junit.xml; headless Chromium renders the page."""

from __future__ import annotations

import html.parser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from hil.bench.testcentre import dbc_sha256

DEMO = """
import pytest


def test_overvoltage_opens(bench):
    bench.step_until(lambda s: s.closed, 30)

    def overvoltage(m):
        m.cell_mv[3] = 4400
        return m

    bench.measurement_hook = overvoltage
    for _ in range(10):
        bench.step(0.0)
    assert not bench.status.closed and "CellOverVoltage" in bench.status.faults


def test_fails_on_purpose(bench_factory):
    bench = bench_factory(seed=5)
    for _ in range(20):
        bench.step(5.0)
    assert bench.status.soc_pct > 200, "SOC cannot exceed 100 %"


def test_needs_hardware():
    pytest.skip("no board on this bench")
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("href", "src") and value and not value.startswith("#"):
                self.refs.append(value)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the demo suite with the report on; returns DIR."""
    work = tmp_path_factory.mktemp("centre")
    (work / "test_demo.py").write_text(DEMO)
    out = work / "report"
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"]
    cmd += ["--rootdir", str(work), str(work / "test_demo.py"), "--cellguard-report", str(out)]
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr  # one test fails on purpose
    assert f"cellguard report: {out / 'index.html'}" in run.stdout
    return out


def test_junit_xml_has_every_verdict(report: Path) -> None:
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")


def test_page_has_verdicts_plots_fault_memory_and_working_links(report: Path) -> None:
    page = (report / "index.html").read_text()
    for needle in (
        "PASSED</span> test_demo.py::test_overvoltage_opens",
        "FAILED</span> test_demo.py::test_fails_on_purpose",
        "SKIPPED</span> test_demo.py::test_needs_hardware",
        "no board on this bench",
        "SOC cannot exceed 100 %",
        f"sha256 {dbc_sha256()}",
        "<td>firmware version</td>",
        "<td>P1A00</td><td>CellOverVoltage</td>",  # the read-out after the test
        "16 × NMC, seed 5",
    ):
        assert needle in page, needle
    links = _Links()
    links.feed(page)
    kinds = {Path(ref).name for ref in links.refs}
    assert {"junit.xml", "console.log", "can.blf", "run.png"} <= kinds
    for ref in links.refs:
        assert (report / ref).is_file(), ref  # every link and image resolves in the folder
    console = next(r for r in links.refs if r.endswith("console.log"))
    assert "cellguard sim board" in (report / console).read_text()


def test_chromium_renders_the_page(report: Path, tmp_path: Path) -> None:
    """Headless Chromium opens the page from the folder: the DOM has the verdicts, and the
    screenshot shows the passed and failed badges and the plot (matplotlib's blue)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    url = (report / "index.html").as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, env=env
    )
    assert "test_fails_on_purpose" in dom.stdout and "FAILED" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,2400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        env=env,
        check=True,
    )
    import matplotlib.image

    pixels = np.rint(matplotlib.image.imread(str(shot))[:, :, :3] * 255).astype(int)
    assert pixels.shape[:2] == (2400, 1280)

    def count(rgb: tuple[int, int, int], tolerance: int = 2) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tolerance).sum())

    assert count((0x2E, 0x7D, 0x32)) > 200  # PASSED badges
    assert count((0xC6, 0x28, 0x28)) > 200  # FAILED badges
    # the run plot was loaded and drawn: its cell-voltage band (matplotlib C0 at 30 % on white)
    assert count((188, 214, 232), tolerance=8) > 5000
