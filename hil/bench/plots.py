"""The PNG plots of a run report (`cellguard sim`) and of a test (the test-centre report).

Every figure is titled with the run (scenario, cells, chemistry, seed: `RunInfo.title`), so a
PNG shared alone still says what it shows; every time axis shades the scenario's phases (rest,
drive, charge) and marks where the fault tier rose (warning, derate, open). Per-cell quantities
are drawn as the plant's minimum-maximum envelope with its mean, and the BMS's published extremes
beside them, so 96 or 192 cells read as easily as 16. Long runs are drawn from per-bin minima and
maxima (`_binned`), which keeps every spike.

Files (`write_plots`): soc.png, cell_voltages.png, temperatures.png, cell_soc.png, pack.png,
current_limits.png, soh.png, timeline.png, balancing.png, firmware.png; `overview_plot` draws
one compact figure for a test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench.loop import BMS_STATES, FAULT_NAMES
from hil.bench.report import Recorder, RunInfo, tier_name

PHASE_COLOURS = {"rest": "0.85", "charge": "#b8e0b8", "cccv-charge": "#b8e0b8"}
"""Background of each scenario phase; any other phase (a drive cycle) is DRIVE_COLOUR."""
DRIVE_COLOUR = "#f6d7b0"
TIER_COLOURS = {1: "#d4a017", 2: "#e07000", 3: "#c00000"}
_BINS = 3000  # points per line on a long run: minima and maxima of this many bins
_DPI = 110


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    # Tick labels as values, never "1e-5+3.5237e1": a reader should not have to add them up.
    matplotlib.rcParams["axes.formatter.useoffset"] = False
    import matplotlib.pyplot as plt

    return plt


class _Axis:
    """The time axis of a run: hours for long runs, minutes for shorter, seconds for tests."""

    def __init__(self, t_s: np.ndarray) -> None:
        span = float(t_s[-1] - t_s[0]) if len(t_s) > 1 else 0.0
        if span > 3 * 3600:
            self.scale, self.label = 3600.0, "time [h]"
        elif span > 600:
            self.scale, self.label = 60.0, "time [min]"
        else:
            self.scale, self.label = 1.0, "time [s]"

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        return np.asarray(t_s) / self.scale


def _binned(
    x: np.ndarray, y: np.ndarray, bins: int = _BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, min, mean, max) of `y` over `bins` equal slices (the data itself when short)."""
    if len(x) <= 2 * bins:
        return x, y, y, y
    edges = np.linspace(0, len(x), bins + 1).astype(int)
    starts = edges[:-1]
    finite = np.where(np.isfinite(y), y, np.nan)
    with np.errstate(all="ignore"):
        lo = np.fmin.reduceat(finite, starts)
        hi = np.fmax.reduceat(finite, starts)
        counts = np.add.reduceat(np.isfinite(finite).astype(float), starts)
        sums = np.add.reduceat(np.nan_to_num(finite), starts)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return x[starts], lo, mean, hi


def _line(ax: Any, x: np.ndarray, y: np.ndarray, label: str, **kw: Any) -> None:
    """A line; on a long run its bins' mean with the minimum-maximum band around it."""
    bx, lo, mean, hi = _binned(x, y)
    (line,) = ax.plot(bx, mean, label=label, linewidth=kw.pop("linewidth", 0.9), **kw)
    if bx is not x:
        ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)


def _envelope(
    ax: Any,
    x: np.ndarray,
    lo: np.ndarray,
    mean: np.ndarray,
    hi: np.ndarray,
    label: str,
    colour: str,
) -> None:
    """The plant's per-cell minimum-maximum band and mean."""
    bx, lo_min, _, _ = _binned(x, lo)
    _, _, _, hi_max = _binned(x, hi)
    _, _, mean_mean, _ = _binned(x, mean)
    ax.fill_between(
        bx, lo_min, hi_max, color=colour, alpha=0.3, linewidth=0, label=f"{label} min-max"
    )
    ax.plot(bx, mean_mean, color=colour, linewidth=1.0, label=f"{label} mean")


def _legend(ax: Any, fontsize: int = 8, ncol: int = 1) -> None:
    """The legend in the upper right, with headroom above the data so it covers none of it."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    rows = -(-len(handles) // ncol)
    height_in = ax.get_position().height * ax.figure.get_figheight()
    share = min(0.6, (rows * fontsize * 1.45 / 72 + 0.08) / max(height_in, 0.5))
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, lo + (hi - lo) / (1 - share))
    ax.legend(fontsize=fontsize, loc="upper right", ncol=ncol)


def _spans(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(first index, last index + 1, code) of every run of equal codes."""
    if len(codes) == 0:
        return []
    change = np.flatnonzero(np.diff(codes)) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, len(codes)]
    return [(int(a), int(b), int(codes[a])) for a, b in zip(starts, ends, strict=True)]


class _Figure:
    """One report figure: title with the run, phase shading and tier markers on its axes."""

    def __init__(self, rec: Recorder, info: RunInfo, what: str, rows: int, height: float) -> None:
        plt = _mpl()
        self.plt = plt
        self.rec = rec
        self.t = rec.column("t_s")
        self.axis = _Axis(self.t)
        self.x = self.axis(self.t)
        ratios = [1] * rows
        self.fig, axes = plt.subplots(
            rows, 1, figsize=(11, height), sharex=True, squeeze=False, height_ratios=ratios
        )
        self.axes = list(axes[:, 0])
        self.fig.suptitle(f"{what}\n{info.title}", fontsize=11)
        self.axes[-1].set_xlabel(self.axis.label)

    def shade(self, ax: Any) -> None:
        """Background colour per scenario phase."""
        codes, names = self.rec.codes("segment")
        t = self.x
        if len(names) < 2 and names and names[0] not in PHASE_COLOURS:
            return  # one phase that is not a rest or a charge (a test): nothing to tell apart
        end = t[-1] + (t[1] - t[0] if len(t) > 1 else 0)
        for a, b, code in _spans(codes):
            colour = PHASE_COLOURS.get(names[code], DRIVE_COLOUR)
            ax.axvspan(
                t[a], t[b] if b < len(t) else end, color=colour, alpha=0.45, linewidth=0, zorder=0
            )

    def markers(self, ax: Any) -> None:
        """A vertical line where the fault tier rose, coloured by the new tier."""
        tier = self.rec.column("fault_tier")
        rises = np.flatnonzero(np.diff(tier) > 0) + 1
        for i in rises[:60]:  # a flapping warning must not paint the plot over
            ax.axvline(
                self.x[i], color=TIER_COLOURS.get(int(tier[i]), "k"), linewidth=0.8, alpha=0.8
            )

    def decorate(self) -> None:
        """Shading, markers, grid on every axis; one legend entry for the phases and tiers."""
        for ax in self.axes:
            self.shade(ax)
            self.markers(ax)
            ax.grid(True, alpha=0.4)
        handles = self._phase_handles()
        if handles:
            self.fig.legend(
                handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False
            )

    def _phase_handles(self) -> list[Any]:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        _, names = self.rec.codes("segment")
        handles: list[Any] = []
        if len(names) > 1 or (names and names[0] in PHASE_COLOURS):
            for name in names:
                colour = PHASE_COLOURS.get(name, DRIVE_COLOUR)
                handles.append(Patch(color=colour, alpha=0.6, label=f"phase: {name}"))
        tiers = sorted({int(x) for x in self.rec.column("fault_tier")} - {0})
        for tier in tiers:
            handles.append(
                Line2D(
                    [], [], color=TIER_COLOURS.get(tier, "k"), label=f"tier rose: {tier_name(tier)}"
                )
            )
        return handles

    def save(self, path: Path) -> Path:
        """Lay out and write the PNG."""
        self.fig.tight_layout(rect=(0, 0.04, 1, 1))
        self.fig.savefig(path, dpi=_DPI)
        self.plt.close(self.fig)
        return path


def _limit_lines(
    ax: Any, data: Sequence[np.ndarray], lines: Sequence[tuple[float, str, str]]
) -> None:
    """Threshold lines: those near the data are drawn, the rest named in a note, so the data keeps
    the height of the plot."""
    values = np.concatenate([d[np.isfinite(d)] for d in data if len(d)])
    if len(values) == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1e-6)
    off = []
    for value, label, colour in lines:
        if lo - 0.6 * span <= value <= hi + 0.6 * span:
            ax.axhline(value, color=colour, linestyle="--", linewidth=1.0, label=label)
        else:
            off.append(f"{label}")
    if off:
        ax.text(
            0.01,
            0.02,
            "off scale: " + "; ".join(off),
            transform=ax.transAxes,
            fontsize=7,
            color="0.3",
        )


def _soc(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(rec, info, "State of charge: BMS estimate against the plant", 2, 6.5)
    ax, ax2 = f.axes
    _line(ax, f.x, rec.column("soc_true_pct"), "plant (mean cell SOC)", color="C0")
    _line(
        ax,
        f.x,
        rec.column("soc_bms_pct"),
        "BMS estimate (BMS_Pack.SOC)",
        color="C1",
        linestyle="--",
    )
    ax.set_ylabel("SOC [%]")
    _legend(ax, fontsize=8)
    err = rec.column("soc_bms_pct") - rec.column("soc_true_pct")
    bound = rec.column("soc_bound_pct")
    bx, _, b, _ = _binned(f.x, bound)
    ax2.fill_between(bx, -b, b, color="C0", alpha=0.15, label="BMS error bound (BMS_Estimation)")
    _line(ax2, f.x, err, "error, BMS - plant", color="C3")
    ax2.axhline(0, color="0.3", linewidth=0.6)
    ax2.set_ylabel("SOC error [%-points]")
    _legend(ax2, fontsize=8)
    f.decorate()
    return f.save(path)


def _per_cell(
    ax: Any,
    f: _Figure,
    plant: tuple[str, str, str],
    bms: tuple[str, str, str],
    colour: str,
    limits: Sequence[tuple[float, str, str]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The plant's min/mean/max columns `plant` as an envelope, the BMS's published extremes
    (`bms`: min and max column and the message name), threshold `limits`; returns the plant's
    min and max and the BMS's."""
    rec = f.rec
    lo, mean, hi = (rec.column(c) for c in plant)
    _envelope(ax, f.x, lo, mean, hi, "plant", colour)
    bms_lo, bms_hi = rec.column(bms[0]), rec.column(bms[1])
    _line(ax, f.x, bms_hi, f"BMS max ({bms[2]})", color="C3", linestyle=":")
    _line(ax, f.x, bms_lo, "BMS min", color="C2", linestyle=":")
    _limit_lines(ax, [lo, hi], limits)
    _legend(ax, fontsize=7, ncol=2)
    return lo, hi, bms_lo, bms_hi


def _thresholds(
    info: RunInfo, spec: Sequence[tuple[str, str, str]], scale: float, unit: str
) -> list[tuple[float, str, str]]:
    """(value, label, colour) of each threshold key of `spec` the run's config has."""
    th = info.thresholds
    return [
        (th[key] * scale, f"{label} {th[key] * scale:g} {unit}", colour)
        for key, label, colour in spec
        if key in th
    ]


def _cell_voltages(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(
        rec, info, f"Cell voltages ({info.cells} cells): plant envelope, BMS extremes", 2, 7
    )
    ax, ax2 = f.axes
    spec = (
        ("cell_ov_mv", "over-voltage", "#c00000"),
        ("cell_charge_max_mv", "charge end (CV)", "0.4"),
        ("cell_discharge_min_mv", "discharge end", "0.4"),
        ("cell_uv_mv", "under-voltage", "#c00000"),
    )
    lo, hi, bms_lo, bms_hi = _per_cell(
        ax,
        f,
        ("cell_v_min", "cell_v_mean", "cell_v_max"),
        ("bms_cell_v_min", "bms_cell_v_max", "BMS_CellVoltageStats"),
        "C0",
        _thresholds(info, spec, 0.001, "V"),
    )
    ax.set_ylabel("cell voltage [V]")
    _line(ax2, f.x, 1000 * (hi - lo), "plant max - min", color="C0")
    _line(ax2, f.x, 1000 * (bms_hi - bms_lo), "BMS max - min", color="C3", linestyle=":")
    ax2.set_ylabel("cell spread [mV]")
    _legend(ax2, fontsize=8)
    f.decorate()
    return f.save(path)


def _temperatures(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(
        rec, info, f"Temperatures ({info.cells} sensors): plant envelope, BMS extremes", 1, 5
    )
    (ax,) = f.axes
    spec = (
        ("ot_discharge_dc", "over-temperature", "#c00000"),
        ("ot_charge_dc", "over-temperature charging", "#e07000"),
        ("ut_charge_dc", "under-temperature charging", "#3060c0"),
        ("ut_discharge_dc", "under-temperature", "#203080"),
    )
    _per_cell(
        ax,
        f,
        ("temp_min_c", "temp_mean_c", "temp_max_c"),
        ("bms_temp_min_c", "bms_temp_max_c", "BMS_TempStats"),
        "C1",
        _thresholds(info, spec, 0.1, "°C"),
    )
    ax.set_ylabel("temperature [°C]")
    f.decorate()
    return f.save(path)


def _cell_soc(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(
        rec, info, f"Per-cell SOC ({info.cells} cells): BMS_CellSoc against the plant", 2, 7
    )
    ax, ax2 = f.axes
    t = f.axis(np.array(rec.cell_t))
    plant = np.array(rec.cell_soc) if rec.cell_soc else np.zeros((0, 1))
    bms = np.array(rec.cell_soc_bms) if rec.cell_soc_bms else np.zeros((0, 1))
    if bms.shape != plant.shape:  # the BMS published no per-cell SOC
        bms = np.full(plant.shape, np.nan)
    if len(t) and plant.shape[1]:
        _envelope(ax, t, plant.min(1), plant.mean(1), plant.max(1), "plant", "C0")
        # rows where the BMS had published every cell's SOC (NaN until then)
        known = np.flatnonzero(np.isfinite(bms).all(axis=1))

        def over_cells(values: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
            out = np.full(len(t), np.nan)
            out[known] = reduce(values[known], axis=1)
            return out

        err = bms - plant
        _line(ax, t, over_cells(bms, np.max), "BMS max", color="C3", linestyle=":")
        _line(ax, t, over_cells(bms, np.min), "BMS min", color="C2", linestyle=":")
        _line(ax2, t, over_cells(err, np.max), "highest cell error", color="C3")
        _line(ax2, t, over_cells(err, np.min), "lowest cell error", color="C2")
        rms = np.sqrt(over_cells(err**2, np.mean))
        _line(ax2, t, rms, "RMS over the cells", color="k", linewidth=0.7)
    ax.set_ylabel("cell SOC [%]")
    _legend(ax, fontsize=7, ncol=2)
    ax2.axhline(0, color="0.3", linewidth=0.6)
    ax2.set_ylabel("cell SOC error,\nBMS - plant [%-points]")
    _legend(ax2, fontsize=7)
    f.decorate()
    return f.save(path)


def _pack(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(rec, info, "Pack voltage and current: BMS_Pack against the plant", 3, 8)
    ax, ax2, ax3 = f.axes
    v, bms_v = rec.column("pack_v"), rec.column("bms_pack_v")
    i, bms_i = rec.column("current_a"), rec.column("bms_current_a")
    _line(ax, f.x, v, "plant", color="C0")
    _line(ax, f.x, bms_v, "BMS", color="C1", linestyle="--")
    ax.set_ylabel("pack voltage [V]")
    _legend(ax, fontsize=8)
    _line(ax2, f.x, i, "plant", color="C0")
    _line(ax2, f.x, bms_i, "BMS", color="C1", linestyle="--")
    ax2.set_ylabel("pack current [A]\n(+ = discharge)")
    _legend(ax2, fontsize=8)
    _line(ax3, f.x, bms_v - v, "voltage [V]", color="C0")
    _line(ax3, f.x, bms_i - i, "current [A]", color="C3")
    ax3.axhline(0, color="0.3", linewidth=0.6)
    ax3.set_ylabel("BMS - plant")
    _legend(ax3, fontsize=8)
    f.decorate()
    return f.save(path)


def _current_limits(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(
        rec, info, "Pack current and the BMS's limits (BMS_Limits, BMS_PowerLimits)", 1, 5.5
    )
    (ax,) = f.axes
    _line(
        ax, f.x, rec.column("current_a"), "pack current (+ = discharge)", color="k", linewidth=0.7
    )
    _line(ax, f.x, rec.column("discharge_limit_a"), "discharge limit", color="C3")
    _line(ax, f.x, -rec.column("charge_limit_a"), "charge limit (negated)", color="C2")
    for key, label, style in (("10s", "10 s", "--"), ("30s", "30 s", ":")):
        _line(
            ax,
            f.x,
            rec.column(f"discharge_{key}_a"),
            f"discharge {label} power limit",
            color="C3",
            linestyle=style,
            linewidth=0.8,
        )
        _line(
            ax,
            f.x,
            -rec.column(f"charge_{key}_a"),
            f"charge {label} power limit (negated)",
            color="C2",
            linestyle=style,
            linewidth=0.8,
        )
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_ylabel("current [A]")
    _legend(ax, fontsize=7, ncol=2)
    f.decorate()
    return f.save(path)


def _soh(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(rec, info, "State of health (BMS_Estimation)", 2, 6)
    ax, ax2 = f.axes
    _line(ax, f.x, rec.column("soh_capacity_pct"), "capacity / rated", color="C0")
    _line(ax, f.x, rec.column("soh_resistance_pct"), "R0 / profile R0", color="C3")
    ax.axhline(100, color="0.3", linewidth=0.6)
    ax.set_ylabel("SOH [%]")
    _legend(ax, fontsize=8)
    _line(ax2, f.x, rec.column("soh_capacity_confidence_pct"), "capacity", color="C0")
    _line(ax2, f.x, rec.column("soh_resistance_confidence_pct"), "resistance", color="C3")
    ax2.set_ylabel("confidence [%]")
    ax2.set_ylim(-5, 105)
    _legend(ax2, fontsize=8)
    f.decorate()
    return f.save(path)


def _timeline(rec: Recorder, info: RunInfo, path: Path) -> Path:
    faults = rec.column("faults")
    seen = [i for i in range(len(FAULT_NAMES)) if ((faults >> i) & 1).any()]
    f = _Figure(rec, info, "Contactors, BMS state, fault tier and the faults that occurred", 4, 8)
    ax_c, ax_s, ax_t, ax_f = f.axes
    x = f.x
    contactors = {
        "contactor_neg": "negative",
        "contactor_pre": "precharge",
        "contactor_pos": "positive",
    }
    for k, name in enumerate(contactors):
        y = rec.column(name)
        ax_c.fill_between(x, 2 * k, 2 * k + 0.8 * y, step="post", color=f"C{k}", linewidth=0)
        ax_c.step(x, 2 * k + 0.8 * y, where="post", color=f"C{k}", linewidth=0.6)
    ax_c.set_yticks([0.4, 2.4, 4.4], list(contactors.values()), fontsize=8)
    ax_c.set_ylabel("contactor\nclosed")
    state = rec.column("state")
    shown = sorted({int(v) for v in state} | {1, 3})  # STANDBY and CLOSED always, for scale
    ax_s.step(x, [shown.index(int(v)) for v in state], where="post", color="C4")
    names = [BMS_STATES[v] if v < len(BMS_STATES) else str(v) for v in shown]
    ax_s.set_yticks(range(len(shown)), names, fontsize=8)
    ax_s.set_ylabel("BMS state")
    tier = rec.column("fault_tier")
    ax_t.step(x, tier, where="post", color="k")
    ax_t.set_yticks(range(4), ["none", "warning", "derate", "open"], fontsize=8)
    ax_t.set_ylim(-0.3, 3.3)
    ax_t.set_ylabel("fault tier")
    for row, bit in enumerate(seen):
        active = ((faults >> bit) & 1).astype(bool)
        for a, b, on in _spans(active.astype(int)):
            if on:
                end = x[b] if b < len(x) else x[-1]
                ax_f.broken_barh([(x[a], max(end - x[a], 1e-9))], (row - 0.35, 0.7), color="C3")
                ax_f.plot(x[a], row, marker="|", color="k", markersize=9)
    if seen:
        ax_f.set_yticks(range(len(seen)), [FAULT_NAMES[b] for b in seen], fontsize=8)
        ax_f.set_ylim(-0.6, len(seen) - 0.4)
    else:
        ax_f.set_yticks([])
        ax_f.text(0.5, 0.5, "no fault occurred", transform=ax_f.transAxes, ha="center", va="center")
    ax_f.set_ylabel("active faults")
    f.decorate()
    return f.save(path)


def _balancing(rec: Recorder, info: RunInfo, path: Path) -> Path:
    f = _Figure(rec, info, "Balancing: cell SOC spread and each cell's bleed duty", 3, 8.5)
    ax, ax2, ax3 = f.axes
    _line(ax, f.x, rec.column("soc_spread_pct"), "plant, max - min cell SOC", color="C2")
    ax.set_ylabel("SOC spread\n[%-points]")
    _legend(ax, fontsize=8)
    start_s, duty = rec.balancing_duty()
    if duty.size:
        from hil.bench.report import BALANCE_BUCKET_S

        x0 = f.axis(start_s)
        width = f.axis(np.array([BALANCE_BUCKET_S]))[0]
        ax2.bar(x0, duty.sum(axis=1), width=width, align="edge", color="C1", linewidth=0)
        cells = duty.shape[1]
        image = ax3.imshow(
            100 * duty.T,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            extent=(x0[0], x0[-1] + width, 0.5, cells + 0.5),
            cmap="Oranges",
            vmin=0,
            vmax=100,
        )
        # an inset colour bar: the heat map keeps the width of the plots above, so their time
        # axes line up
        cbar = f.fig.colorbar(image, cax=ax3.inset_axes((1.005, 0.0, 0.012, 1.0)))
        cbar.set_label("bleed duty [%]", fontsize=8)
        from matplotlib.ticker import MaxNLocator

        ax3.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("cells bleeding\n(mean per minute)")
    ax3.set_ylabel("cell")
    for a in (ax, ax2):
        f.shade(a)
        f.markers(a)
        a.grid(True, alpha=0.4)
    handles = f._phase_handles()
    if handles:
        f.fig.legend(
            handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False
        )
    return f.save(path)


def _firmware(rec: Recorder, info: RunInfo, path: Path, heap_budget: int | None) -> Path:
    plt = _mpl()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    fig.suptitle(f"Firmware cycle time and heap, every control cycle\n{info.title}", fontsize=11)
    us = rec.column("cycle_time_us").astype(float)
    us = us[us > 0]
    if len(us):
        bins = np.logspace(np.log10(max(us.min(), 1)), np.log10(us.max() * 1.01), 60)
        ax.hist(us, bins=bins, color="C0")
        ax.set_xscale("log")
        med, p99 = np.median(us), np.percentile(us, 99)
        for value, label, style in ((med, "median", "-"), (p99, "99th percentile", "--")):
            ax.axvline(value, color="C3", linestyle=style, label=f"{label} {value:.0f} µs")
        ax.legend(fontsize=8)
    ax.set_xlabel("cycle time [µs] (BMS_CycleDiag.CycleTime)")
    ax.set_ylabel("control cycles")
    ax.set_yscale("log")
    heap = rec.column("heap_used").astype(float) / 1024
    heap = heap[heap > 0]
    if len(heap):
        lo, hi = float(heap.min()), float(heap.max())
        pad = max(0.5, 0.05 * (hi - lo))
        ax2.hist(heap, bins=np.linspace(lo - pad, hi + pad, 41), color="C2")
        ax2.set_xlim(lo - 2 * pad, hi + 2 * pad)
        note = f"max {hi:.1f} KiB"
        if heap_budget:
            free = heap_budget / 1024 - hi
            note += f" of a {heap_budget / 1024:.0f} KiB heap ({free:.0f} KiB free)"
        ax2.text(0.02, 0.95, note, transform=ax2.transAxes, fontsize=8, va="top")
        ax2.set_yscale("log")
    ax2.set_xlabel("live heap after GC [KiB] (BMS_CycleDiag.HeapUsed)")
    ax2.set_ylabel("control cycles")
    for a in (ax, ax2):
        a.grid(True, alpha=0.4)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


PLOTS: dict[str, Callable[[Recorder, RunInfo, Path], Path]] = {
    "soc.png": _soc,
    "cell_voltages.png": _cell_voltages,
    "temperatures.png": _temperatures,
    "cell_soc.png": _cell_soc,
    "pack.png": _pack,
    "current_limits.png": _current_limits,
    "soh.png": _soh,
    "timeline.png": _timeline,
    "balancing.png": _balancing,
}


def write_plots(rec: Recorder, out: Path, info: RunInfo) -> list[Path]:
    """Every report plot of `rec` into `out`; returns the files written."""
    if len(rec) == 0:
        return []
    files = [plot(rec, info, out / name) for name, plot in PLOTS.items()]
    files.append(_firmware(rec, info, out / "firmware.png", info.heap_bytes))
    return files


def overview_plot(rec: Recorder, info: RunInfo, path: Path) -> Path | None:
    """One figure of a test's run: SOC, cell voltage envelope, current and limits, contactors and
    the fault tier (None when the test ran no bench step)."""
    if len(rec) == 0:
        return None
    f = _Figure(rec, info, "Test run", 4, 8)
    ax, ax2, ax3, ax4 = f.axes
    _line(ax, f.x, rec.column("soc_true_pct"), "plant", color="C0")
    _line(ax, f.x, rec.column("soc_bms_pct"), "BMS", color="C1", linestyle="--")
    ax.set_ylabel("SOC [%]")
    _legend(ax, fontsize=7)
    lo, mean, hi = (rec.column(f"cell_v_{k}") for k in ("min", "mean", "max"))
    _envelope(ax2, f.x, lo, mean, hi, "plant", "C0")
    _line(ax2, f.x, rec.column("bms_cell_v_max"), "BMS max", color="C3", linestyle=":")
    _line(ax2, f.x, rec.column("bms_cell_v_min"), "BMS min", color="C2", linestyle=":")
    ax2.set_ylabel("cell voltage [V]")
    _legend(ax2, fontsize=7, ncol=2)
    _line(ax3, f.x, rec.column("current_a"), "current (+ = discharge)", color="k")
    _line(ax3, f.x, rec.column("discharge_limit_a"), "discharge limit", color="C3")
    _line(ax3, f.x, -rec.column("charge_limit_a"), "charge limit (negated)", color="C2")
    ax3.set_ylabel("current [A]")
    _legend(ax3, fontsize=7)
    ax4.step(
        f.x, rec.column("contactors_closed"), where="post", color="C4", label="contactors closed"
    )
    ax4.step(f.x, rec.column("fault_tier") / 3, where="post", color="C3", label="fault tier / 3")
    ax4.set_ylim(-0.1, 1.1)
    _legend(ax4, fontsize=7)
    f.decorate()
    return f.save(path)
