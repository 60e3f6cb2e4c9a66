"""The project's one reader of recorded traces (characterize, replay, the SOC benchmarks).

Trace CSV (plain or gzip, `.gz`), current positive for discharge:
    time_s,current_a,voltage_v,temperature_c                                  (one cell)
    time_s,current_a,voltage_v_1,...,voltage_v_N,temperature_c_1,...,temperature_c_M  (a string)
The one-cell header may name its columns in any order and carry extra columns (ignored).

Files are taken as labs log them: the sample spacing may change within a file (60 s in a C/20,
0.1 s in pulses), a step boundary logged twice in one instant keeps the later row (the one after
the step: the earlier one's current held for no time), and gaps are reported (`Trace.gaps`), not
refused; a logger's jitter (a 1.001 s step in a 1 Hz or 10 Hz log) is no gap. Time running
backwards, a value that is no number or not finite, and a row with missing or extra columns are
refused with the file name and line (`path:line: what`).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
from numpy.typing import NDArray

TRACE_COLUMNS = ("time_s", "current_a", "voltage_v", "temperature_c")
"""Header names of the one-cell trace format (exact; any order; extra columns are ignored)."""
MAX_CELLS = 192
"""Most voltage (and temperature) columns of a string trace."""
GAP_S = 1.0
"""A step between samples longer than this (beyond `GAP_JITTER`) is reported as a gap."""
GAP_JITTER = 0.05
"""Relative slack on `GAP_S`: a logger's clock jitter (a 1.001 s step in a 1 Hz log)."""


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Gap:
    """A step between two samples longer than `GAP_S` (+ jitter)."""

    line: int
    """File line of the sample after the gap."""
    time_s: float
    """Time of the sample after the gap."""
    length_s: float


@dataclass(frozen=True)
class Trace:
    """One cell's recorded test: equal-length arrays, time strictly increasing."""

    path: Path
    time_s: NDArray[np.float64]
    current_a: NDArray[np.float64]
    voltage_v: NDArray[np.float64]
    temperature_c: NDArray[np.float64]
    gaps: tuple[Gap, ...] = ()
    merged_rows: int = 0
    """Rows dropped because the next row has the same time (a step logged twice)."""

    @property
    def temperature(self) -> float:
        """Median of the temperature column (degC): a summary, not the declared test temperature."""
        return float(np.median(self.temperature_c))


@dataclass(frozen=True)
class PackTrace:
    """A recorded trace of one cell or a string: voltages (samples, cells), temps (samples, M)."""

    path: Path
    time_s: NDArray[np.float64]
    current_a: NDArray[np.float64]
    voltage_v: NDArray[np.float64]
    temperature_c: NDArray[np.float64]
    single: bool
    """True for the one-cell format."""
    gaps: tuple[Gap, ...] = field(default=())
    merged_rows: int = 0

    @property
    def cells(self) -> int:
        """Cells in the trace."""
        return int(self.voltage_v.shape[1])

    def cell(self) -> Trace:
        """The one-cell view (first voltage and temperature column)."""
        return Trace(
            self.path,
            self.time_s,
            self.current_a,
            self.voltage_v[:, 0].copy(),
            self.temperature_c[:, 0].copy(),
            self.gaps,
            self.merged_rows,
        )


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), newline="")
    return path.open(newline="")


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with _open(path) as handle:
        for n, row in enumerate(csv.reader(handle), start=1):
            if row:
                yield n, row


def _header(path: Path) -> list[str]:
    try:
        for _, row in _rows(path):
            return [name.strip() for name in row]
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raise TraceError(f"{path}: empty file")


def _numbered(path: Path, header: list[str], stem: str) -> int:
    names = [h for h in header if h.startswith(stem + "_")]
    if names != [f"{stem}_{i}" for i in range(1, len(names) + 1)]:
        raise TraceError(f"{path}:1: columns {', '.join(names)} must be numbered {stem}_1..K")
    return len(names)


def _columns(path: Path, header: list[str]) -> tuple[list[int], list[str], int, bool]:
    """Column indices to read, their names, cells, and whether the file is the one-cell format."""
    if "voltage_v" in header or not any(h.startswith("voltage_v_") for h in header):
        missing = [name for name in TRACE_COLUMNS if name not in header]
        if missing:
            raise TraceError(
                f"{path}:1: missing column(s) {', '.join(missing)}; header must name "
                f"{','.join(TRACE_COLUMNS)} (one cell) or time_s,current_a,voltage_v_1..N,"
                "temperature_c_1..M (a string)"
            )
        return [header.index(name) for name in TRACE_COLUMNS], list(TRACE_COLUMNS), 1, True
    if header[:2] != ["time_s", "current_a"]:
        raise TraceError(f"{path}:1: a string trace's header starts with time_s,current_a")
    n = _numbered(path, header, "voltage_v")
    m = _numbered(path, header, "temperature_c")
    names = [f"voltage_v_{i}" for i in range(1, n + 1)]
    names += [f"temperature_c_{i}" for i in range(1, m + 1)]
    if m == 0 or header != ["time_s", "current_a", *names]:
        raise TraceError(f"{path}:1: expected time_s,current_a,voltage_v_1..N,temperature_c_1..M")
    if n > MAX_CELLS or m > MAX_CELLS:
        raise TraceError(f"{path}:1: at most {MAX_CELLS} cells and {MAX_CELLS} sensors")
    return list(range(len(header))), header, n, False


def _values(path: Path, width: int, cols: list[int], names: list[str]) -> NDArray[np.float64]:
    """The numbers under the header; the first bad row is refused naming its line."""
    try:
        with _open(path) as handle:
            values = np.loadtxt(handle, delimiter=",", skiprows=1, usecols=cols, ndmin=2)
    except (ValueError, IndexError):
        _raise_first_bad_row(path, width, cols, names)
    if values.shape[0] == 0:
        raise TraceError(f"{path}: no samples")
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise TraceError(f"{path}:{row + 2}: {names[col]} is not finite")
    return values


def _raise_first_bad_row(path: Path, width: int, cols: list[int], names: list[str]) -> NoReturn:
    for line, row in _rows(path):
        if line == 1:
            continue
        if len(row) != width:
            what = "missing" if len(row) < width else "extra"
            raise TraceError(
                f"{path}:{line}: {what} columns ({len(row)} values, header has {width})"
            )
        for j, col in enumerate(cols):
            try:
                float(row[col])
            except ValueError:
                raise TraceError(
                    f"{path}:{line}: {names[j]} is not a number: {row[col]!r}"
                ) from None
    raise TraceError(f"{path}: cannot parse as CSV")


def _check_rows(path: Path, width: int) -> int:
    """Refuse rows with missing or extra columns (numpy reads only the columns it is asked);
    returns how many data rows there are."""
    count = -1
    for line, row in _rows(path):
        count += 1
        if len(row) != width:
            what = "missing" if len(row) < width else "extra"
            raise TraceError(
                f"{path}:{line}: {what} columns ({len(row)} values, header has {width})"
            )
    if count <= 0:
        raise TraceError(f"{path}: no samples")
    return count


def _time_order(
    path: Path, values: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Drop the earlier row of every pair logged in one instant; refuse time going back.
    Returns the rows kept and their file lines."""
    step = np.diff(values[:, 0])
    back = np.flatnonzero(step < 0.0)
    if len(back):
        row = int(back[0]) + 1
        raise TraceError(
            f"{path}:{row + 2}: time_s does not increase ({values[row, 0]:g} s after "
            f"{values[row - 1, 0]:g} s)"
        )
    keep = np.concatenate([step > 0.0, [True]])
    return values[keep], np.flatnonzero(keep) + 2


def find_gaps(
    time_s: NDArray[np.float64], lines: NDArray[np.intp] | None = None, gap_s: float = GAP_S
) -> tuple[Gap, ...]:
    """Steps longer than `gap_s` beyond the logger's jitter (`GAP_JITTER`); `lines` are the
    samples' file lines (default: one row per line after the header)."""
    step = np.diff(time_s)
    over = np.flatnonzero(step > gap_s * (1.0 + GAP_JITTER))
    line = (lambda k: int(lines[k])) if lines is not None else (lambda k: k + 2)
    return tuple(Gap(line(int(k) + 1), float(time_s[k + 1]), float(step[k])) for k in over)


def read(path: Path) -> PackTrace:
    """Read and check a trace CSV of one cell or a string (module docstring)."""
    path = Path(path)
    header = _header(path)
    cols, names, cells, single = _columns(path, header)
    rows = _check_rows(path, len(header))
    values = _values(path, len(header), cols, names)
    values, lines = _time_order(path, values)
    merged = rows - len(values)
    if len(values) < 2:
        raise TraceError(f"{path}: needs at least two samples at different times")
    t = values[:, 0].copy()
    return PackTrace(
        path,
        t,
        values[:, 1].copy(),
        values[:, 2 : 2 + cells].copy(),
        values[:, 2 + cells :].copy(),
        single,
        find_gaps(t, lines),
        merged,
    )


def read_trace(path: Path) -> Trace:
    """Read a one-cell trace (the lab tests characterize fits); raises `TraceError`."""
    trace = read(path)
    if not trace.single:
        raise TraceError(f"{path}:1: a one-cell trace is needed, not a string of {trace.cells}")
    return trace.cell()


def read_truth(path: Path, cells: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Truth times (s) and SOC (%), shape (samples, 1) for `time_s,soc_true` or (samples, cells)
    for `time_s,soc_true_1..N`; rows logged in one instant keep the later one."""
    path = Path(path)
    header = _header(path)
    if header == ["time_s", "soc_true"]:
        names = header
    elif (
        header[:1] == ["time_s"] and _numbered(path, header, "soc_true") == cells == len(header) - 1
    ):
        names = header
    else:
        raise TraceError(f"{path}:1: expected time_s,soc_true or time_s,soc_true_1..{cells}")
    _check_rows(path, len(header))
    values = _values(path, len(header), list(range(len(header))), names)
    values, _lines = _time_order(path, values)
    return values[:, 0].copy(), values[:, 1:].copy()


def describe_gaps(trace: Trace | PackTrace, over_s: float = GAP_S) -> str:
    """One line on the trace's gaps longer than `over_s` ('' when there are none)."""
    gaps = [g for g in trace.gaps if g.length_s > over_s]
    if not gaps:
        return ""
    longest = max(gaps, key=lambda g: g.length_s)
    total = math.fsum(g.length_s for g in gaps)
    return (
        f"{trace.path}: {len(gaps)} gap(s) over {over_s:g} s, {total:g} s in all, the "
        f"longest {longest.length_s:g} s before line {longest.line} ({longest.time_s:g} s)"
    )


def write_trace(
    path: Path,
    time_s: NDArray[np.float64],
    current_a: NDArray[np.float64],
    voltage_v: NDArray[np.float64],
    temperature_c: NDArray[np.float64],
) -> None:
    """Write a one-cell trace CSV (voltage to 0.1 mV, current to 0.1 mA, temperature to 0.01
    degC); gzip when `path` ends in `.gz`."""
    table = np.column_stack([time_s, current_a, voltage_v, temperature_c])
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "wt") as handle:
        np.savetxt(
            handle,
            table,
            delimiter=",",
            header=",".join(TRACE_COLUMNS),
            comments="",
            fmt=("%.3f", "%.4f", "%.4f", "%.2f"),
        )
