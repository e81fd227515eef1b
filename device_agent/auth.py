"""Optional per-device message authentication: HMAC-SHA256 over an update payload, appended as a
32-byte tag, for brokers whose ACLs cannot be trusted. Keys are per device and never logged.

MicroPython's hashlib has sha256 but no hmac module, so HMAC (RFC 2104) is built here.
"""

import hashlib

TAG_SIZE = 32
_BLOCK = 64


def hmac_sha256(key, message):
    """HMAC-SHA256 of `message` under `key` (bytes); equals Python's hmac.new(..., sha256)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(message)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def sign(key, payload):
    """payload followed by its tag."""
    return bytes(payload) + hmac_sha256(key, payload)


def split_signed(message):
    """(payload, tag) of a signed message, or (None, None) when it is too short."""
    if len(message) <= TAG_SIZE:
        return None, None
    return message[:-TAG_SIZE], message[-TAG_SIZE:]
