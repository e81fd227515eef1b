# Decodes payloads given as hex lines on stdin and prints one line each: the values or the
# rejection reason (values as the hex of their float32 bits, exact on both). Run under
# micropython and CPython; the outputs must be identical.
import struct
import sys

sys.path.insert(0, ".")
from device_agent import codec  # noqa: E402


def bits(v):
    """The float32 bit pattern of v, in hex."""
    return "%08x" % struct.unpack("<I", struct.pack("<f", v))[0]


def describe(hexline):
    try:
        buf = bytes.fromhex(hexline)
        if len(buf) >= 4 and buf[3] == codec.KIND_COMMAND:
            h, cmd = codec.decode_command(buf)
            return "command %d %s" % (h.round, sorted(cmd))
        h, idx, values = codec.decode(buf)
        return "ok %d %d %s %s" % (h.n, h.k, list(idx), [bits(v) for v in values])
    except codec.CodecError as exc:
        return "rejected " + exc.reason


for line in sys.stdin.read().split():
    print(describe(line))
