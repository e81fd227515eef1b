"""The binary wire format: a fixed little-endian header, then a body (brief section 4).

Header (32 bytes, struct "<2sBBBBHIIIIII"):

    magic b"TM" | format version | kind | value encoding | index encoding | sample count (u16)
    | model version | round | n (dimension) | k (entries carried) | body length | CRC-32

The CRC-32 covers the first 28 header bytes and the body. Kinds: MODEL (dense θ_g, the server's
announcement), DELTA (a device's sparse update), COMMAND (a JSON round command).

Body of MODEL and DELTA: the index section, then the value section.
- Index encodings: ALL (dense, k == n, no bytes), VARINT (gaps between ascending indices, LEB128:
  about one byte an entry at P = 10 %), BITMAP (ceil(n/8) bytes, for dense selections).
- Value encodings: F32, F16 (IEEE half, saturating), INT8 (a float32 scale, then k signed bytes
  q with value = q·scale, scale = max|v|/127).

Everything here runs on MicroPython: struct, array and plain loops, no large temporaries.
"""

import json
import math
import struct
from array import array

from device_agent import limits, reasons
from device_agent.checksum import crc32
from device_agent.float16 import pack_half, unpack_half

MAGIC = b"TM"
FORMAT_VERSION = 1
HEADER = "<2sBBBBHIIIIII"
HEADER_SIZE = 32
CRC_OFFSET = 28
BODY_LEN_OFFSET = 24

KIND_MODEL = 1
KIND_DELTA = 2
KIND_COMMAND = 3
KINDS = (KIND_MODEL, KIND_DELTA, KIND_COMMAND)

INDEX_ALL = 0
INDEX_VARINT = 1
INDEX_BITMAP = 2
INDEX_AUTO = 255

VALUE_F32 = 0
VALUE_F16 = 1
VALUE_INT8 = 2
VALUE_SIZES = (4, 2, 1)
VALUE_NAMES = ("f32", "f16", "int8")

MAX_SAMPLES = limits.MAX_SAMPLES


def zeros(n, typecode="f"):
    """An array of n zeros made in one allocation (a long-lived buffer leaves no hole behind).

    array("f", bytes(4 * n)) first makes a bytes object of the same size, whose garbage leaves
    an n-entry hole in the heap beside the array; a range has a length, so the array is
    allocated once, at its size, then zeroed."""
    out = array(typecode, range(n))
    for i in range(n):
        out[i] = 0
    return out


class CodecError(ValueError):
    """A payload that cannot be accepted; `reason` is a short machine-readable cause."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


class Header:
    """The decoded fixed header of a payload."""

    def __init__(self, fields):
        (
            self.magic,
            self.version,
            self.kind,
            self.value_enc,
            self.index_enc,
            self.samples,
            self.model_version,
            self.round,
            self.n,
            self.k,
            self.body_len,
            self.crc,
        ) = fields

    def size(self):
        """Total payload size (header and body) in bytes."""
        return HEADER_SIZE + self.body_len


def value_encoding(name):
    """The value encoding code for 'f32', 'f16' or 'int8'."""
    if name not in VALUE_NAMES:
        raise CodecError(reasons.BAD_VALUE_ENCODING, str(name))
    return VALUE_NAMES.index(name)


def varint_size(indices):
    """Bytes the VARINT index section takes for ascending `indices`."""
    total = 0
    prev = -1
    for idx in indices:
        gap = idx - prev - 1
        prev = idx
        total += 1
        while gap >= 128:
            gap >>= 7
            total += 1
    return total


def index_section_size(index_enc, n, indices):
    """Bytes of the index section for an encoding."""
    if index_enc == INDEX_ALL:
        return 0
    if index_enc == INDEX_BITMAP:
        return (n + 7) // 8
    return varint_size(indices)


def choose_index_encoding(n, indices):
    """ALL for a dense selection, otherwise the smaller of VARINT and BITMAP."""
    if len(indices) == n:
        return INDEX_ALL
    if varint_size(indices) <= (n + 7) // 8:
        return INDEX_VARINT
    return INDEX_BITMAP


def int8_scale(values):
    """The INT8 scale max|v|/127 as a float32 value; 1.0 when every value is zero or so tiny
    that the scale underflows float32 (all codes are then 0, and a zero scale is invalid)."""
    top = 0.0
    for v in values:
        a = v if v >= 0.0 else -v
        if a > top:
            top = a
    if top == 0.0 or top != top:
        return 1.0
    scale = struct.unpack("<f", struct.pack("<f", top / 127.0))[0]
    return scale if scale > 0.0 else 1.0


def int8_code(v, scale):
    """The signed byte for v at `scale`: round half up, clamped to [-127, 127]."""
    q = int(math.floor(v / scale + 0.5))
    return -127 if q < -127 else (127 if q > 127 else q)


def encode(
    kind,
    n,
    indices,
    values,
    model_version=0,
    round_no=0,
    samples=0,
    value_enc=VALUE_F32,
    index_enc=INDEX_AUTO,
):
    """Encode a MODEL or DELTA payload; returns a bytearray.

    `indices` are ascending positions in a vector of n entries (None means all n, dense) and
    `values[j]` is the value at indices[j].
    """
    k = n if indices is None else len(indices)
    if index_enc == INDEX_AUTO:
        index_enc = INDEX_ALL if indices is None else choose_index_encoding(n, indices)
    if index_enc == INDEX_ALL and k != n:
        raise CodecError(reasons.BAD_LENGTHS, "dense encoding needs k == n")
    if len(values) != k or samples > MAX_SAMPLES or samples < 0:
        raise CodecError(reasons.BAD_LENGTHS, "values/indices/samples do not agree")
    isize = index_section_size(index_enc, n, indices)
    vsize = value_section_size(k, value_enc)
    buf = bytearray(HEADER_SIZE + isize + vsize)
    _write_indices(buf, HEADER_SIZE, index_enc, n, indices)
    _write_values(buf, HEADER_SIZE + isize, value_enc, values)
    _finish(buf, kind, value_enc, index_enc, samples, model_version, round_no, n, k)
    return buf


def _finish(buf, kind, value_enc, index_enc, samples, model_version, round_no, n, k):
    body_len = len(buf) - HEADER_SIZE
    struct.pack_into(
        HEADER,
        buf,
        0,
        MAGIC,
        FORMAT_VERSION,
        kind,
        value_enc,
        index_enc,
        samples,
        model_version,
        round_no,
        n,
        k,
        body_len,
        0,
    )
    crc = crc32(buf, 0, 0, CRC_OFFSET)
    crc = crc32(buf, crc, HEADER_SIZE, len(buf))
    struct.pack_into("<I", buf, CRC_OFFSET, crc)


def _write_indices(buf, pos, index_enc, n, indices):
    if index_enc == INDEX_BITMAP:
        for idx in indices:
            buf[pos + (idx >> 3)] |= 1 << (idx & 7)
    elif index_enc == INDEX_VARINT:
        prev = -1
        for idx in indices:
            gap = idx - prev - 1
            prev = idx
            while gap >= 128:
                buf[pos] = (gap & 0x7F) | 0x80
                gap >>= 7
                pos += 1
            buf[pos] = gap
            pos += 1


def _write_values(buf, pos, value_enc, values):
    if value_enc == VALUE_F32:
        for v in values:
            struct.pack_into("<f", buf, pos, v)
            pos += 4
    elif value_enc == VALUE_F16:
        for v in values:
            pack_half(buf, pos, v)
            pos += 2
    else:
        scale = int8_scale(values)
        struct.pack_into("<f", buf, pos, scale)
        pos += 4
        for v in values:
            struct.pack_into("<b", buf, pos, int8_code(v, scale))
            pos += 1


def encode_command(command, model_version=0, round_no=0):
    """Encode a round command (a JSON-able dict) as a COMMAND payload (compact JSON)."""
    body = json.dumps(command, separators=(",", ":")).encode()
    buf = bytearray(HEADER_SIZE + len(body))
    buf[HEADER_SIZE:] = body
    _finish(buf, KIND_COMMAND, 0, 0, 0, model_version, round_no, 0, 0)
    return buf


def decode_header(buf, max_size=limits.MAX_PAYLOAD, crc_ok=None):
    """Parse and check the header and checksum of a payload; raises CodecError with a reason.

    `crc_ok(buf, header)` replaces the pure-Python CRC check (the server passes zlib's); every
    other check is this one function on both sides of the wire.
    """
    size = len(buf)
    if size < HEADER_SIZE:
        raise CodecError(reasons.TRUNCATED, "%d bytes, header needs %d" % (size, HEADER_SIZE))
    if size > max_size:
        raise CodecError(reasons.OVERSIZED, "%d bytes > %d" % (size, max_size))
    h = Header(struct.unpack_from(HEADER, buf, 0))
    if h.magic != MAGIC:
        raise CodecError(reasons.BAD_MAGIC)
    if h.version != FORMAT_VERSION:
        raise CodecError(
            reasons.BAD_VERSION, "format %d, expected %d" % (h.version, FORMAT_VERSION)
        )
    if h.kind not in KINDS:
        raise CodecError(reasons.BAD_KIND, str(h.kind))
    if h.body_len != size - HEADER_SIZE:
        raise CodecError(
            reasons.BAD_LENGTHS, "body %d, header says %d" % (size - HEADER_SIZE, h.body_len)
        )
    if not (crc_ok or _crc_ok)(buf, h):
        raise CodecError(reasons.BAD_CHECKSUM)
    if h.kind != KIND_COMMAND:
        _check_layout(h)
    return h


def declared_size(buf):
    """The size a payload's header declares (header plus body length), or -1 without a header:
    tells an unsigned message (exactly this long) from one followed by a tag."""
    if len(buf) < HEADER_SIZE:
        return -1
    return HEADER_SIZE + struct.unpack_from("<I", buf, BODY_LEN_OFFSET)[0]


def _crc_ok(buf, h):
    crc = crc32(buf, 0, 0, CRC_OFFSET)
    return crc32(buf, crc, HEADER_SIZE, len(buf)) == h.crc


def value_section_size(k, value_enc):
    """Bytes of the value section: k values, plus the float32 scale for int8."""
    return k * VALUE_SIZES[value_enc] + (4 if value_enc == VALUE_INT8 else 0)


def _check_layout(h):
    if h.value_enc > VALUE_INT8 or h.index_enc > INDEX_BITMAP:
        raise CodecError(reasons.BAD_ENCODING, "value %d index %d" % (h.value_enc, h.index_enc))
    if h.k > h.n or (h.index_enc == INDEX_ALL and h.k != h.n):
        raise CodecError(reasons.BAD_LENGTHS, "k=%d n=%d" % (h.k, h.n))
    vsize = value_section_size(h.k, h.value_enc)
    if h.index_enc == INDEX_BITMAP and h.body_len != (h.n + 7) // 8 + vsize:
        raise CodecError(reasons.BAD_LENGTHS, "bitmap body %d" % h.body_len)
    if h.body_len < vsize:
        raise CodecError(reasons.BAD_LENGTHS, "body %d < values %d" % (h.body_len, vsize))


def decode_command(buf, max_size=limits.MAX_COMMAND):
    """Decode a COMMAND payload into (header, dict)."""
    h = decode_header(buf, max_size)
    if h.kind != KIND_COMMAND:
        raise CodecError(reasons.BAD_KIND, "expected a command")
    try:
        command = json.loads(bytes(buf[HEADER_SIZE:]))
    except ValueError:
        raise CodecError(reasons.BAD_JSON) from None
    if not isinstance(command, dict):
        raise CodecError(reasons.BAD_JSON, "a command is a JSON object")
    return h, command


def decode_indices(buf, h):
    """The ascending indices of a checked payload as array('I'); checks order and range."""
    out = zeros(h.k, "I")
    if h.index_enc == INDEX_ALL:
        for i in range(h.k):
            out[i] = i
        return out, HEADER_SIZE
    if h.index_enc == INDEX_BITMAP:
        return _decode_bitmap(buf, h, out)
    return _decode_varint(buf, h, out)


def _decode_bitmap(buf, h, out):
    j = 0
    nbytes = (h.n + 7) // 8
    for b in range(nbytes):
        byte = buf[HEADER_SIZE + b]
        while byte:
            low = byte & -byte
            idx = b * 8 + _bit_position(low)
            if idx >= h.n or j >= h.k:
                raise CodecError(reasons.BAD_INDICES, "bitmap has extra bits")
            out[j] = idx
            j += 1
            byte ^= low
    if j != h.k:
        raise CodecError(reasons.BAD_INDICES, "bitmap has %d bits, k=%d" % (j, h.k))
    return out, HEADER_SIZE + nbytes


def _bit_position(low):
    pos = 0
    while low > 1:
        low >>= 1
        pos += 1
    return pos


def _decode_varint(buf, h, out):
    pos = HEADER_SIZE
    end = HEADER_SIZE + h.body_len - value_section_size(h.k, h.value_enc)
    prev = -1
    for j in range(h.k):
        gap = 0
        shift = 0
        while True:
            if pos >= end or shift > 28:
                raise CodecError(reasons.BAD_INDICES, "varint runs past the index section")
            byte = buf[pos]
            pos += 1
            gap |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        prev = prev + gap + 1
        if prev >= h.n:
            raise CodecError(reasons.BAD_INDICES, "index %d >= n=%d" % (prev, h.n))
        out[j] = prev
    if pos != end:
        raise CodecError(reasons.BAD_LENGTHS, "index section has %d spare bytes" % (end - pos))
    return out, pos


def decode_values(buf, h, pos, out=None, offset=0):
    """Decode the k values starting at byte `pos` into out[offset:offset+k]; checks finiteness.

    With `out` None a new array('f') of k values is returned; passing the parameter array lets a
    device load a model without a temporary copy.
    """
    if out is None:
        out = zeros(h.k)
    _scan_values(buf, h, pos, out, offset)
    return out


def check_values(buf, h, pos):
    """Check that the k values starting at byte `pos` are finite, storing none of them: how a
    device vets a model on receipt without a second parameter-sized array."""
    _scan_values(buf, h, pos, None, 0)


def _scan_values(buf, h, pos, out, offset):
    """Read the k values from `pos`, raising CodecError(BAD_VALUES) at the first non-finite one
    (or a bad int8 scale); store them in out[offset:] unless `out` is None."""
    enc = h.value_enc
    scale = 1.0
    if enc == VALUE_INT8:
        scale = struct.unpack_from("<f", buf, pos)[0]
        pos += 4
        if not (scale == scale and 0.0 < scale < 3.0e38):
            raise CodecError(reasons.BAD_VALUES, "int8 scale %r" % scale)
    for j in range(h.k):
        if enc == VALUE_F32:
            v = struct.unpack_from("<f", buf, pos)[0]
            pos += 4
        elif enc == VALUE_F16:
            v = unpack_half(buf, pos)
            pos += 2
        else:
            v = struct.unpack_from("<b", buf, pos)[0] * scale
            pos += 1
        if v != v or v in (math.inf, -math.inf):
            raise CodecError(reasons.BAD_VALUES, "non-finite value at entry %d" % j)
        if out is not None:
            out[offset + j] = v


def decode(buf, max_size=limits.MAX_PAYLOAD):
    """Decode a whole MODEL or DELTA payload into (header, indices, values)."""
    h = decode_header(buf, max_size)
    if h.kind == KIND_COMMAND:
        raise CodecError(reasons.BAD_KIND, "a command has no vector")
    indices, pos = decode_indices(buf, h)
    return h, indices, decode_values(buf, h, pos)
