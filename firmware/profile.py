"""Cell profile loader: checks a profile and turns it into the compact tables of cellmodel.

`load(d)` checks a profile dict (the JSON format of docs/estimation.md, already parsed) and
returns a `cellmodel.Profile` in integer units (see there); anything wrong raises ValueError naming
the key and index, so the board halts at start-up with the contactors open.
Runs once at start-up, only when the configuration carries a profile: config.load drops this
module afterwards so its bytecode does not hold the heap.
"""

from array import array

from .cellmodel import Profile

# key, scale to the integer unit, exclusive lower and inclusive upper bound in that unit.
_TABLES = (
    ("ocv_v", 10000, 0, 65535),
    ("hysteresis_v", 10000, -1, 5000),
    ("r0_ohm", 100000, 0, 65535),
    ("r1_ohm", 100000, 0, 65535),
    ("tau1_s", 10, 0, 65535),
    ("r2_ohm", 100000, 0, 65535),
    ("tau2_s", 10, 0, 65535),
)
_KEYS = "format version name chemistry source capacity_ah voltage_min_v voltage_max_v " + (
    "coulombic_efficiency soc_pct temperature_c hysteresis_rate_per_ah fit"
)


def _fail(key, why):
    raise ValueError("profile key '" + key + "': " + why)


def _num(v, key):
    if v is None:
        _fail(key, "missing")
    if type(v) is not int and type(v) is not float:
        _fail(key, "must be a number")
    return v


def _axis(d, key, scale, lo, hi, nmin, nmax):
    v = d.get(key)
    if v is None:
        _fail(key, "missing")
    if not isinstance(v, list) or not nmin <= len(v) <= nmax:
        _fail(key, "needs " + str(nmin) + ".." + str(nmax) + " numbers")
    out = array("h", [0] * len(v))
    for i in range(len(v)):
        x = round(_num(v[i], key) * scale)
        if x <= lo or x > hi or (i and x <= out[i - 1]):
            _fail(key + "[" + str(i) + "]", "must increase strictly within the range")
        out[i] = x
    return out


def load(d):
    """Profile from the parsed JSON `d`; ValueError names the first wrong key."""
    if not isinstance(d, dict):
        raise ValueError("profile must be a JSON object")
    keys = _KEYS.split()
    for key in d:
        if key not in keys and not any(key == t[0] for t in _TABLES):
            _fail(key, "unknown key")
    if d.get("format") != "cellguard-cell-profile":
        _fail("format", "must be 'cellguard-cell-profile'")
    if d.get("version") != 1:
        _fail("version", "must be 1")
    for key in ("name", "source"):
        if type(d.get(key)) is not str:
            _fail(key, "must be a string")
    chem = d.get("chemistry")
    if chem not in ("NMC", "LFP"):
        _fail("chemistry", "must be NMC or LFP")
    cap = round(_num(d.get("capacity_ah"), "capacity_ah") * 1000)
    if not 100 <= cap <= 200000:
        _fail("capacity_ah", "must be in 0.1..200")
    vmin = round(_num(d.get("voltage_min_v"), "voltage_min_v") * 1000)
    vmax = round(_num(d.get("voltage_max_v"), "voltage_max_v") * 1000)
    if not 500 <= vmin < vmax <= 6000:
        _fail("voltage_max_v", "needs 0.5 <= voltage_min_v < voltage_max_v <= 6")
    eta = _num(d.get("coulombic_efficiency"), "coulombic_efficiency")
    if not 0.9 < eta <= 1:
        _fail("coulombic_efficiency", "must be in (0.9, 1]")
    gamma = _num(d.get("hysteresis_rate_per_ah"), "hysteresis_rate_per_ah")
    if not 0 <= gamma <= 10000:
        _fail("hysteresis_rate_per_ah", "must be in 0..10000")
    soc = _axis(d, "soc_pct", 100, -1, 10000, 2, 41)
    if soc[0] != 0 or soc[len(soc) - 1] != 10000:
        _fail("soc_pct", "must run from 0 to 100")
    temp = _axis(d, "temperature_c", 10, -501, 1500, 1, 8)
    p = Profile(chem, cap, vmin, vmax, round(eta * 1000000), round(gamma * 1000), soc, temp)
    for key, scale, lo, hi in _TABLES:
        setattr(
            p, key[: key.find("_")], _table(d.get(key), key, scale, lo, hi, len(temp), len(soc))
        )
    for j in range(len(temp)):
        for k in range(1, len(soc)):
            if p.ocv[j * len(soc) + k] <= p.ocv[j * len(soc) + k - 1]:
                _fail("ocv_v[" + str(j) + "][" + str(k) + "]", "must increase with SOC")
    return p


def _table(rows, key, scale, lo, hi, nt, ns):
    if rows is None:
        _fail(key, "missing")
    if not isinstance(rows, list) or len(rows) != nt:
        _fail(key, "needs one row per temperature_c entry")
    out = array("H", [0] * (nt * ns))
    for j in range(nt):
        row = rows[j]
        if not isinstance(row, list) or len(row) != ns:
            _fail(key + "[" + str(j) + "]", "needs one value per soc_pct entry")
        for k in range(ns):
            x = round(_num(row[k], key) * scale)
            if x <= lo or x > hi:
                _fail(key + "[" + str(j) + "][" + str(k) + "]", "out of range")
            out[j * ns + k] = x
    return out
