"""Dictionary keys put in bencode's canonical order before ``fastbencode`` decodes a command.

Kamailio's ``rtpengine`` module (5.6, Debian 12) writes a command's keys in the order it adds
them (``sdp``, ``ICE``, ``call-id``, ``received-from``, ``from-tag``, ``command``, ...); rtpengine
reads that, but canonical bencode sorts keys and ``fastbencode`` (like ``bencode2``) refuses
anything else ("dict keys disordered"). This scanner only finds where each value starts and ends
and re-emits every dictionary's (key, value) spans sorted by key; the bytes themselves are copied
unchanged and ``fastbencode`` still decodes and checks all of it (a duplicate key, for one, is
still refused). Anything it cannot delimit is a ``ValueError``.
"""

from __future__ import annotations

MAX_DEPTH = 16  # a proxy's commands nest two or three levels deep


def canonical(data: bytes) -> bytes:
    out, end = _value(data, 0, 0)
    if end != len(data):
        raise ValueError("junk after the dictionary")
    return out


def _string_end(data: bytes, i: int) -> int:
    colon = data.find(b":", i, i + 21)
    if colon < 0 or not data[i:colon].isdigit():
        raise ValueError(f"bad string length at {i}")
    end = colon + 1 + int(data[i:colon])
    if end > len(data):
        raise ValueError("string runs past the end")
    return end


def _value(data: bytes, i: int, depth: int) -> tuple[bytes, int]:
    """The value starting at ``i`` (its dictionaries in canonical order) and where it ends."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    if i >= len(data):
        raise ValueError("truncated")
    c = data[i:i + 1]
    if c == b"i":
        end = data.find(b"e", i)
        if end < 0:
            raise ValueError("unterminated integer")
        return data[i:end + 1], end + 1
    if c.isdigit():
        end = _string_end(data, i)
        return data[i:end], end
    if c not in (b"l", b"d"):
        raise ValueError(f"unknown type {c!r} at {i}")
    items: list[tuple[bytes, bytes]] = []
    j = i + 1
    while j < len(data) and data[j:j + 1] != b"e":
        if c == b"d":
            key_end = _string_end(data, j)
            key = data[j:key_end]
            value, j = _value(data, key_end, depth + 1)
            items.append((key, value))
        else:
            value, j = _value(data, j, depth + 1)
            items.append((b"", value))
    if j >= len(data):
        raise ValueError("unterminated list or dictionary")
    if c == b"d":  # by the key's bytes, as bencode orders them (a key is its length prefix + bytes)
        items.sort(key=lambda kv: kv[0].split(b":", 1)[1])
    return c + b"".join(k + v for k, v in items) + b"e", j + 1
