"""A VCU for the firmware tests on a minimal board: signed VCU_Request frames (firmware/secoc.py)
and the key record the board's storage holds. Runs under CPython (MAC from Python's `hmac`, an
implementation independent of the firmware's) and MicroPython (no `hmac` there: the firmware's
own HMAC-SHA-256, which tests/firmware/test_vcu_request.py checks against RFC 4231 vectors)."""

import binascii
import os

from firmware.e2e import crc8_j1850

# A test key per run, as the bench's DUT makes one: none is written down. The Cortex-M image's
# os has no urandom; a test key need not be secret, so random's bits do there.
try:
    KEY = os.urandom(16)
except AttributeError:
    import random

    KEY = bytes(random.getrandbits(8) for _ in range(16))
DATA_ID = b"\x00\x03"


def key_record(key=KEY):
    """The storage record "vcu_key" holding `key`."""
    body = b"CGK1" + key
    crc = binascii.crc32(body)
    return body + bytes((crc & 0xFF, crc >> 8 & 0xFF, crc >> 16 & 0xFF, crc >> 24 & 0xFF))


def hmac_sha256(key, msg):
    try:
        import hashlib
        import hmac
    except ImportError:
        from firmware.mac import hmac_sha256 as fw

        return fw(key, msg[0], msg[1:])
    return hmac.new(key, msg, hashlib.sha256).digest()


def request(close, alive, freshness, reset=0, charge=0, key=KEY):
    """One VCU_Request: request bits, counter, freshness low bits, MAC, E2E CRC."""
    buf = bytearray(8)
    buf[0] = (close & 1) | (reset & 1) << 1 | (charge & 1) << 2 | (alive & 15) << 4
    buf[1] = freshness & 0xFF
    buf[2] = (freshness >> 8) & 0xFF
    fv = bytes((freshness >> 24 & 0xFF, freshness >> 16 & 0xFF, freshness >> 8 & 0xFF))
    msg = b"\x03" + DATA_ID + bytes((buf[0],)) + fv + bytes((freshness & 0xFF,))
    mac = hmac_sha256(key, msg)
    for i in range(4):
        buf[3 + i] = mac[i]
    buf[7] = crc8_j1850(DATA_ID + bytes(buf), 9)
    return bytes(buf)


class Vcu:
    """Counter and freshness that advance by one per frame."""

    def __init__(self, key=KEY):
        self.key = key
        self.alive = 0
        self.freshness = 0

    def frame(self, close, reset=0, charge=0):
        self.alive = (self.alive + 1) & 15
        self.freshness += 1
        return request(close, self.alive, self.freshness, reset, charge, self.key)
