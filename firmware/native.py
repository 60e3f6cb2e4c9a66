"""Per-cell loops as machine code (MicroPython's viper emitter), for the ports that run it.

Frozen into a board's image or compiled by mpy-cross with the board's `-march`, these run some
50 times faster than the same loops as bytecode: the statistics over every cell run each cycle.
Importing this module fails where there is no native code for the running machine (CPython,
a bundle compiled for another architecture: ImportError or ValueError); its users then fall
back to bytecode that computes the same (measurement._scan).
"""

import micropython


@micropython.viper
def scan16(values, n: int, signed: int, r):
    """Into r (an array("i") of at least 5): min, index of the first min, max, index of the
    first max and sum of values[0:n] (an array of 16-bit integers, "h" if `signed` else "H";
    n >= 1). Sums of up to 32768 values fit the 32-bit result."""
    p = ptr16(values)  # noqa: F821 - viper built-in
    q = ptr32(r)  # noqa: F821
    v = int(p[0])
    if signed:
        if v & 0x8000:
            v -= 0x10000
    lo = v
    hi = v
    ilo = 0
    ihi = 0
    total = v
    i = 1
    while i < n:
        v = int(p[i])
        if signed:
            if v & 0x8000:
                v -= 0x10000
        if v < lo:
            lo = v
            ilo = i
        elif v > hi:
            hi = v
            ihi = i
        total += v
        i += 1
    q[0] = lo
    q[1] = ilo
    q[2] = hi
    q[3] = ihi
    q[4] = total


@micropython.viper
def unpack_group(data, dst, size: int, bit: int, width: int, signed: int) -> int:
    """A multiplexed CAN payload (bytes or bytearray; the group number g in byte 0) into dst:
    dst[g * size + k] = the `width`-bit little-endian field at bit `bit + k * width`, for the
    k < size with g * size + k < len(dst), sign-extended if `signed` (dst an array of 16-bit
    integers, "h" or "H", width <= 16; every field inside the payload). Returns g."""
    d = ptr8(data)  # noqa: F821 - viper built-in
    q = ptr16(dst)  # noqa: F821
    g = int(d[0])
    i = g * size
    count = int(len(dst)) - i
    if count > size:
        count = size
    mask = (1 << width) - 1
    top = 1 << (width - 1)
    k = 0
    while k < count:
        b = bit + k * width
        j = b >> 3
        s = b & 7
        v = int(d[j])
        if s + width > 8:
            v |= int(d[j + 1]) << 8
            if s + width > 16:
                v |= int(d[j + 2]) << 16
        v = (v >> s) & mask
        if signed:
            if v & top:
                v -= mask + 1
        q[i + k] = v
        k += 1
    return g


@micropython.viper
def pack_group(buf, src, g: int, size: int, bit: int, width: int, length: int):
    """The inverse of unpack_group: buf[0:length] <- group g (byte 0) and the `width`-bit
    little-endian fields at bit `bit + k * width` from src[g * size + k] (0 past len(src)),
    each masked to its width, every other bit cleared (src an array of 16-bit integers,
    width <= 16; every field inside buf[0:length])."""
    d = ptr8(buf)  # noqa: F821 - viper built-in
    q = ptr16(src)  # noqa: F821
    j = 0
    while j < length:
        d[j] = 0
        j += 1
    d[0] = g & 0xFF
    n = int(len(src))
    i = g * size
    mask = (1 << width) - 1
    k = 0
    while k < size:
        v = 0
        if i + k < n:
            v = int(q[i + k]) & mask
        b = bit + k * width
        j = b >> 3
        s = b & 7
        v = v << s
        d[j] = int(d[j]) | (v & 0xFF)
        if s + width > 8:
            d[j + 1] = int(d[j + 1]) | ((v >> 8) & 0xFF)
            if s + width > 16:
                d[j + 2] = int(d[j + 2]) | ((v >> 16) & 0xFF)
        k += 1
