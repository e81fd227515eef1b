"""CRC-32 (IEEE 802.3, the zlib polynomial) in pure Python, so every port can check payloads."""

from array import array

_TABLE = None


def _table():
    global _TABLE
    if _TABLE is None:
        table = array("I", bytes(1024))
        for n in range(256):
            c = n
            for _ in range(8):
                c = (0xEDB88320 ^ (c >> 1)) if c & 1 else (c >> 1)
            table[n] = c
        _TABLE = table
    return _TABLE


def crc32(data, crc=0, start=0, end=None):
    """CRC-32 of data[start:end], continuing from `crc`; equals zlib.crc32 on the same bytes."""
    table = _table()
    if end is None:
        end = len(data)
    c = crc ^ 0xFFFFFFFF
    for i in range(start, end):
        c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
