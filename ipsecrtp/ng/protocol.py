"""rtpengine's ng control protocol, as Kamailio's and OpenSIPS' ``rtpengine`` modules speak it.

A datagram is ``<cookie> <bencoded dictionary>``; the reply is the same cookie, a space and a
bencoded dictionary (``result``: ``ok``, ``pong`` or ``error`` with ``error-reason``). The codec is
``fastbencode`` (a maintained library), never hand-written (``order.py`` only sorts the keys a proxy
may send unsorted, which fastbencode refuses); this module checks what it decodes and
makes a :class:`~ipsecrtp.gateway.control.ControlRequest` of it. Pure: bytes in, bytes out.

Keys the proxy sends that concern media anchoring (``flags``, ``replace``, ``direction``,
``received-from``, ``ICE``, ``transport-protocol``, ``rtcp-mux``, ``via-branch``, ...) are accepted and
ignored: ipsecrtp keys the media, it does not relay or rewrite it.
"""

from __future__ import annotations

import fastbencode

from ..gateway.control import COMMANDS, LIST_LIMIT, ControlRequest
from .order import canonical

MAX_COOKIE = 64  # rtpengine's cookies are short random tokens; anything longer is not a proxy's
MAX_TAG = 1024  # Call-ID and tags: far beyond any real one, and bounded
MAX_SDP = 65000  # what fits one UDP datagram


class NgError(ValueError):
    """A datagram that is not a valid command. ``cookie`` is None when not even a cookie could be
    read (nothing to reply to: the datagram is dropped), else the reply carries ``str(self)``."""

    def __init__(self, reason: str, cookie: bytes | None = None) -> None:
        super().__init__(reason)
        self.cookie = cookie


def split(data: bytes) -> tuple[bytes, bytes]:
    """The cookie and the bencoded body, or NgError with no cookie."""
    cookie, sep, body = data.partition(b" ")
    if not sep or not cookie or len(cookie) > MAX_COOKIE or not all(0x21 <= c <= 0x7E for c in cookie):
        raise NgError("no cookie (expected '<cookie> <bencoded dictionary>')")
    return cookie, body


def _text(d: dict, key: bytes, cookie: bytes, required: bool, limit: int = MAX_TAG) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise NgError(f"missing {key.decode()}", cookie)
        return ""
    if not isinstance(v, bytes) or len(v) > limit:
        raise NgError(f"{key.decode()} must be a string of at most {limit} bytes", cookie)
    try:
        text = v.decode("utf-8")
    except UnicodeDecodeError:
        raise NgError(f"{key.decode()} is not UTF-8", cookie) from None
    if not text.isprintable():
        raise NgError(f"{key.decode()} holds control characters", cookie)
    return text


REQUIRED = {
    "ping": (), "list": (), "query": (b"call-id",), "delete": (b"call-id",),
    "offer": (b"call-id", b"from-tag", b"sdp"), "answer": (b"call-id", b"from-tag", b"to-tag", b"sdp"),
}


def parse(data: bytes, source: tuple[str, int] | None = None) -> tuple[bytes, ControlRequest]:
    """The cookie and the command of one datagram; NgError (with the cookie, if one was read) if invalid."""
    cookie, body = split(data)
    try:
        d = fastbencode.bdecode(canonical(body))  # Kamailio does not sort its keys (order.py)
    except Exception as exc:  # the codec raises ValueError, TypeError, ... on malformed input
        raise NgError(f"not bencode: {exc}", cookie) from None
    if not isinstance(d, dict):
        raise NgError("not a bencoded dictionary", cookie)
    cmd = d.get(b"command")
    if not isinstance(cmd, bytes):
        raise NgError("missing command", cookie)
    command = cmd.decode("ascii", "replace").lower()
    if command not in COMMANDS:
        raise NgError(f"unknown command {command[:40]!r} (known: {', '.join(COMMANDS)})", cookie)
    need = REQUIRED[command]
    sdp = d.get(b"sdp", b"")
    if b"sdp" in need and (not isinstance(sdp, bytes) or not sdp or len(sdp) > MAX_SDP):
        raise NgError(f"sdp must be a non-empty string of at most {MAX_SDP} bytes", cookie)
    limit = d.get(b"limit", LIST_LIMIT)
    if not isinstance(limit, int) or limit < 0:
        raise NgError("limit must be a whole number", cookie)
    return cookie, ControlRequest(
        command,
        call_id=_text(d, b"call-id", cookie, b"call-id" in need),
        from_tag=_text(d, b"from-tag", cookie, b"from-tag" in need),
        to_tag=_text(d, b"to-tag", cookie, b"to-tag" in need),
        sdp=sdp if b"sdp" in need else b"",
        source=source,
        limit=limit,
    )


def bencodable(value: object) -> object:
    """A reply's value as bencode holds it: strings as UTF-8 bytes, bools as 0/1, floats as decimal
    strings (bencode has no float), None left out."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, dict):
        return {str(k).encode(): bencodable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [bencodable(v) for v in value if v is not None]
    return str(value).encode()


def encode_reply(cookie: bytes, reply: dict) -> bytes:
    return cookie + b" " + fastbencode.bencode(bencodable(reply))


def error_reply(cookie: bytes, reason: str) -> bytes:
    return encode_reply(cookie, {"result": "error", "error-reason": reason})
