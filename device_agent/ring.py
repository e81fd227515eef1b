"""A sleeping device's samples between training wakes: a bounded ring of records in a file.

A sensor wake reads one sample and appends it (`append`), without the radio; a training wake
reads the samples kept since its last training, oldest first (`samples`), and trains on them.
What it consumed is recorded in the device's flash state (device_agent.state, `ring_seen`), so
a training wake never writes this file: one append per sensor wake is all its flash writes.

The file, little-endian: a header (struct HEADER, 20 bytes: magic "TR", format 1, flags 0,
floats a record, capacity, samples appended ever, sensor wakes ever, CRC-32 of the 16 bytes
before it), then `capacity` records of float32: the input x, then the target (one value, the
class index, for a classifier; the output's values for a regression). The next record goes to
slot `appended % capacity`; the ring holds the last min(appended, capacity). A header that does
not fit the model (another record size or capacity) or fails its CRC starts an empty ring; the
reason is kept in `reset` for the log.
"""

import struct

from device_agent import codec, reasons
from device_agent.checksum import crc32

MAGIC = b"TR"
FORMAT = 1
HEADER = "<2sBBHHII"
HEADER_SIZE = struct.calcsize(HEADER) + 4


def record_shape(plan):
    """(inputs, target values) of a record for the model `plan`."""
    classification = plan.loss != "mse"
    return plan.layers[0].size_in(), 1 if classification else plan.output_size


def pack_header(rec_floats, capacity, appended, wakes):
    """The ring file's header, its CRC included."""
    head = struct.pack(HEADER, MAGIC, FORMAT, 0, rec_floats, capacity, appended, wakes)
    return head + struct.pack("<I", crc32(head))


def unpack_header(data, rec_floats, capacity):
    """(appended, wakes) of a header for records of `rec_floats` floats in a ring of `capacity`;
    raises codec.CodecError with a reason when it is not one."""
    if len(data) < HEADER_SIZE:
        raise codec.CodecError(reasons.TRUNCATED)
    magic, fmt, _, floats, cap, appended, wakes = struct.unpack_from(HEADER, data, 0)
    if magic != MAGIC:
        raise codec.CodecError(reasons.BAD_MAGIC)
    if fmt != FORMAT:
        raise codec.CodecError(reasons.BAD_VERSION)
    if struct.unpack_from("<I", data, HEADER_SIZE - 4)[0] != crc32(data, 0, 0, HEADER_SIZE - 4):
        raise codec.CodecError(reasons.BAD_CHECKSUM)
    if floats != rec_floats or cap != capacity:
        raise codec.CodecError(reasons.BAD_LENGTHS, "%d x %d" % (cap, floats))
    return appended, wakes


class Ring:
    """The ring in `path` for the model `plan`, `capacity` records; `reset` is None, or why an
    existing file was not used (a new ring then starts at the next append)."""

    def __init__(self, path, plan, capacity):
        self.path = path
        self.n_x, self.n_y = record_shape(plan)
        self.classification = plan.loss != "mse"
        self.rec_floats = self.n_x + self.n_y
        self.capacity = capacity
        self.appended = 0
        self.wakes = 0
        self.reset = None
        self.fresh = True
        try:
            with open(path, "rb") as f:
                data = f.read(HEADER_SIZE)
        except OSError:
            return
        try:
            self.appended, self.wakes = unpack_header(data, self.rec_floats, capacity)
            self.fresh = False
        except codec.CodecError as exc:
            self.reset = exc.reason

    def _offset(self, seq):
        return HEADER_SIZE + 4 * self.rec_floats * (seq % self.capacity)

    def append(self, x, y):
        """One sensor wake: the sample (x, y) stored (None: the reading failed, only the wake
        is counted) and the header rewritten, the record first."""
        if self.fresh:
            self.appended = 0
            self.wakes = 0
        record = None
        if x is not None:
            record = codec.zeros(self.rec_floats)
            for i in range(self.n_x):
                record[i] = x[i]
            if self.classification:
                record[self.n_x] = y
            else:
                for i in range(self.n_y):
                    record[self.n_x + i] = y[i]
        with open(self.path, "wb" if self.fresh else "r+b") as f:
            if record is not None:
                if self.fresh:
                    f.write(bytes(HEADER_SIZE))
                f.seek(self._offset(self.appended))
                f.write(record)
                self.appended += 1
            self.wakes += 1
            f.seek(0)
            f.write(pack_header(self.rec_floats, self.capacity, self.appended, self.wakes))
        self.fresh = False
        self.reset = None

    def available(self, seen):
        """How many samples arrived since the ring's count was `seen` (the oldest overwritten
        ones left out); a `seen` past the count (a ring started afresh) counts from zero."""
        if seen > self.appended:
            seen = 0
        return min(self.appended - seen, self.capacity)

    def samples(self, seen):
        """An iterator over the samples since `seen`, oldest first (close() it when done)."""
        return RingReader(self, self.appended - self.available(seen))


class RingReader:
    """Yields (x, y) records of a ring from sample number `start`; x (and a regression's y) are
    arrays reused from one sample to the next."""

    def __init__(self, ring, start):
        self.ring = ring
        self.seq = start
        self.x = codec.zeros(ring.n_x)
        self.y = codec.zeros(ring.n_y)
        self.f = open(ring.path, "rb") if start < ring.appended else None

    def __iter__(self):
        return self

    def __next__(self):
        ring = self.ring
        if self.f is None or self.seq >= ring.appended:
            raise StopIteration
        self.f.seek(ring._offset(self.seq))
        if self.f.readinto(self.x) != 4 * ring.n_x or self.f.readinto(self.y) != 4 * ring.n_y:
            raise StopIteration
        self.seq += 1
        if ring.classification:
            return self.x, int(self.y[0])
        return self.x, self.y

    def close(self):
        """Close the file."""
        if self.f is not None:
            self.f.close()
            self.f = None
