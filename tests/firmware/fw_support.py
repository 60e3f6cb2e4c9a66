"""Helpers shared by the firmware tests; runs under CPython and MicroPython."""

from firmware import config
from firmware.measurement import Measurements


def raises_naming(overrides, key):
    """True if config.load(overrides) raises ValueError whose message names `key`."""
    try:
        config.load(overrides)
    except ValueError as e:
        return key in str(e)
    return False


def feed(meas, cfg, mv=3700, dc=250, current_ma=0, now_ms=0):
    """Fill every group and the pack value with uniform readings, then update the stats."""
    for g in range((cfg.cell_count + 3) // 4):
        meas.set_cells(g, mv, mv, mv, mv, now_ms)
    for g in range((cfg.temp_count + 3) // 4):
        meas.set_temps(g, dc, dc, dc, dc, now_ms)
    pack = cfg.cell_count * mv
    meas.set_pack(current_ma, pack, pack, now_ms)
    meas.update_stats()


def fresh(overrides=None, mv=3700, dc=250, current_ma=0, now_ms=0):
    """A config and a Measurements filled with uniform fresh readings."""
    cfg = config.load(overrides)
    meas = Measurements(cfg)
    feed(meas, cfg, mv, dc, current_ma, now_ms)
    return cfg, meas
