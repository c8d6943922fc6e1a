# HMAC-SHA256 (RFC 2104) on top of hashlib.sha256: MicroPython has no hmac module.
# Keys are the meter's 32-byte command key; nothing here prints or keeps them.
import hashlib

from micropython import const

_BLOCK = const(64)


def hmac_sha256(key, msg, prefix=b""):
    """HMAC-SHA256 of prefix || msg (prefix separates domains, e.g. acks from commands)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    pad = bytearray(_BLOCK)
    for i in range(len(key)):
        pad[i] = key[i] ^ 0x36
    for i in range(len(key), _BLOCK):
        pad[i] = 0x36
    inner = hashlib.sha256(pad)
    if prefix:
        inner.update(prefix)
    inner.update(msg)
    digest = inner.digest()
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(pad)
    outer.update(digest)
    return outer.digest()


def equal(a, b):
    """Constant-time comparison: the time taken does not depend on where a and b differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
