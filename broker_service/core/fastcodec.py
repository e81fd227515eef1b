"""The server's vectorised decoder for DELTA and MODEL payloads: the same checks and the same
results as device_agent.codec.decode (parity-tested, rejection reasons included), with numpy
instead of per-byte Python loops, so one service can take updates from thousands of devices.

Two fast paths give the same results as the general code: a VARINT index section whose gaps are
all below 128 (one byte each, the usual case at P = 10 %) is a single cumulative sum, and float16
values are read through a table of all 65,536 codes (the table is `astype(float32)` of every
code, so a lookup equals the conversion bit for bit). `decode_many` decodes the updates that
arrived together: those of the common shape (one-byte VARINT gaps, float16 values) in one pass
of each step over all of them, the others one by one, with the same results and reasons.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from device_agent import codec, limits, reasons
from device_agent.codec import CodecError

F16_TABLE = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
"""float16 code -> float32 value, for every code."""
TABLE_FROM = 1024
"""Values from which the table is faster than numpy's conversion (measured on x86-64)."""
_steps = np.arange(0, dtype=np.int64)


def _arange(k: int) -> np.ndarray:
    """0..k-1 (int64), a read-only view of a cached array."""
    global _steps
    if len(_steps) < k:
        _steps = np.arange(max(k, 2 * len(_steps)), dtype=np.int64)
        _steps.flags.writeable = False
    return _steps[:k]


def _crc_ok(buf: bytes, h: codec.Header) -> bool:
    view = memoryview(buf)  # no copy of the body
    crc = zlib.crc32(view[: codec.CRC_OFFSET])
    return zlib.crc32(view[codec.HEADER_SIZE :], crc) == h.crc


def decode_header(buf: bytes, max_size: int = limits.MAX_PAYLOAD) -> codec.Header:
    """codec.decode_header's checks, with zlib's CRC-32."""
    return codec.decode_header(buf, max_size, _crc_ok)


def _varint_indices(section: np.ndarray, h: codec.Header) -> np.ndarray:
    if len(section) == h.k and (h.k == 0 or int(section.max()) < 128):
        idx = section.astype(np.int64)  # k one-byte gaps: idx_j = Σ gaps + j
        np.cumsum(idx, out=idx)  # (a cumsum that casts as it goes is many times slower)
        idx += _arange(h.k)
        if h.k and idx[-1] >= h.n:
            raise CodecError(reasons.BAD_INDICES, "index %d >= n=%d" % (idx[-1], h.n))
        return idx
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
    return _decode_body(buf, decode_header(buf, max_size))


def _decode_body(buf: bytes, h: codec.Header) -> tuple[codec.Header, np.ndarray, np.ndarray]:
    """`decode` after the header's checks."""
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
    if h.value_enc == codec.VALUE_F16 and h.k >= TABLE_FROM:
        return F16_TABLE.take(np.frombuffer(buf, dtype="<u2", count=h.k, offset=pos))
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


Decoded = tuple[codec.Header, np.ndarray, np.ndarray]
GROUP_ENTRIES = 1 << 15
"""Entries decoded together at most (a chunk's arrays, ~0.5 MB, stay in the CPU's cache)."""


def decode_many(payloads: list[bytes], max_size: int = limits.MAX_PAYLOAD) -> list:
    """`decode` of each payload, in order: its (header, indices, values) or the CodecError it
    raises. DELTA payloads with one-byte VARINT gaps and float16 values are decoded together:
    one cumulative sum, one table lookup and one finiteness check over their concatenated
    sections; each result owns its arrays (a kept update never holds a batch in memory)."""
    out: list[Decoded | CodecError | None] = [None] * len(payloads)
    group: list[tuple[int, codec.Header]] = []
    for i, buf in enumerate(payloads):
        try:
            h = decode_header(buf, max_size)
            if (
                h.kind == codec.KIND_DELTA
                and h.index_enc == codec.INDEX_VARINT
                and h.value_enc == codec.VALUE_F16
                and h.k > 0
                and h.body_len == 3 * h.k
            ):
                group.append((i, h))
            else:
                out[i] = _decode_body(buf, h)
        except CodecError as exc:
            out[i] = exc
    chunk: list[tuple[int, codec.Header]] = []
    entries = 0
    for item in group:  # chunks of about GROUP_ENTRIES entries: their arrays stay in cache
        chunk.append(item)
        entries += item[1].k
        if entries >= GROUP_ENTRIES:
            _decode_group(payloads, chunk, out)
            chunk, entries = [], 0
    if chunk:
        _decode_group(payloads, chunk, out)
    return out


def _decode_group(payloads: list[bytes], group: list[tuple[int, codec.Header]], out: list) -> None:
    """Decode payloads of k one-byte VARINT gaps and k float16 values together into `out`."""
    ks = np.array([h.k for _, h in group], dtype=np.int64)
    ends = np.cumsum(ks)
    starts = ends - ks
    index_sections, value_sections = [], []
    for i, h in group:
        view = memoryview(payloads[i])
        index_sections.append(view[codec.HEADER_SIZE : codec.HEADER_SIZE + h.k])
        value_sections.append(view[codec.HEADER_SIZE + h.k :])
    gaps = np.frombuffer(b"".join(index_sections), dtype=np.uint8)
    codes = np.frombuffer(b"".join(value_sections), dtype="<u2")
    multi = np.zeros(len(group), dtype=bool)  # a gap byte >= 128: not one byte per index
    long_gaps = np.flatnonzero(gaps >= 128)
    if len(long_gaps):
        multi[np.searchsorted(ends, long_gaps, side="right")] = True
    idx = gaps.astype(np.int64)  # over the chunk: Σ gaps + j; a payload's own starts at its s
    np.cumsum(idx, out=idx)
    idx += _arange(len(gaps))
    offsets = (idx[starts] - gaps[starts]).tolist()  # what its first index has from before it
    values = F16_TABLE.take(codes)
    bad_at = np.flatnonzero(~np.isfinite(values))
    segment, first = np.unique(np.searchsorted(ends, bad_at, side="right"), return_index=True)
    first_bad = dict(zip(segment.tolist(), bad_at[first].tolist(), strict=True))  # 1st per payload
    for g, (i, h) in enumerate(group):
        s, e = int(starts[g]), int(ends[g])
        if multi[g]:
            try:
                out[i] = _decode_body(payloads[i], h)
            except CodecError as exc:
                out[i] = exc
        elif idx[e - 1] - offsets[g] >= h.n:
            last = idx[e - 1] - offsets[g]
            out[i] = CodecError(reasons.BAD_INDICES, "index %d >= n=%d" % (last, h.n))
        elif g in first_bad:
            out[i] = CodecError(
                reasons.BAD_VALUES, "non-finite value at entry %d" % (first_bad[g] - s)
            )
        else:  # new arrays: a kept update holds no batch
            out[i] = (h, idx[s:e] - offsets[g], values[s:e].copy())
