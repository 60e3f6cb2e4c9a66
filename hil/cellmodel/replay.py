"""Replay a recorded measurement trace through the firmware's estimator (`cellguard replay`).

The firmware runs on the MicroPython unix port from the `replay` board's bytecode bundle under a
heap limit, exactly the code a board runs (boards/replay.py), or with `target="qemu[:IMAGE]"` on
the Cortex-M image (`hil.toolchain.image`, float32: `qemu:an500` is the FPU image), where the
firmware and the replay board are frozen in and the trace arrives on the emulated console. This
module validates and converts the CSV files, streams the trace to that process and collects its
per-sample estimates.

Trace and truth files are read by `hil.cellmodel.traces` (the project's one reader; its docstring
has the format). The firmware holds each sample until the next one, so a gap in the log is a held
sample (the CLI reports gaps). Truth CSV: time_s,soc_true (percent, the mean cell) or
time_s,soc_true_1,...,soc_true_N.
Output CSV: time_s,soc for one cell; time_s,soc,soc_bound,soc_1,...,soc_N for a string (percent).
"""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from hil.bench.children import die_with_parent
from hil.bench.dut import DEFAULT_HEAP, micropython_binary
from hil.cellmodel.traces import PackTrace as Trace
from hil.cellmodel.traces import TraceError, read_truth
from hil.cellmodel.traces import read as read_trace
from hil.toolchain.build import build_bundle

__all__ = ["Trace", "TraceError", "read_trace", "read_truth"]

CONVERGE_PCT = 2.0
"""Error band of the time-to-converge figure (percentage points)."""


@dataclass
class Estimates:
    """The firmware's estimates per trace sample (percent)."""

    time_s: np.ndarray
    soc: np.ndarray
    soc_bound: np.ndarray
    cell_soc: np.ndarray
    """Shape (samples, cells)."""


def firmware_config(
    profile: dict[str, Any], trace: Trace, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The firmware configuration for replaying `trace` with `profile`.

    A trace carries one current and no contactor feedback: the replay board has neither a second
    current sensor nor feedback inputs, and says so (a configuration key, as a board would)."""
    cfg: dict[str, Any] = {"current2_enable": 0, "contactor_feedback": 0}
    cfg.update(overrides or {})
    cfg.update(profile=profile, cell_count=trace.cells, temp_count=trace.temperature_c.shape[1])
    return cfg


def _chunks(trace: Trace) -> Iterator[str]:
    """The trace as the replay board reads it (module docstring of boards/replay.py)."""
    t_ms = np.round((trace.time_s - trace.time_s[0]) * 1000).astype(np.int64)
    i_ma = np.round(trace.current_a * 1000).astype(np.int64)
    mv = np.clip(np.round(trace.voltage_v * 1000), 0, 65535).astype(np.int64)
    dc = np.clip(np.round(trace.temperature_c * 10), -32768, 32767).astype(np.int64)
    table = np.column_stack([t_ms, i_ma, mv, dc])
    for chunk in range(0, len(table), 1000):
        yield "".join(" ".join(map(str, row)) + "\n" for row in table[chunk : chunk + 1000])


def _stream(trace: Trace, sink: IO[str]) -> None:
    try:
        for text in _chunks(trace):
            sink.write(text)
        sink.close()
    except BrokenPipeError:  # the firmware stopped early: its stderr says why
        pass


class _Collector:
    """Takes the firmware's output lines: estimate rows into `out`, anything else as console."""

    def __init__(self, samples: int, cells: int, progress: Callable[[int], None] | None):
        self.out = np.zeros((samples, 2 + cells))
        self.k = 0
        self.console: list[str] = []
        self._progress = progress
        self._partial = ""

    def line(self, line: str) -> None:
        fields = line.split()
        if self.k < len(self.out) and len(fields) == self.out.shape[1] and fields[0].isdigit():
            self.out[self.k] = [float(x) for x in fields]
            self.k += 1
            if self._progress is not None and self.k % 1000 == 0:
                self._progress(self.k)
        else:
            self.console.append(line)

    def chunk(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data.decode(errors="replace")).split("\n")
        for line in lines:
            self.line(line)


def _initial_arg(initial_soc_pct: float | None, bound_pct: float | None = None) -> list[str]:
    if initial_soc_pct is None:
        return []
    if not 0 <= initial_soc_pct <= 100:
        raise TraceError("--initial-soc must be in 0..100")
    out = [str(round(initial_soc_pct * 100))]
    if bound_pct is not None:
        out.append(str(round(min(max(bound_pct, 0.0), 100.0) * 100)))
    return out


def replay(
    trace: Trace,
    config: dict[str, Any],
    *,
    initial_soc_pct: float | None = None,
    heap: str | None = None,
    progress: Callable[[int], None] | None = None,
    target: str = "unix",
    initial_bound_pct: float | None = None,
) -> Estimates:
    """Run the firmware over `trace` with `config` (see `firmware_config`); `progress(k)` is called
    with the number of samples done so far. `initial_soc_pct` starts it as if that SOC had been
    restored with a bound of `initial_bound_pct` (default 30 %). `target` "unix" runs the unix
    port (`heap` a -X heapsize, default DEFAULT_HEAP); "qemu" or "qemu:IMAGE" the Cortex-M image
    (`heap` its MICROPY_HEAP_SIZE, default the smallest full-firmware budget)."""
    if target.startswith("qemu"):
        return _replay_on_image(
            trace, config, initial_soc_pct, heap, progress, target, initial_bound_pct
        )
    if target != "unix":
        raise TraceError(f"unknown target {target!r}: unix or qemu[:IMAGE]")
    heap = heap or DEFAULT_HEAP
    bundle = build_bundle("replay")
    with tempfile.TemporaryDirectory(prefix="cellguard-replay-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config))
        code = (
            f"import sys\nsys.path.insert(0, {str(bundle)!r})\n"
            "import boards.replay as r\nr.main(sys.argv[1:])\n"
        )
        cmd = [micropython_binary(), "-X", f"heapsize={heap}", "-c", code, str(cfg_path)]
        cmd += _initial_arg(initial_soc_pct, initial_bound_pct)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1 << 16,
            preexec_fn=die_with_parent(),
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = threading.Thread(target=_stream, args=(trace, proc.stdin), daemon=True)
        feeder.start()
        got = _Collector(len(trace.time_s), trace.cells, progress)
        for line in proc.stdout:
            got.line(line)
        err = "\n".join(got.console[-40:]) + proc.stderr.read()
        proc.wait()
        feeder.join()
    return _estimates(trace, got, proc.returncode, err, progress)


def _estimates(
    trace: Trace,
    got: _Collector,
    status: int,
    err: str,
    progress: Callable[[int], None] | None,
) -> Estimates:
    out = got.out
    if status != 0 or got.k != len(out):
        raise RuntimeError(f"the firmware stopped after {got.k} of {len(out)} samples:\n{err}")
    if progress is not None:
        progress(got.k)
    out /= 100.0
    return Estimates(trace.time_s, out[:, 0], out[:, 1], out[:, 2:])


def _replay_on_image(
    trace: Trace,
    config: dict[str, Any],
    initial_soc_pct: float | None,
    heap: str | None,
    progress: Callable[[int], None] | None,
    target: str,
    initial_bound_pct: float | None = None,
) -> Estimates:
    """`replay` on the Cortex-M image: the trace on the console, an empty line ends it."""
    from hil.bench.qemu import parse_target, run_on_image
    from hil.toolchain.build import heap_bytes

    args = ["/config.json", *_initial_arg(initial_soc_pct, initial_bound_pct)]
    code = f"print()\nimport boards.replay as r\nr.main({args!r})\n"  # a line of its own after OK
    lines = (text.encode() for text in [*_chunks(trace), "\n"])
    got = _Collector(len(trace.time_s), trace.cells, progress)
    with tempfile.TemporaryDirectory(prefix="cellguard-replay-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        status, console = run_on_image(
            code,
            name=parse_target(target),
            heap=heap_bytes(heap) if heap else None,
            cwd=Path(tmp),
            timeout_s=24 * 3600,
            stdin_lines=lines,
            on_output=got.chunk,
        )
    return _estimates(trace, got, status, console[-4000:], progress)


def write_estimates(path: Path, est: Estimates, single: bool) -> None:
    """The output CSV (see the module docstring)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if single:
            w.writerow(["time_s", "soc"])
            w.writerows(zip(est.time_s.tolist(), est.soc.tolist(), strict=True))
            return
        cells = est.cell_soc.shape[1]
        w.writerow(["time_s", "soc", "soc_bound", *[f"soc_{i}" for i in range(1, cells + 1)]])
        for row in np.column_stack([est.time_s, est.soc, est.soc_bound, est.cell_soc]):
            w.writerow([f"{row[0]:g}", *[f"{v:.2f}" for v in row[1:]]])


def accuracy(est: Estimates, truth_t: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """SOC RMSE, max error (percentage points) and the time (s from the first sample) after which
    the error stays within CONVERGE_PCT (None if it ends outside). With one truth column the pack
    SOC is compared with it; with one per cell every cell's SOC with its own. `bound_held_pct`:
    how often (% of samples) the pack SOC's error stayed within its reported error bound, and
    `bound_rmse_ratio` that bound's median over the pack SOC's RMS error (a bound that means what
    it says: held >= 95 % at <= 3x; both None when the truth is per cell: the bound is the
    pack's)."""
    if truth_t[0] > est.time_s[0] + 1e-9 or truth_t[-1] < est.time_s[-1] - 1e-9:
        raise TraceError("the truth file does not cover the trace's time span")
    ref = np.column_stack([np.interp(est.time_s, truth_t, col) for col in truth.T])
    got = est.soc[:, None] if truth.shape[1] == 1 else est.cell_soc
    err = np.abs(got - ref).max(axis=1)
    out = np.nonzero(err > CONVERGE_PCT)[0]
    if out.size == 0:
        converge: float | None = 0.0
    elif out[-1] == len(err) - 1:
        converge = None
    else:
        converge = float(est.time_s[out[-1] + 1] - est.time_s[0])
    pack_rms = float(np.sqrt(np.mean((got[:, 0] - ref[:, 0]) ** 2)))
    return {
        "soc_rmse_pct": float(np.sqrt(np.mean((got - ref) ** 2))),
        "soc_max_error_pct": float(np.abs(got - ref).max()),
        "converge_2pct_s": converge,
        "bound_held_pct": (
            float(100 * np.mean(np.abs(got[:, 0] - ref[:, 0]) <= est.soc_bound))
            if truth.shape[1] == 1
            else None
        ),
        "bound_rmse_ratio": (
            float(np.median(est.soc_bound)) / pack_rms
            if truth.shape[1] == 1 and pack_rms > 0
            else None
        ),
    }


def simulate_trace(
    chemistry: str,
    cells: int,
    current_a: np.ndarray,
    *,
    soc: float = 0.9,
    seed: int = 0,
) -> tuple[Trace, np.ndarray]:
    """A 1 Hz trace of the plant (sim.pack, sim.sensors: noise, offsets, quantisation) driven by
    `current_a` (A per second, + = discharge), and the true cell SOCs (percent) per sample.

    Like a logger, each row holds simultaneous readings: the plant runs the row's current for the
    second before the row's time, then the sensors read voltage, current and temperature."""
    from sim.pack import Pack, PackConfig
    from sim.sensors import SensorModel

    pack = Pack(PackConfig(chemistry=chemistry, n_cells=cells, soc_mean=soc, seed=seed))
    pack.set_contactors(True, False, True)
    sensors = SensorModel(seed=seed)
    rng = np.random.default_rng(seed)
    n = len(current_a)
    volts = np.zeros((n, cells))
    temps = np.zeros((n, cells))
    truth = np.zeros((n, cells))
    measured = current_a + sensors.current_offset_a + rng.normal(0, sensors.current_noise_a, n)
    for k in range(n):
        for _ in range(10):
            pack.step(0.1, float(current_a[k]))
        m = sensors.measure(pack)
        volts[k] = m.cell_mv / 1000.0
        temps[k] = m.temp_dc / 10.0
        truth[k] = 100.0 * pack.soc
    trace = Trace(
        Path("<simulated>"),
        np.arange(n, dtype=float),
        np.round(measured, 3),
        volts,
        temps,
        cells == 1,
    )
    return trace, truth


def write_trace(path: Path, trace: Trace) -> None:
    """Write `trace` in the trace CSV format (the inverse of `read_trace`)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if trace.single:
            w.writerow(["time_s", "current_a", "voltage_v", "temperature_c"])
        else:
            w.writerow(
                ["time_s", "current_a"]
                + [f"voltage_v_{i}" for i in range(1, trace.cells + 1)]
                + [f"temperature_c_{i}" for i in range(1, trace.temperature_c.shape[1] + 1)]
            )
        for k in range(len(trace.time_s)):
            w.writerow(
                [f"{trace.time_s[k]:g}", f"{trace.current_a[k]:g}"]
                + [f"{v:.3f}" for v in trace.voltage_v[k]]
                + [f"{t:.1f}" for t in trace.temperature_c[k]]
            )
