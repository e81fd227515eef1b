"""The server's vectorised decoder for DELTA and MODEL payloads: the same checks and the same
results as device_agent.codec.decode (parity-tested, rejection reasons included), with numpy
instead of per-byte Python loops, so one service can take updates from thousands of devices."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from device_agent import codec, limits, reasons
from device_agent.codec import CodecError


def _crc_ok(buf: bytes, h: codec.Header) -> bool:
    crc = zlib.crc32(buf[: codec.CRC_OFFSET])
    return zlib.crc32(buf[codec.HEADER_SIZE :], crc) == h.crc


def decode_header(buf: bytes, max_size: int = limits.MAX_PAYLOAD) -> codec.Header:
    """codec.decode_header's checks, with zlib's CRC-32."""
    return codec.decode_header(buf, max_size, _crc_ok)


def _varint_indices(section: np.ndarray, h: codec.Header) -> np.ndarray:
    ends = np.flatnonzero(section < 128)
    if len(ends) != h.k or (len(ends) and ends[-1] != len(section) - 1):
        if len(ends) < h.k or (len(ends) and ends[min(h.k, len(ends)) - 1] >= len(section)):
            raise CodecError(reasons.BAD_INDICES, "varint runs past the index section")
        raise CodecError(reasons.BAD_LENGTHS, "index section has spare bytes")
    starts = np.concatenate(([0], ends[:-1] + 1)) if h.k else np.zeros(0, dtype=np.int64)
    if h.k and np.max(ends - starts) > 4:
        raise CodecError(reasons.BAD_INDICES, "varint runs past the index section")
    gaps = np.zeros(h.k, dtype=np.int64)
    for shift in range(5):
        pos = starts + shift
        take = pos <= ends
        gaps[take] |= (section[pos[take]].astype(np.int64) & 0x7F) << (7 * shift)
    idx = np.cumsum(gaps + 1) - 1
    if h.k and idx[-1] >= h.n:
        raise CodecError(reasons.BAD_INDICES, "index %d >= n=%d" % (idx[-1], h.n))
    return idx


def _bitmap_indices(section: np.ndarray, h: codec.Header) -> np.ndarray:
    bits = np.unpackbits(section, bitorder="little")
    idx = np.flatnonzero(bits)
    if len(idx) and idx[-1] >= h.n:
        raise CodecError(reasons.BAD_INDICES, "bitmap has extra bits")
    if len(idx) != h.k:
        raise CodecError(reasons.BAD_INDICES, "bitmap has %d bits, k=%d" % (len(idx), h.k))
    return idx


def decode(
    buf: bytes, max_size: int = limits.MAX_PAYLOAD
) -> tuple[codec.Header, np.ndarray, np.ndarray]:
    """(header, int64 indices, float32 values) of a MODEL or DELTA payload."""
    h = decode_header(buf, max_size)
    if h.kind == codec.KIND_COMMAND:
        raise CodecError(reasons.BAD_KIND, "a command has no vector")
    data = np.frombuffer(buf, dtype=np.uint8, offset=codec.HEADER_SIZE)
    vsize = codec.value_section_size(h.k, h.value_enc)
    isize = h.body_len - vsize
    if h.index_enc == codec.INDEX_ALL:
        idx = np.arange(h.k, dtype=np.int64)
    elif h.index_enc == codec.INDEX_BITMAP:
        idx = _bitmap_indices(data[:isize], h)
    else:
        idx = _varint_indices(data[:isize], h)
    values = _values(buf, h, codec.HEADER_SIZE + isize)
    bad = ~np.isfinite(values)
    if bad.any():
        raise CodecError(reasons.BAD_VALUES, "non-finite value at entry %d" % int(np.argmax(bad)))
    return h, idx, values


def _values(buf: bytes, h: codec.Header, pos: int) -> np.ndarray:
    if h.value_enc == codec.VALUE_F32:
        return np.frombuffer(buf, dtype="<f4", count=h.k, offset=pos).astype(np.float32)
    if h.value_enc == codec.VALUE_F16:
        return np.frombuffer(buf, dtype="<f2", count=h.k, offset=pos).astype(np.float32)
    (scale,) = struct.unpack_from("<f", buf, pos)
    if not (scale == scale and 0.0 < scale < 3.0e38):
        raise CodecError(reasons.BAD_VALUES, "int8 scale %r" % scale)
    q = np.frombuffer(buf, dtype=np.int8, count=h.k, offset=pos + 4)
    return (q.astype(np.float64) * scale).astype(np.float32)


def encode_model(theta: np.ndarray, version: int, values: str = "f32") -> bytes:
    """The dense MODEL payload of θ (version and round `version`) with its values encoded as
    `values` (f32, f16 or int8 with a scale): the agent's own encoder, so both sides agree."""
    enc = codec.value_encoding(values)
    flat = np.asarray(theta, dtype=np.float32).tolist()
    return bytes(codec.encode(codec.KIND_MODEL, len(flat), None, flat, version, version, 0, enc))


def model_values(payload: bytes) -> np.ndarray:
    """θ as a device decodes it from a MODEL payload (float32; what it trains on)."""
    return decode(payload)[2]
