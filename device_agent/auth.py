"""Per-device message authentication, both ways: HMAC-SHA256 tags under the device's own key.

Uplink, a device appends the 32-byte tag of each update payload (for brokers whose ACLs cannot be
trusted). Downlink, the service appends the tag of each round command it sends a keyed device;
the command names the SHA-256 digest of the model it is for, so the fleet's one retained model
needs no per-device tag (docs/security.md, "The device"). A tag covers the whole payload, header
and kind included, so an update can never pass for a command or the other way round. Keys are
per device and never logged.

MicroPython's hashlib has sha256 but no hmac module, so HMAC (RFC 2104) is built here.
"""

import hashlib

TAG_SIZE = 32
DIGEST_SIZE = 32
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


def same_bytes(a, b):
    """a == b for two byte strings, in a time that does not depend on where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def verify(key, message):
    """The payload of `message` when its trailing tag verifies under `key`, else None."""
    payload, tag = split_signed(message)
    if payload is None or not same_bytes(hmac_sha256(key, payload), tag):
        return None
    return payload


def digest(payload):
    """The SHA-256 digest (32 bytes) of a payload: how a signed command names its model."""
    return hashlib.sha256(payload).digest()
