"""Make the CI slice of the Panasonic NCR18650PF data (README.md here) from the full dataset.

Run from the repository root: `PYTHONPATH=. python tests/data/panasonic-18650pf/make_slice.py
[DATA]` (DATA: the dataset folder, default ../shared/data/panasonic-18650pf). Writes, next to
this script:

- `lab_25degC_c20_discharge.csv.gz`, `lab_25degC_c20_charge.csv.gz`: copied as they are;
- `lab_25degC_hppc.csv.gz`: the 25 degC HPPC, every sample within `EDGE_S` of a current step
  (the pulses' R0 and the first seconds of relaxation at 10 Hz) and one every `SPARSE_S`
  elsewhere: irregular logging, as labs write it, which `characterize` takes as it is;
- `dyn_25degC_US06.csv.gz` + `_truth.csv.gz`: the 25 degC US06 drive at 1 Hz as
  benchmarks/soc_real.py replays it (`per_second`: the current averaged over each second, the
  charge a coulomb counter sees), and the truth at those times.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.soc_real import per_second
from hil.cellmodel.traces import read, read_truth, write_trace

HERE = Path(__file__).resolve().parent
EDGE_S = 3.0
SPARSE_S = 10.0
STEP_A = 0.05
"""A current change this large (A) between samples is a step."""


def _hppc(src: Path, dst: Path) -> None:
    tr = read(src).cell()
    t, i = tr.time_s, tr.current_a
    steps = t[1:][np.abs(np.diff(i)) > STEP_A]
    near = np.zeros(len(t), dtype=bool)
    for edge in steps:
        near |= np.abs(t - edge) <= EDGE_S
    sparse = np.concatenate([[True], np.diff(np.floor(t / SPARSE_S)) > 0])
    keep = near | sparse
    keep[-1] = True
    write_trace(dst, t[keep], i[keep], tr.voltage_v[keep], tr.temperature_c[keep])


def _drive(src: Path, truth: Path, dst: Path, dst_truth: Path) -> None:
    tr = per_second(read(src))
    tt, soc = read_truth(truth, 1)
    write_trace(dst, tr.time_s, tr.current_a, tr.voltage_v[:, 0], tr.temperature_c[:, 0])
    np.savetxt(
        dst_truth,
        np.column_stack([tr.time_s, np.interp(tr.time_s, tt, soc[:, 0])]),
        delimiter=",",
        header="time_s,soc_true",
        comments="",
        fmt=("%.3f", "%.4f"),
    )


def main(argv: list[str]) -> int:
    """Write the slice from the dataset folder `argv[0]`."""
    data = Path(argv[0]) if argv else Path("../shared/data/panasonic-18650pf")
    for name in ("lab_25degC_c20_discharge.csv.gz", "lab_25degC_c20_charge.csv.gz"):
        shutil.copyfile(data / name, HERE / name)
    _hppc(data / "lab_25degC_hppc.csv.gz", HERE / "lab_25degC_hppc.csv.gz")
    _drive(
        data / "dyn_25degC_US06.csv.gz",
        data / "dyn_25degC_US06_truth.csv.gz",
        HERE / "dyn_25degC_US06.csv.gz",
        HERE / "dyn_25degC_US06_truth.csv.gz",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
