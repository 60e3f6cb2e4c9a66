"""HMAC-SHA-256 (RFC 2104) on MicroPython's `hashlib`, which has no `hmac`: what the seed/key,
the image MAC (firmware/security.py) and the vehicle requests' MAC (firmware/secoc.py) share. A
module of its own so a board without the diagnostic server does not load the security code."""

import hashlib


def hmac_sha256(key, prefix, msg):
    """HMAC-SHA-256(key, bytes((prefix,)) + msg) for a key of at most 64 bytes (RFC 2104)."""
    pad = bytearray(64)
    for i in range(len(key)):
        pad[i] = key[i] ^ 0x36
    for i in range(len(key), 64):
        pad[i] = 0x36
    h = hashlib.sha256(pad)
    h.update(bytes((prefix,)))
    h.update(msg)
    inner = h.digest()
    for i in range(64):
        pad[i] ^= 0x36 ^ 0x5C
    h = hashlib.sha256(pad)
    h.update(inner)
    return h.digest()
