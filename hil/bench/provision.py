"""Board secrets and firmware images on the desktop side: the provisioning record and signed images.

The VCU key record (format in firmware/secoc.py) holds the per-vehicle key the BMS and the VCU
share for VCU_Request's MAC. The provisioning record (format in firmware/security.py) holds a
board's serial number and its 32-byte secret; the board keeps it as storage "provision", the
tester a copy (a key file). The seed/key, image MAC and VCU MAC computed here use Python's
`hmac`, an implementation independent of the firmware's.

Usage:
    record = new_record("SIM-1A2B3C4D")            # random secret
    serial, secret = parse_record(record)
    image = build_image(firmware_files(bundle), secret)
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
import secrets
import struct
from pathlib import Path

MAGIC = b"CGP1"
KEY_LEN = 8
IMAGE_MAGIC = b"CGIM"
VCU_KEY_MAGIC = b"CGK1"
VCU_KEY_FILE = "vcu_key"
"""The storage record of the per-vehicle VCU_Request key (format in firmware/secoc.py)."""


def new_vcu_key_record(key: bytes | None = None) -> bytes:
    """A "vcu_key" record holding `key` (16 bytes; default: fresh random bytes)."""
    key = key if key is not None else secrets.token_bytes(16)
    if len(key) != 16:
        raise ValueError("the VCU key is 16 bytes")
    body = VCU_KEY_MAGIC + key
    return body + struct.pack("<I", binascii.crc32(body))


def parse_vcu_key(data: bytes) -> bytes:
    """The key of a "vcu_key" record; ValueError when it is not one."""
    if len(data) != 24 or data[:4] != VCU_KEY_MAGIC:
        raise ValueError("not a cellguard VCU key record")
    if struct.unpack("<I", data[20:])[0] != binascii.crc32(data[:20]):
        raise ValueError("VCU key record damaged (CRC)")
    return bytes(data[4:20])


def new_record(serial: str, secret: bytes | None = None) -> bytes:
    """A provisioning record for `serial` (at most 16 ASCII characters) with a fresh secret."""
    raw = serial.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"serial {serial!r}: at most 16 characters")
    secret = secret if secret is not None else secrets.token_bytes(32)
    if len(secret) != 32:
        raise ValueError("the secret is 32 bytes")
    body = MAGIC + raw.ljust(16, b"\0") + secret
    return body + struct.pack("<I", binascii.crc32(body))


def parse_record(data: bytes) -> tuple[str, bytes]:
    """(serial, secret) of a provisioning record; ValueError when it is not one."""
    if len(data) != 56 or data[:4] != MAGIC:
        raise ValueError("not a cellguard provisioning record")
    if struct.unpack("<I", data[52:])[0] != binascii.crc32(data[:52]):
        raise ValueError("provisioning record damaged (CRC)")
    return data[4:20].rstrip(b"\0").decode("ascii"), bytes(data[20:52])


def read_key_file(path: str | Path) -> bytes:
    """The secret from a key file (a provisioning record)."""
    return parse_record(Path(path).read_bytes())[1]


def seed_key(secret: bytes, seed: bytes) -> bytes:
    """The key the board expects for `seed` (security access level 1)."""
    return hmac.new(secret, b"\x01" + bytes(seed), hashlib.sha256).digest()[:KEY_LEN]


def image_mac(secret: bytes, digest: bytes) -> bytes:
    """The MAC of an image whose SHA-256 is `digest`."""
    return hmac.new(secret, b"\x02" + digest, hashlib.sha256).digest()


def firmware_files(bundle: Path, exclude: tuple[str, ...] = ("can_codec_peer.mpy",)) -> dict:
    """`firmware/<name>.mpy` -> bytes of a bundle's firmware package (what an image carries)."""
    out = {}
    for p in sorted((Path(bundle) / "firmware").glob("*.mpy")):
        if p.name not in exclude:
            out[f"firmware/{p.name}"] = p.read_bytes()
    return out


def build_image(files: dict[str, bytes], secret: bytes) -> bytes:
    """The image stream (format in firmware/slots.py) of `files`, signed with `secret`."""
    entries = b""
    for name, data in files.items():
        raw = name.encode("ascii")
        entries += bytes((len(raw),)) + raw + struct.pack("<I", len(data)) + data
    total = 16 + len(entries) + 64
    header = IMAGE_MAGIC + bytes((1, len(files), 0, 0)) + struct.pack("<II", total, 0)
    digest = hashlib.sha256(header + entries).digest()
    return header + entries + digest + image_mac(secret, digest)


def default_key_dir() -> Path:
    """Where `cellguard flash --provision` keeps the key files of the boards it provisioned."""
    return Path(os.environ.get("CELLGUARD_KEY_DIR", Path.home() / ".cellguard" / "keys"))


PROVISION_FILE = "provision"
"""The storage record of a board's serial and secret (format in firmware/security.py)."""


def keys_folder(serial: str, key_dir: Path | None = None) -> Path:
    """The folder of the key files of the board `serial` (`board_keys`); ValueError for a serial
    that is not 1-16 letters, digits, '-', '_' or '.' (not starting with '.')."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}", serial):
        raise ValueError(f"serial {serial!r}: 1-16 letters, digits, '-', '_' or '.'")
    return (key_dir or default_key_dir()) / serial


def board_keys(serial: str, key_dir: Path | None = None) -> tuple[Path, bool]:
    """The folder holding the key files of the board `serial` (`provision`, `vcu_key`) and
    whether they were made now: a board provisioned before keeps its records, so flashing it
    again never changes the keys its tester and vehicle hold. New folders and files are readable
    by their owner only; ValueError when a file there is not a valid record."""
    folder = keys_folder(serial, key_dir)
    prov, vcu = folder / PROVISION_FILE, folder / VCU_KEY_FILE
    if prov.exists() or vcu.exists():
        for path, parse in ((prov, parse_record), (vcu, parse_vcu_key)):
            try:
                got = parse(path.read_bytes())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
            if path == prov and got[0] != serial:
                raise ValueError(f"{path}: the record of serial {got[0]!r}, not {serial!r}")
        return folder, False
    record = new_record(serial)  # checks the serial before anything is written
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, data in ((prov, record), (vcu, new_vcu_key_record())):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return folder, True
