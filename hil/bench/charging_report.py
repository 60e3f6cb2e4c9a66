"""The DC-charging part of a `cellguard sim --scenario dc-fast-charge` run: the simulated
charger's fault cases, and the session's report (`charging.png`, `charging.csv`, summary keys).

`charging.png` has three panels on one time axis: the voltage and the current the BMS asked for
(BCL, as the charger received it) against what the charger delivered; the charger's stages as a
timeline; the plant's highest cell voltage and temperature against the BMS's limits (cell
charge end and over-voltage, over-temperature while charging).

Usage: ``charger = charger_for("over-current"); ...; files = write(link, out, cfg, title)``.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench.charger import ChargerLink, ChargerRow
from sim.charger import STAGES, ChargerFaults, DcCharger

FAULT_CASES = (
    "none",
    "ccs-timeout",
    "no-brm-ack",
    "over-current",
    "stuck-relay",
    "insulation-check",
    "insulation",
    "emergency-stop",
)
"""Values of `cellguard sim --charger-fault` (see `charger_for`)."""

_FAULT_AT_MS = 300_000  # the timed faults strike 5 min into the session


def charger_for(case: str) -> DcCharger:
    """The simulated charger of fault case `case` (FAULT_CASES): a lost CCS, no BRM
    acknowledge, over-current (150 % of BCL), a stuck output relay, an insulation fault at the
    check or while charging, an emergency stop; timed ones 5 min into the session."""
    if case not in FAULT_CASES:
        raise ValueError(f"unknown charger fault {case!r}; valid: {', '.join(FAULT_CASES)}")
    f = ChargerFaults(
        ccs_stops_at=_FAULT_AT_MS if case == "ccs-timeout" else None,
        no_crm_aa=case == "no-brm-ack",
        overcurrent_at=_FAULT_AT_MS if case == "over-current" else None,
        stuck_relay=case == "stuck-relay",
        insulation_at_check=case == "insulation-check",
        insulation_at=_FAULT_AT_MS if case == "insulation" else None,
        emergency_stop_at=_FAULT_AT_MS if case == "emergency-stop" else None,
    )
    # 16 s of insulation check: what the charger log in ../shared/GBT27930.md shows.
    return DcCharger(insulation_ms=16_000, faults=f)


def summary(link: ChargerLink) -> dict[str, Any]:
    """What the session did, for summary.json and the printed summary."""
    ch = link.charger
    rows = link.history
    over = [r.output_a - r.demand_a for r in rows if r.relay and r.output_a > 0]
    return {
        "charger_stages": [f"{t / 1000:.1f} s {name}" for t, name in ch.history],
        "charger_bms_stop": sorted(ch.bms_stop),
        "charger_own_stop": ch.own_stop,
        "charger_cem": ch.cem_sent,
        "charger_bem": [sorted(b) for b in ch.bem_received],
        "charger_attempts": ch.attempts,
        "charger_energy_wh": round(ch.energy_wh, 1),
        "charger_max_over_demand_a": round(max(over), 3) if over else 0.0,
        "charger_frames": len(link.frames),
    }


def write(link: ChargerLink, out: Path, limits: dict[str, float], title: str) -> list[Path]:
    """Write charging.csv and charging.png into `out`; `limits` holds cell_charge_max_v,
    cell_ov_v and ot_charge_c (the BMS's). Returns the files."""
    rows = link.history
    if not rows:
        return []
    csv_path = out / "charging.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f.name for f in fields(ChargerRow)])
        for i, r in enumerate(rows):
            if i % 20 == 0 or i == len(rows) - 1:  # one row per second at 50 ms steps
                w.writerow(list(asdict(r).values()))
    png = out / "charging.png"
    _plot(rows, png, limits, title)
    return [csv_path, png]


def _plot(rows: list[ChargerRow], path: Path, limits: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r.t_s for r in rows]) / 60.0
    fig, (ax_i, ax_v, ax_s, ax_c) = plt.subplots(
        4, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1, 3]}
    )
    fig.suptitle(f"{title}: GB/T 27930 DC charging session")
    ax_i.plot(t, [r.demand_a for r in rows], label="requested (BCL)", color="C0")
    ax_i.plot(t, [r.output_a for r in rows], label="delivered", color="C1", alpha=0.8)
    ax_i.set_ylabel("current [A]")
    ax_i.legend(loc="upper right")
    ax_v.plot(t, [r.demand_v for r in rows], label="requested (BCL)", color="C0")
    ax_v.plot(t, [r.output_v for r in rows], label="charger output", color="C1", alpha=0.8)
    ax_v.set_ylabel("voltage [V]")
    ax_v.legend(loc="lower right")
    codes = {name: k for k, name in enumerate(STAGES)}
    ax_s.step(t, [codes[r.stage] for r in rows], where="post", color="C2")
    ax_s.plot(t, [0.5 if r.relay else np.nan for r in rows], color="C3", lw=4, label="relay")
    ax_s.set_yticks(range(len(STAGES)), STAGES, fontsize=7)
    ax_s.set_ylabel("charger")
    ax_s.legend(loc="upper right", fontsize=7)
    ax_c.plot(t, [r.cell_max_v for r in rows], color="C4", label="highest cell (plant)")
    ax_c.axhline(limits["cell_charge_max_v"], color="C4", ls="--", label="charge end")
    ax_c.axhline(limits["cell_ov_v"], color="red", ls="--", label="over-voltage")
    ax_c.set_ylabel("cell voltage [V]")
    ax_t = ax_c.twinx()
    ax_t.plot(t, [r.temp_max_c for r in rows], color="C5", label="hottest sensor (plant)")
    ax_t.axhline(limits["ot_charge_c"], color="C5", ls=":", label="over-temperature (charge)")
    ax_t.set_ylabel("temperature [degC]")
    lines = ax_c.get_legend_handles_labels()
    more = ax_t.get_legend_handles_labels()
    ax_c.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=7)
    ax_c.set_xlabel("time [min]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
