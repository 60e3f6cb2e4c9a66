"""The boot record: which firmware image starts, an image on trial, and the roll-back.

Owns the record "boot" on the board's storage (one storage_write, atomic), 12 bytes: b"CGB1",
active slot, good slot (the last one that ran its first cycles), trial (1 while active has not
yet proven itself), tries (starts of the trial slot so far), CRC-32 of bytes 0..8. Slot 0 is the
factory image (the firmware next to main.py, never written by an update: the last resort), 1 and
2 the folders "slot_a" and "slot_b" (firmware/slots.py). Missing or damaged: the factory image.

At every start main.py calls choose(): a trial slot gets one more try (counted and written
before it runs, so a crash, a hang the watchdog ends or a power cut all count); after MAX_TRIES
starts without confirm() the good slot boots again (rolled back). firmware/diag_port.py calls
confirm() once the new image has completed CONFIRM_CYCLES control cycles.
"""

import binascii
import struct

from .compat import const

MAX_TRIES = const(2)
CONFIRM_CYCLES = const(20)
_NAMES = ("", "slot_a", "slot_b")


def read(board):
    """[active, good, trial, tries] of the boot record (the factory image when there is none)."""
    d = board.storage_read("boot")
    if d is not None and len(d) == 12 and d[0:4] == b"CGB1":
        crc = struct.unpack_from("<I", d, 8)[0]
        if binascii.crc32(d[0:8]) == crc and d[4] < 3 and d[5] < 3:
            return [d[4], d[5], d[6], d[7]]
    return [0, 0, 0, 0]


def write(board, r):
    d = bytearray(12)
    d[0:4] = b"CGB1"
    for i in range(4):
        d[4 + i] = r[i]
    struct.pack_into("<I", d, 8, binascii.crc32(d[0:8]))
    board.storage_write("boot", d)


def slot_path(board, slot):
    """Folder of slot 1 or 2 (None: the board has no filesystem for slots)."""
    fn = getattr(board, "storage_path", None)
    return fn(_NAMES[slot]) if fn else None


def choose(board):
    """At start-up: the folder to import the firmware from (None: the factory image)."""
    r = read(board)
    if r[2]:
        if r[3] >= MAX_TRIES:
            print("cellguard: image in slot", r[0], "failed", r[3], "starts: back to slot", r[1])
            r[0] = r[1]
            r[2] = r[3] = 0
        else:
            r[3] += 1
        write(board, r)
    return slot_path(board, r[0]) if r[0] else None


def confirm(board):
    """The running trial image completed its first cycles: it becomes the good one."""
    r = read(board)
    if r[2]:
        r[1] = r[0]
        r[2] = r[3] = 0
        write(board, r)


def target(board):
    """The slot a download goes to (neither active nor good), or 0 while a trial runs."""
    r = read(board)
    if r[2]:
        return 0
    return 2 if r[0] == 1 or r[1] == 1 else 1
