"""Single-cell lab traces in the CSV trace format `time_s,current_a,voltage_v,temperature_c`.

Current is positive for discharge. Readers refuse malformed files with the file name and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
from numpy.typing import NDArray

TRACE_COLUMNS = ("time_s", "current_a", "voltage_v", "temperature_c")
"""Header names of the trace format (exact; any order; extra columns are ignored)."""


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Trace:
    """One cell's recorded test: equal-length arrays, time strictly increasing."""

    path: Path
    time_s: NDArray[np.float64]
    current_a: NDArray[np.float64]
    voltage_v: NDArray[np.float64]
    temperature_c: NDArray[np.float64]

    @property
    def temperature(self) -> float:
        """The test's temperature: median of the temperature column (degC)."""
        return float(np.median(self.temperature_c))


def read_trace(path: Path) -> Trace:
    """Read and check a trace CSV; raises `TraceError` naming the file and line."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            header = [name.strip() for name in next(csv.reader(handle), [])]
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    missing = [name for name in TRACE_COLUMNS if name not in header]
    if missing:
        raise TraceError(
            f"{path}:1: missing column(s) {', '.join(missing)}; header must name "
            f"{','.join(TRACE_COLUMNS)}"
        )
    cols = [header.index(name) for name in TRACE_COLUMNS]
    try:
        values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, ndmin=2)
    except ValueError:
        _raise_first_bad_row(path, cols)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise TraceError(f"{path}:{row + 2}: {TRACE_COLUMNS[col]} is not finite")
    if len(values) < 2:
        raise TraceError(f"{path}: needs at least two samples")
    back = np.flatnonzero(np.diff(values[:, 0]) <= 0.0)
    if len(back):
        row = int(back[0]) + 1
        raise TraceError(f"{path}:{row + 2}: time_s does not increase ({values[row, 0]:g} s)")
    return Trace(path, *(values[:, j].copy() for j in range(len(cols))))


def _raise_first_bad_row(path: Path, cols: list[int]) -> NoReturn:
    """Find the line numpy could not parse and say what is wrong with it."""
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if line == 1:
                continue
            for j, col in enumerate(cols):
                cell = row[col] if col < len(row) else "<missing>"
                try:
                    float(cell)
                except ValueError:
                    raise TraceError(
                        f"{path}:{line}: {TRACE_COLUMNS[j]} is not a number: {cell!r}"
                    ) from None
    raise TraceError(f"{path}: cannot parse as CSV")


def write_trace(
    path: Path,
    time_s: NDArray[np.float64],
    current_a: NDArray[np.float64],
    voltage_v: NDArray[np.float64],
    temperature_c: NDArray[np.float64],
) -> None:
    """Write a trace CSV (voltage to 0.1 mV, current to 0.1 mA, temperature to 0.01 degC)."""
    table = np.column_stack([time_s, current_a, voltage_v, temperature_c])
    np.savetxt(
        path,
        table,
        delimiter=",",
        header=",".join(TRACE_COLUMNS),
        comments="",
        fmt=("%.3f", "%.4f", "%.4f", "%.2f"),
    )
