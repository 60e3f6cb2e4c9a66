"""The test-centre report of a HIL run: `pytest --cellguard-report DIR`.

DIR/index.html is one page per run: what ran (board, firmware version, DBC sha256, command line,
date) and, for every test, its verdict and duration, the failure or skip reason, and for each
bench it opened the plot of its run, the fault memory read out of the BMS at the end, the seed,
and links to the firmware console and the CAN log (`DIR/tests/<test>/`). DIR/junit.xml is
pytest's JUnit XML of the same run, for CI systems. The page is static HTML with no script or
external resource: it opens from the folder in any browser, and the folder can be archived as one
artifact.

`collect_bench` runs in the process that ran the test (an xdist worker too) and returns what it
wrote as a JSON-able dict, which travels to the controller in the report's user_properties;
`TestCentre` (registered as a plugin on the controller only) gathers the reports and writes the
page at the end of the session.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import json
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import firmware
from hil import DBC_PATH
from hil.bench.loop import Bench
from hil.bench.plots import overview_plot
from hil.bench.report import Recorder, RunInfo

PROPERTY = "cellguard_benches"
"""user_properties key under which a test's bench artifacts (a JSON list) travel."""
FAULT_MEMORY_COLUMNS = (
    ("dtc", "DTC"),
    ("name", "fault"),
    ("count", "count"),
    ("active", "active"),
    ("first_s", "first [s]"),
    ("last_s", "last [s]"),
    ("soc_pct", "SOC [%]"),
    ("pack_voltage_v", "pack [V]"),
    ("pack_current_a", "current [A]"),
    ("cell_v_min", "cell min [V]"),
    ("cell_v_max", "cell max [V]"),
    ("temp_min_c", "temp min [°C]"),
    ("temp_max_c", "temp max [°C]"),
)


def slug(nodeid: str) -> str:
    """A folder name for a test: readable, unique (a short hash of the full id)."""
    name = re.sub(r"[^\w.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")[:80]
    return f"{name}-{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"


def dbc_sha256() -> str:
    """sha256 of the DBC the bench and the codec come from."""
    return hashlib.sha256(DBC_PATH.read_bytes()).hexdigest()


def read_fault_memory(bench: Bench) -> list[dict[str, Any]]:
    """The BMS's stored faults as a workshop tester reads them: UDS 0x19 over a second
    connection to the bench's unix-port BMS (`hil.bench.diag.DiagClient`), freeze frame and
    occurrences included, in the report's units."""
    import can

    from hil.bench.diag import DiagClient
    from hil.bench.provision import read_key_file

    dut = bench.dut
    if dut is None:
        raise RuntimeError("the bench reaches the BMS over --can only: read it with cellguard diag")
    bus = can.Bus(interface="slcan", channel=dut.channel, sleep_after_open=0)
    try:
        secret = read_key_file(dut.key_file)
        with DiagClient(bus, secret=secret, cell_count=bench.pack.n_cells) as client:
            client.wait_ready(3.0)
            return [_entry(e) for e in client.dtcs() if e.status & 0x28]
    finally:
        bus.shutdown()


def _entry(e: Any) -> dict[str, Any]:
    """One DTC (`hil.bench.diag.DtcEntry`) as a row of FAULT_MEMORY_COLUMNS."""
    f = e.freeze
    row: dict[str, Any] = {
        "dtc": e.code,
        "name": e.name,
        "count": e.count,
        "active": int(e.active),
        "first_s": e.first_s,
        "last_s": e.last_s,
    }
    if f:
        row |= {
            "soc_pct": f["soc"] / 100,
            "pack_voltage_v": f["pack_mv"] / 1000,
            "pack_current_a": f["current_ma"] / 1000,
            "cell_v_min": f["cell_min_mv"] / 1000,
            "cell_v_max": f["cell_max_mv"] / 1000,
            "temp_min_c": f["temp_min_dc"] / 10,
            "temp_max_c": f["temp_max_dc"] / 10,
        }
    return row


def collect_bench(
    bench: Bench,
    recorder: Recorder,
    folder: Path,
    root: Path,
    info: RunInfo,
    console: str,
    can_log: Path | None,
) -> dict[str, Any]:
    """Write one bench's artifacts into `folder` (console.log, fault_memory.json, run.png) and
    return their description, paths relative to `root`. Call before the bench is closed: the
    fault memory is read over CAN."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"cells": info.cells, "chemistry": info.chemistry, "seed": info.seed}
    out["steps"] = len(recorder)
    out["simulated_s"] = round(len(recorder) * bench.cycle_ms / 1000, 1)
    (folder / "console.log").write_text(console)
    out["console"] = str((folder / "console.log").relative_to(root))
    try:
        entries = read_fault_memory(bench)
        out["fault_memory"] = entries
        (folder / "fault_memory.json").write_text(json.dumps(entries, indent=1) + "\n")
    except Exception as e:  # noqa: BLE001 - a test may leave the BMS unable to answer; say why
        out["fault_memory_error"] = (
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        )
    plot = overview_plot(recorder, info, folder / "run.png")
    if plot is not None:
        out["plot"] = str(plot.relative_to(root))
    if can_log is not None:
        try:
            out["can_log"] = str(can_log.resolve().relative_to(root))
        except ValueError:  # a log the test put elsewhere
            out["can_log"] = str(can_log.resolve())
    return out


@dataclass
class TestResult:
    """What the reports of one test's phases say."""

    nodeid: str
    outcome: str = "passed"
    """passed, failed, error (setup or teardown failed), skipped, xfailed or xpassed."""
    duration_s: float = 0.0
    detail: str = ""
    benches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, report: pytest.TestReport) -> None:
        """Fold in the report of one phase (setup, call, teardown)."""
        self.duration_s += report.duration
        for key, value in report.user_properties:
            if key == PROPERTY:
                self.benches = json.loads(value)
        xfail = hasattr(report, "wasxfail")
        if report.skipped:
            if xfail:
                self.outcome, self.detail = "xfailed", str(report.wasxfail)
            elif self.outcome == "passed":
                self.outcome = "skipped"
                longrepr = report.longrepr
                reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
                self.detail = reason.removeprefix("Skipped: ")
        elif report.failed:
            if report.when == "call":
                self.outcome = "failed"
            elif self.outcome in ("passed", "skipped"):
                self.outcome = "error"
            self.detail = (self.detail + "\n" + report.longreprtext).strip()
        elif report.when == "call" and xfail:
            self.outcome = "xpassed"


_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#ad1457",
    "skipped": "#757575",
    "xfailed": "#6d4c41",
    "xpassed": "#ef6c00",
}
_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
.verdict { color: white; font-weight: bold; padding: 2px 8px; border-radius: 3px; }
section { border-top: 2px solid #ddd; margin-top: 1.5em; padding-top: 0.5em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; max-height: 30em; }
img { max-width: 100%; border: 1px solid #ddd; }
.facts td:first-child { font-weight: bold; }
"""


def _badge(outcome: str) -> str:
    colour = _COLOURS.get(outcome, "#000")
    return f'<span class="verdict" style="background:{colour}">{outcome.upper()}</span>'


def _anchor(nodeid: str) -> str:
    return "t-" + slug(nodeid)


class TestCentre:
    """Gathers a run's test reports (on the controller) and writes index.html."""

    __test__ = False  # a pytest plugin's class, not a test class

    def __init__(self, root: Path, facts: dict[str, str]) -> None:
        self.root = root
        self.facts = facts
        self.started = datetime.datetime.now().astimezone()
        self.results: dict[str, TestResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold in one phase report (a pytest hook: the plugin registers this object)."""
        result = self.results.setdefault(report.nodeid, TestResult(report.nodeid))
        result.add(report)

    def pytest_sessionfinish(self) -> None:
        """Write the page when the session ends."""
        self.write()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Say where the page is."""
        terminalreporter.write_line(f"cellguard report: {self.root / 'index.html'}")

    def write(self) -> Path:
        """Write DIR/index.html; returns its path."""
        finished = datetime.datetime.now().astimezone()
        counts: dict[str, int] = {}
        for r in self.results.values():
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        facts = {
            "date": self.started.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "duration": f"{(finished - self.started).total_seconds():.1f} s",
            **self.facts,
            "result": ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no tests",
        }
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>cellguard HIL report {html.escape(facts['date'])}</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>cellguard HIL test report</h1>",
            '<table class="facts">',
            *(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                for k, v in facts.items()
            ),
            "</table>",
            '<p>JUnit XML for CI systems: <a href="junit.xml">junit.xml</a></p>',
            "<table><tr><th>verdict</th><th>test</th><th>time [s]</th></tr>",
        ]
        for r in self.results.values():
            parts.append(
                f"<tr><td>{_badge(r.outcome)}</td>"
                f'<td><a href="#{_anchor(r.nodeid)}">{html.escape(r.nodeid)}</a></td>'
                f"<td>{r.duration_s:.2f}</td></tr>"
            )
        parts.append("</table>")
        for r in self.results.values():
            parts += self._section(r)
        parts.append("</body></html>")
        path = self.root / "index.html"
        path.write_text("\n".join(parts) + "\n")
        return path

    def _section(self, r: TestResult) -> list[str]:
        out = [
            f'<section id="{_anchor(r.nodeid)}">',
            f"<h2>{_badge(r.outcome)} {html.escape(r.nodeid)}</h2>",
            f"<p>{r.duration_s:.2f} s</p>",
        ]
        if r.detail:
            out.append(f"<pre>{html.escape(r.detail[-6000:])}</pre>")
        for k, bench in enumerate(r.benches, 1):
            title = f"bench {k}: " if len(r.benches) > 1 else "bench: "
            if "report_error" in bench:
                out.append(f"<p>{title}no report: {html.escape(bench['report_error'])}</p>")
                continue
            out.append(
                f"<h3>{title}{bench['cells']} × {html.escape(bench['chemistry'])}, "
                f"seed {bench['seed']}, {bench['steps']} control periods "
                f"({bench['simulated_s']} s simulated)</h3>"
            )
            links = [f'<a href="{html.escape(bench["console"])}">firmware console</a>']
            if "can_log" in bench:
                links.append(f'<a href="{html.escape(bench["can_log"])}">CAN log (BLF)</a>')
            out.append("<p>" + " · ".join(links) + "</p>")
            if "plot" in bench:
                out.append(
                    f'<img src="{html.escape(bench["plot"])}" alt="run of {html.escape(r.nodeid)}">'
                )
            out += _fault_memory(bench)
        out.append("</section>")
        return out


def _fault_memory(bench: dict[str, Any]) -> list[str]:
    if "fault_memory_error" in bench:
        return [f"<p>fault memory not read: {html.escape(bench['fault_memory_error'])}</p>"]
    entries = bench.get("fault_memory", [])
    if not entries:
        return ["<p>fault memory: empty</p>"]
    rows = ["<p>fault memory (read out after the test):</p><table><tr>"]
    rows.append("".join(f"<th>{html.escape(label)}</th>" for _, label in FAULT_MEMORY_COLUMNS))
    rows.append("</tr>")
    for e in entries:
        cells = []
        for key, _ in FAULT_MEMORY_COLUMNS:
            v = e.get(key, "")
            cells.append(f"<td>{html.escape(f'{v:g}' if isinstance(v, float) else str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return rows


def run_facts(config: pytest.Config, board: str) -> dict[str, str]:
    """What the page says ran: board, firmware, DBC, versions, command line."""
    return {
        "board": board,
        "firmware version": firmware.__version__,
        "DBC": f"{DBC_PATH.name} sha256 {dbc_sha256()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pytest": pytest.__version__,
        "command": " ".join(["pytest", *config.invocation_params.args]),
        "host": platform.node() or "?",
    }
