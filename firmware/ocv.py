"""SOC, open-circuit voltage and charge conversions shared by the estimator and the balancer.

Integers only: SOC 0.01 % (0..10000), voltages mV, charge mAs, `table` the 21-point OCV table of
the configuration (SOC 0, 5, ..., 100 %), `mas_per_pct` the charge of 1 % of capacity.
"""

from .compat import const

_SOC_FULL = const(10000)
_SOC_STEP = const(500)  # OCV table pitch: 5 % in 0.01 %


def _segment(mv, table):
    # Index k of the table step that holds `mv` (table[k] <= mv < table[k + 1]), clamped.
    k = 0
    last = len(table) - 2
    while k < last and table[k + 1] <= mv:
        k += 1
    return k


def ocv_to_soc(mv, table):
    """SOC (0.01 %) of a cell at rest with open-circuit voltage `mv`; clamped to 0..10000."""
    if mv <= table[0]:
        return 0
    if mv >= table[len(table) - 1]:
        return _SOC_FULL
    k = _segment(mv, table)
    return k * _SOC_STEP + (mv - table[k]) * _SOC_STEP // (table[k + 1] - table[k])


def ocv_rise(mv, table):
    """Rise (mV) of the OCV table step that holds `mv`: how sharply OCV resolves SOC there."""
    k = _segment(mv, table)
    return table[k + 1] - table[k]


def soc_to_ocv(soc, table):
    """Open-circuit voltage (mV) at `soc` (0.01 %, clamped to 0..10000)."""
    if soc <= 0:
        return table[0]
    if soc >= _SOC_FULL:
        return table[len(table) - 1]
    k = soc // _SOC_STEP
    return table[k] + (table[k + 1] - table[k]) * (soc - k * _SOC_STEP) // _SOC_STEP


def mas_to_soc(q, mas_per_pct):
    """SOC (0.01 %) that charge `q` (mAs) is. Split at whole percent so that no product exceeds
    100 * mas_per_pct (< 2**30). No divmod: its tuple would allocate."""
    return (q // mas_per_pct) * 100 + (q % mas_per_pct) * 100 // mas_per_pct


def soc_to_mas(soc, mas_per_pct):
    """Charge (mAs) of `soc` (0.01 %)."""
    return (soc // 100) * mas_per_pct + (soc % 100) * mas_per_pct // 100


def clamp_soc(s):
    """`s` clamped to 0..10000."""
    if s < 0:
        return 0
    if s > _SOC_FULL:
        return _SOC_FULL
    return s
