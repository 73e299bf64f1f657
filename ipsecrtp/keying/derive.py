"""Per-call key derivation for the pre-keyed strategy (HKDF-SHA256, RFC 5869). Pure: the gateway
core derives the same keys on both gateways without any I/O; ``prekeyed.py`` installs them."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

LABEL = b"ipsecrtp pre-keyed v1"


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand with SHA-256."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


@dataclass(frozen=True)
class DirectionKeys:
    src: str  # gateway sending
    dst: str  # gateway receiving
    spi: int
    enc: bytes = field(repr=False)
    auth: bytes = field(repr=False)


def derive(secret: bytes, call_id: str, generation: int, gw_a: str, gw_b: str) -> tuple[DirectionKeys, ...]:
    """One SA per direction between the two gateways for this call. Both gateways get the same result:
    the inputs are ordered, not "mine/theirs"."""
    salt = hashlib.sha256(LABEL + call_id.encode() + b"|" + str(generation).encode()).digest()
    out = []
    for src, dst in sorted([(gw_a, gw_b), (gw_b, gw_a)]):
        m = hkdf(secret, salt, LABEL + f"|{src}>{dst}".encode(), 4 + 16 + 32)
        spi = 0x10000000 | (int.from_bytes(m[:4], "big") & 0x0FFFFFFF)  # never a reserved SPI (< 256)
        out.append(DirectionKeys(src, dst, spi, m[4:20], m[20:52]))
    return tuple(out)
