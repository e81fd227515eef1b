"""What a sleeping device keeps in flash between training wakes, written atomically.

Deep sleep loses the heap; a device that trains in asynchronous sessions (docs/protocol.md,
"Asynchronous sessions") keeps in one file:
- the model it holds, the MODEL payload as received (its version is in its header; a keyed
  device's SHA-256 of it is recomputed on read);
- the error-feedback residual (float32) and the round that last updated it;
- the rollback floor: the newest verified (epoch, version, round) of a keyed device;
- the last model version it trained on, and how far it consumed its sensor ring;
- the update not acknowledged yet (the message as published, tag included) and its version:
  `load` leaves it in flash (a `Kept`, read only when it is re-sent), so a dense update of a
  large model never takes the heap a training wake needs;
- counters for its telemetry: training wakes, and the wakes already reported.

The file, little-endian:

    0    header  struct HEADER ("<2sBB13I", 56 bytes): magic "TS", format 1, flags (FLAG_*),
                 epoch, version, round (rollback floor), last trained version, residual round,
                 update version, ring samples consumed, training wakes, wakes reported, sensor
                 wakes reported, model length, residual length (floats), update length
    56   model   the MODEL payload (checked by its own CRC-32 and values: validate.check_model)
    ..   residual  4 bytes a float32
    ..   update  the unacknowledged update message
    ..   CRC-32 of the header, the residual and the update (u32)

`encode`/`decode` are pure (bytes in, bytes out); `save` writes the same bytes to a temporary
file and renames it over the old one, so a reboot in between leaves the old or the new file,
never a torn one (on a FAT volume MicroPython's rename removes the old file first: `load` then
takes the complete temporary file). A file that is missing, torn or corrupted reads as a fresh
device, with the reason (device_agent.reasons) returned for the log.
"""

import os
import struct

from device_agent import codec, reasons, validate
from device_agent.auth import TAG_SIZE
from device_agent.checksum import crc32

MAGIC = b"TS"
FORMAT = 1
HEADER = "<2sBB13I"
HEADER_SIZE = struct.calcsize(HEADER)
CRC_SIZE = 4

FLAG_NEWEST = 1
FLAG_TRAINED = 2
FLAG_RESIDUAL_ROUND = 4
FLAG_UPDATE = 8

TMP_SUFFIX = ".tmp"
CHUNK = 256
"""Bytes a time when a kept update is checked or copied from flash."""


class Kept:
    """The unacknowledged update left in the state file: where it lies (len() is its length;
    read() gives its bytes)."""

    def __init__(self, path, offset, length):
        self.path = path
        self.offset = offset
        self.length = length

    def __len__(self):
        return self.length

    def chunks(self):
        """Its bytes, CHUNK at a time."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.length
            while left > 0:
                part = f.read(min(CHUNK, left))
                if not part:
                    raise OSError("kept update truncated")
                left -= len(part)
                yield part

    def read(self):
        """The update's bytes (into the heap: the wake re-sends them)."""
        out = bytearray(self.length)
        pos = 0
        for part in self.chunks():
            out[pos : pos + len(part)] = part
            pos += len(part)
        return bytes(out)


def update_bytes(st):
    """The unacknowledged update as bytes (read from flash when it was kept there), or None; the
    state then holds the bytes."""
    if isinstance(st.update, Kept):
        st.update = st.update.read()
    return st.update


class State:
    """A device's flash state; a fresh device has every field at its default."""

    def __init__(self):
        self.model = None  # the held MODEL payload (bytes) or None
        self.header = None  # its codec header (set by decode)
        self.residual = None  # array('f') or None
        self.residual_round = None
        self.newest = None  # (epoch, version, round) or None
        self.last_trained = None  # the last model version trained on, or None
        self.update = None  # the unacknowledged update message: bytes, a Kept, or None
        self.update_version = 0
        self.ring_seen = 0  # the ring's sample count consumed by the last training
        self.wakes = 0  # training wakes
        self.reported_wakes = 0  # training wakes when telemetry was last sent
        self.reported_sensor = 0  # the ring's sensor wakes when telemetry was last sent


def update_limit(plan):
    """The longest update message kept: a dense float32 DELTA of every parameter, its largest
    index section and a tag."""
    n = plan.n_params
    return codec.HEADER_SIZE + 4 * n + n // 8 + 1 + TAG_SIZE


def _u32(value):
    return 0 if value is None else int(value)


def _header(st, model_len, residual_n, update_len):
    flags = 0
    newest = st.newest or (0, 0, 0)
    if st.newest is not None:
        flags |= FLAG_NEWEST
    if st.last_trained is not None:
        flags |= FLAG_TRAINED
    if st.residual_round is not None:
        flags |= FLAG_RESIDUAL_ROUND
    if st.update is not None:
        flags |= FLAG_UPDATE
    return struct.pack(
        HEADER,
        MAGIC,
        FORMAT,
        flags,
        newest[0],
        newest[1],
        newest[2],
        _u32(st.last_trained),
        _u32(st.residual_round),
        _u32(st.update_version if st.update is not None else 0),
        st.ring_seen,
        st.wakes,
        st.reported_wakes,
        st.reported_sensor,
        model_len,
        residual_n,
        update_len,
    )


def _update_parts(update):
    if update is None:
        return ()
    if isinstance(update, Kept):
        return update.chunks()
    return (update,)


def pieces(st):
    """The file's parts in order: header, model, residual bytes, the update's parts (a kept
    update a chunk at a time, from flash), CRC (all bytes)."""
    model = st.model or b""
    residual = bytes(st.residual) if st.residual is not None else b""
    update_len = len(st.update) if st.update is not None else 0
    head = _header(st, len(model), len(residual) // 4, update_len)
    crc = crc32(residual, crc32(head))
    yield head
    yield model
    yield residual
    for part in _update_parts(st.update):
        crc = crc32(part, crc)
        yield part
    yield struct.pack("<I", crc)


def encode(st):
    """The bytes of the state file (a kept update read from flash)."""
    return b"".join(pieces(st))


class _Bytes:
    """A reader over bytes (the pure decoder and the file loader share _read)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def keep(self, n, crc):
        """The next n bytes (the update) and the CRC continued over them."""
        part = _need(self.read(n), n)
        return part, crc32(part, crc)

    def read(self, n):
        part = self.data[self.pos : self.pos + n]
        self.pos += len(part)
        return part

    def readinto(self, floats):
        """Fill a float32 array (the residual) from the next 4 bytes a value."""
        part = self.data[self.pos : self.pos + 4 * len(floats)]
        for i in range(len(part) // 4):
            floats[i] = struct.unpack_from("<f", part, 4 * i)[0]
        self.pos += len(part)
        return len(part)


def decode(data, plan, max_model_bytes, residual=None):
    """The State in `data` (the file's bytes); raises validate.Refused with a reason.

    `residual`, when its length fits, receives the residual (no second array)."""
    return _read(_Bytes(data), plan, max_model_bytes, residual)


def _need(part, n):
    if len(part) != n:
        raise validate.Refused(reasons.TRUNCATED, "%d of %d bytes" % (len(part), n))
    return part


def _read(f, plan, max_model_bytes, residual):
    head = _need(f.read(HEADER_SIZE), HEADER_SIZE)
    fields = struct.unpack(HEADER, head)
    if fields[0] != MAGIC:
        raise validate.Refused(reasons.BAD_MAGIC)
    if fields[1] != FORMAT:
        raise validate.Refused(reasons.BAD_VERSION, "format %d" % fields[1])
    flags = fields[2]
    model_len, residual_n, update_len = fields[13], fields[14], fields[15]
    if (
        model_len > validate.model_limit(plan, max_model_bytes)
        or residual_n not in (0, plan.n_global, plan.n_params)
        or update_len > update_limit(plan)
    ):
        detail = "%d %d %d" % (model_len, residual_n, update_len)
        raise validate.Refused(reasons.BAD_LENGTHS, detail)
    st = State()
    if model_len:
        st.model = _need(f.read(model_len), model_len)
        st.header = validate.check_model(st.model, plan, max_model_bytes)
    crc = crc32(head)
    if residual_n:
        if residual is None or len(residual) != residual_n:
            residual = codec.zeros(residual_n)
        if f.readinto(residual) != 4 * residual_n:
            raise validate.Refused(reasons.TRUNCATED, "residual")
        crc = crc32(bytes(residual), crc)
        st.residual = residual
    if update_len:
        st.update, crc = f.keep(update_len, crc)
    tail = _need(f.read(CRC_SIZE), CRC_SIZE)
    if struct.unpack("<I", tail)[0] != crc or f.read(1):
        raise validate.Refused(reasons.BAD_CHECKSUM)
    if flags & FLAG_NEWEST:
        st.newest = (fields[3], fields[4], fields[5])
    if flags & FLAG_TRAINED:
        st.last_trained = fields[6]
    if flags & FLAG_RESIDUAL_ROUND:
        st.residual_round = fields[7]
    if flags & FLAG_UPDATE:
        st.update_version = fields[8]
    else:
        st.update = None
    st.ring_seen, st.wakes, st.reported_wakes, st.reported_sensor = fields[9:13]
    return st


class _File:
    """A reader over the state file that leaves the update in flash (a Kept), its CRC checked
    a chunk at a time."""

    def __init__(self, f, path):
        self.f = f
        self.path = path

    def read(self, n):
        return self.f.read(n)

    def readinto(self, floats):
        return self.f.readinto(floats)

    def keep(self, n, crc):
        kept = Kept(self.path, self.f.seek(0, 1), n)
        left = n
        while left > 0:
            part = self.f.read(min(CHUNK, left))
            if not part:
                raise validate.Refused(reasons.TRUNCATED, "update")
            crc = crc32(part, crc)
            left -= len(part)
        return kept, crc


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def load(path, plan, max_model_bytes, residual=None):
    """(State, why): the state in `path` (or, when that is missing or bad, a complete
    temporary file left by an interrupted save), why None; else a fresh State and the reason
    the file was not used ("missing", or a reason of device_agent.reasons)."""
    why = "missing"
    for name in (path, path + TMP_SUFFIX):
        if not _exists(name):
            continue
        try:
            with open(name, "rb") as f:
                st = _read(_File(f, name), plan, max_model_bytes, residual)
        except validate.Refused as exc:
            why = exc.reason
            continue
        except OSError:
            why = reasons.STORAGE_ERROR
            continue
        except Exception:  # noqa: BLE001 - whatever a corrupted file raises, start afresh
            why = reasons.INTERNAL_ERROR
            continue
        if name != path:
            os.rename(name, path)
            if isinstance(st.update, Kept):
                st.update.path = path
        elif _exists(path + TMP_SUFFIX):
            os.remove(path + TMP_SUFFIX)  # an unfinished save: the old state stands
        return st, None
    return State(), why


def save(path, st):
    """Write `st` to `path` atomically: a temporary file, then renamed over the old one (a kept
    update is copied from the old file a chunk at a time, and then lies in the new one)."""
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as f:
        for part in pieces(st):
            f.write(part)
    os.rename(tmp, path)
    if isinstance(st.update, Kept):
        st.update = Kept(path, _update_offset(st), st.update.length)


def _update_offset(st):
    model = len(st.model) if st.model is not None else 0
    residual = 4 * len(st.residual) if st.residual is not None else 0
    return HEADER_SIZE + model + residual
