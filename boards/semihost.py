"""ARM semihosting on the emulated Cortex-M: the host's files as the board's filesystem, and exit.

QEMU (`-semihosting`) answers a `BKPT 0xAB` with r0 = operation and r1 = a parameter block by
doing the file operation on the host, relative to QEMU's working directory. `HostFs` is a
MicroPython VFS over those calls: mounted at "/", `open`, `os.rename` and `os.remove` reach the
host folder the emulator runs in, so what the firmware stores survives a restart of the emulator
exactly as the sim board's files do. Semihosting cannot list or create directories: `ilistdir`
is empty, and `stat` reports regular files only (a path that opens but cannot be read is a
directory, reported missing, so an import never takes a host folder for a package).

Only the qemu board uses this (`boards/qemu.py`); the calls cost one instruction each in the
emulator's count, so keep them between control cycles.
"""

import io
from array import array

import micropython
import uctypes

from firmware.compat import const

_SYS_OPEN = const(0x01)
_SYS_CLOSE = const(0x02)
_SYS_WRITE = const(0x05)
_SYS_READ = const(0x06)
_SYS_FLEN = const(0x0C)
_SYS_REMOVE = const(0x0E)
_SYS_RENAME = const(0x0F)
_SYS_EXIT_EXTENDED = const(0x20)
_ADP_APPLICATION_EXIT = const(0x20026)
_ENOENT = const(2)
_EIO = const(5)
_S_IFREG = const(0x8000)
_MP_STREAM_CLOSE = const(4)

# fopen modes as semihosting numbers them (r, rb, r+, r+b, w, wb, w+, w+b, a, ab, a+, a+b)
_MODES = ("r", "rb", "r+", "r+b", "w", "wb", "w+", "w+b", "a", "ab", "a+", "a+b")


@micropython.asm_thumb
def _call(r0, r1):
    data(2, 0xBEAB)  # noqa: F821 - BKPT 0xAB, the Thumb semihosting trap


_block = array("I", (0, 0, 0, 0))


def _op(op, a=0, b=0, c=0, d=0):
    blk = _block
    blk[0] = a
    blk[1] = b
    blk[2] = c
    blk[3] = d
    return _call(op, blk)


def exit(code):
    """End the emulator with exit status `code` (QEMU returns it to whoever started it)."""
    _op(_SYS_EXIT_EXTENDED, _ADP_APPLICATION_EXIT, code)


def _cpath(path):
    return path.encode() + b"\0"


def _open(path, mode):
    name = _cpath(path)
    try:
        m = _MODES.index(mode)
    except ValueError:
        raise OSError(22) from None  # EINVAL
    return _op(_SYS_OPEN, uctypes.addressof(name), m, len(name) - 1)


class HostFile(io.IOBase):
    """A host file opened through semihosting (binary or text, read or write)."""

    def __init__(self, fd, text):
        self._fd = fd
        self._text = text

    def readinto(self, buf):
        n = len(buf)
        left = _op(_SYS_READ, self._fd, uctypes.addressof(buf), n)
        if left < 0 or left > n:
            raise OSError(_EIO)
        return n - left

    def read(self, size=-1):
        if size < 0:
            size = _op(_SYS_FLEN, self._fd)
            if size < 0:
                raise OSError(_EIO)
        buf = bytearray(size)
        n = self.readinto(buf)
        data = bytes(buf[:n]) if n < size else bytes(buf)
        return data.decode() if self._text else data

    def write(self, data):
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        if _op(_SYS_WRITE, self._fd, uctypes.addressof(data), n) != 0:
            raise OSError(_EIO)
        return n

    def close(self):
        if self._fd >= 0:
            _op(_SYS_CLOSE, self._fd)
            self._fd = -1

    def ioctl(self, req, arg):
        if req == _MP_STREAM_CLOSE:
            self.close()
            return 0
        return -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HostFs:
    """The host folder QEMU runs in, as a MicroPython VFS (mount with `mount()`)."""

    def _host(self, path):
        return path[1:] if path[:1] == "/" else path

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode="r"):
        fd = _open(self._host(path), mode)
        if fd < 0:
            raise OSError(_ENOENT)
        return HostFile(fd, "b" not in mode)

    def stat(self, path):
        fd = _open(self._host(path), "rb")
        if fd < 0:
            raise OSError(_ENOENT)
        try:
            size = _op(_SYS_FLEN, fd)
            if size > 0:
                one = bytearray(1)
                if _op(_SYS_READ, fd, uctypes.addressof(one), 1) != 0:
                    raise OSError(_ENOENT)  # opens but does not read: a directory
        finally:
            _op(_SYS_CLOSE, fd)
        return (_S_IFREG, 0, 0, 0, 0, 0, size, 0, 0, 0)

    def rename(self, old, new):
        a = _cpath(self._host(old))
        b = _cpath(self._host(new))
        if _op(_SYS_RENAME, uctypes.addressof(a), len(a) - 1, uctypes.addressof(b), len(b) - 1):
            raise OSError(_EIO)

    def remove(self, path):
        name = _cpath(self._host(path))
        if _op(_SYS_REMOVE, uctypes.addressof(name), len(name) - 1):
            raise OSError(_ENOENT)

    def ilistdir(self, path):
        return iter(())

    def chdir(self, path):
        pass

    def getcwd(self):
        return "/"

    def statvfs(self, path):
        return (0,) * 10


def host_random(n):
    """`n` bytes of the host's /dev/urandom (the emulated MPS2 has no random number generator);
    OSError when the host gives fewer."""
    fd = _open("/dev/urandom", "rb")
    if fd < 0:
        raise OSError(_ENOENT)
    with HostFile(fd, False) as f:
        buf = bytearray(n)
        if f.readinto(buf) != n:
            raise OSError(_EIO)
        return bytes(buf)


def mount():
    """Mount the host folder at "/" (once)."""
    import vfs

    try:
        vfs.mount(HostFs(), "/")
    except OSError:
        pass  # already mounted
