"""The diagnostic table: every data identifier (DID) and routine the UDS server knows.

Owns the one list that the firmware's server (firmware/uds.py) and the desktop tester
(hil/bench/diag.py, `cellguard diag`) both read, so they cannot disagree. The DTC list is the fault
catalogue itself (firmware/protection.py and the DBC's BMS_Faults; DTC of bit b = 0x1A, b, 0x00).

DIDS, one row per DID, rows separated by ";", fields by spaces, the third field its name:

    DDDD S<n> <source> [W]   a fixed-length string of n bytes (ASCII, NUL padded); W: writable
    DDDD L <name> <fmt> <obj.attr>...  live data: struct format (little endian, like the CAN
                             contract) and one attribute of the BMS per value (a path
                             from firmware.app.Bms; "diag" is firmware/diag_port.py); the
                             attribute's name carries its unit (_mv mV, _ma mA, _dc 0.1 degC, soc,
                             soc_bound 0.01 %, soh_cap and soh_res 0.01 %, _conf %, op_s s)
    DDDD A <name> <fmt> <obj.attr> <cells|temps>   an array in blocks: DID DDDD + k holds
                             elements 16k .. 16k+15 (fewer in the last block) of the pack's
                             cell_count or temp_count, `fmt` per element
    DDDD F <name>            the freeze frame (snapshot only: UDS 0x19 04), layout
                             firmware.fault_memory.FREEZE_FMT

Configuration keys: DID CONFIG_BASE + i is row i of firmware/config.py's schema, a signed 32-bit
value (little endian); written with 0x2E (extended session, security access, contactors open),
checked by config's own rules, persisted and applied at the next ECU reset (0x11 01).

ROUTINES, "RRRR <name> <session>" with session D default, E extended, P programming; those marked
with S after the session need security access.
"""

from .compat import const

CONFIG_BASE = const(0x4000)
BLOCK = const(16)  # elements per array DID
FREEZE_DID = const(0x0120)
EXT_RECORD = const(0x01)  # the extended data record (UDS 0x19 06): count u16, first/last s u32
EXT_FMT = "<HII"
SNAPSHOT_RECORD = const(0x01)  # the snapshot record number of the freeze frame

DIDS = (
    "F190 S17 vin W;"
    "F18C S16 serial;"
    "F195 S16 version;"
    "F187 S16 part;"
    "0100 L pack <IiI meas.pack_mv meas.current_ma meas.link_mv;"
    "0101 L estimate <HHHHBB data.soc.soc data.soc.soc_bound data.soc.soh_cap "
    "data.soc.soh_res data.soc.soh_cap_conf data.soc.soh_res_conf;"
    "0102 L cells <HHHBB meas.vmin_mv meas.vmax_mv meas.vavg_mv meas.vmin_cell meas.vmax_cell;"
    "0103 L temps <hhhBB meas.tmin_dc meas.tmax_dc meas.tavg_dc meas.tmin_sensor "
    "meas.tmax_sensor;"
    "0104 L state <BBBBBI data.contactors.state data.contactors.neg data.contactors.pre "
    "data.contactors.pos data.faults.tier data.faults.active;"
    "0105 L limits <iiii data.limits.charge_ma data.limits.discharge_ma "
    "data.limits.charge_voltage_mv data.limits.discharge_voltage_mv;"
    "0106 L counters <IB fault_memory.op_s diag.config_pending;"
    "0120 F freeze;"
    "0200 A cell_mv <H meas.cell_mv cells;"
    "0280 A temp_dc <h meas.temp_dc temps"
)

ROUTINES = (
    "0202 check_image P S;0301 contactor_test E S;0302 balance_test E S;0303 soc_reanchor E S"
)
RID_CHECK_IMAGE = const(0x0202)
RID_CONTACTOR_TEST = const(0x0301)
RID_BALANCE_TEST = const(0x0302)
RID_SOC_REANCHOR = const(0x0303)


def find(table, key):
    """Start of the row of `key` (4 hex digits, a str) in `table`, or -1. No allocation."""
    i = 0
    n = len(table)
    while i < n:
        if table.startswith(key, i) and table.startswith(" ", i + 4):
            return i
        j = table.find(";", i)
        if j < 0:
            return -1
        i = j + 1
    return -1


def row(table, i):
    """The fields of the row starting at `i` (a new list of str: diagnostic requests only)."""
    j = table.find(";", i)
    return (table[i:] if j < 0 else table[i:j]).split()


def rows(table):
    """Every row's fields (desktop use)."""
    return [r.split() for r in table.split(";")]
