"""IEEE 754 half precision, packed and unpacked with round-to-nearest-even on every port.

Uses struct's 'e' format where the port has it and exact bit manipulation where it does not;
both give the same bits (tested against numpy's float16).
"""

import struct

try:
    struct.pack("<e", 1.0)
    HAVE_E = True
except (ValueError, struct.error):
    HAVE_E = False


MAX_HALF = 65504.0
MAX_HALF_BITS = 0x7BFF


def f32_bits(v):
    """The IEEE float32 bit pattern of v."""
    return struct.unpack("<I", struct.pack("<f", v))[0]


def half_from_float(v):
    """The float16 bit pattern (int) nearest to v, ties to even; saturates at ±65504 (NaN stays)."""
    b = f32_bits(v)
    sign = (b >> 16) & 0x8000
    exp = (b >> 23) & 0xFF
    man = b & 0x7FFFFF
    if exp == 0xFF and man:
        return sign | 0x7E00
    e = exp - 127 + 15
    if e >= 31:
        return sign | MAX_HALF_BITS
    if e <= 0:
        if e < -10:
            return sign
        man |= 0x800000
        shift = 14 - e
        half = man >> shift
        rest = man & ((1 << shift) - 1)
        mid = 1 << (shift - 1)
        if rest > mid or (rest == mid and half & 1):
            half += 1
        return sign | half
    half = (e << 10) | (man >> 13)
    rest = man & 0x1FFF
    if rest > 0x1000 or (rest == 0x1000 and half & 1):
        half += 1
    return sign | (half if half < 0x7C00 else MAX_HALF_BITS)


def float_from_half(h):
    """The float value of float16 bit pattern h."""
    sign = -1.0 if h & 0x8000 else 1.0
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    if exp == 0:
        return sign * man * 5.960464477539063e-08
    if exp == 31:
        return sign * float("inf") if man == 0 else float("nan")
    return sign * (1.0 + man / 1024.0) * (2.0 ** (exp - 15))


def pack_half(buf, offset, v):
    """Write v as float16 little-endian at buf[offset], saturating at ±65504."""
    if HAVE_E:
        if v > MAX_HALF:
            v = MAX_HALF
        elif v < -MAX_HALF:
            v = -MAX_HALF
        struct.pack_into("<e", buf, offset, v)
    else:
        struct.pack_into("<H", buf, offset, half_from_float(v))


def unpack_half(buf, offset):
    """Read a little-endian float16 at buf[offset] as a float."""
    if HAVE_E:
        return struct.unpack_from("<e", buf, offset)[0]
    return float_from_half(struct.unpack_from("<H", buf, offset)[0])
